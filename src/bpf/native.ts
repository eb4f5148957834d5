// The shape of the native addon (native/*.cc). This file is the contract
// between C++ and TypeScript: the addon validates nothing that TS can
// validate first, and every error it throws is a NativeError.
import bindings from 'bindings';
import { ErrorCodes } from '../errors.js';

/** An error thrown by the addon. */
export interface NativeError extends Error {
  /**
   * Stable code: BPFMESH_E_PERMISSION, BPFMESH_E_VERIFIER, BPFMESH_E_NOT_FOUND,
   * BPFMESH_E_EXISTS, BPFMESH_E_KERNEL_FEATURE, BPFMESH_E_SYSCALL,
   * BPFMESH_E_BAD_ARGUMENT (TypeError for wrong argument types), BPFMESH_E_CLOSED
   * (handle or its object closed), BPFMESH_E_STATE (not loaded / already loaded).
   */
  code: string;
  /** The errno of the failed call (positive), 0 when there is none. */
  errno: number;
  /** The libbpf function or syscall that failed, e.g. "bpf_object__load". */
  syscall: string;
  /** libbpf's output during the call, including the verifier log on a rejected program. */
  verifierLog?: string;
  /** The path the call was about, when there is one. */
  path?: string;
}

export interface ProgramInfo {
  name: string;
  section: string;
  /** enum bpf_prog_type as libbpf names it, e.g. "cgroup_sock_addr" */
  type: string;
  /** enum bpf_attach_type as libbpf names it, e.g. "cgroup_inet4_connect"; "" when the section names none (SEC("sk_skb")) */
  attachType: string;
}

export interface MapInfo {
  name: string;
  /** enum bpf_map_type as libbpf names it, e.g. "lru_hash", "sockhash", "lpm_trie" */
  type: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  /** BPF_F_* map flags. */
  flags: number;
  /** NativeObject.maps() only: where LIBBPF_PIN_BY_NAME pins the map, null for a map that is not pinned. */
  pinPath?: string | null;
  /** Kernel id once loaded or opened from a pin, else 0. */
  id: number;
}

export interface LinkInfo {
  id: number;
  progId: number;
  /** enum bpf_link_type as libbpf names it, e.g. "cgroup", "netns" */
  type: string;
  /** Attach type of the link, libbpf's name, e.g. "cgroup_inet4_connect", "sk_lookup"; "" for link types without one */
  attachType: string;
  /** cgroup id for cgroup links, netns inode for netns links, else 0 */
  targetId: number;
}

export interface NativeProgram {
  readonly name: string;
  readonly fd: number;
  readonly id: number;
  /** Attach to a cgroup v2 directory fd; returns a link (attachment lives while the link or its pin does). */
  attachCgroup(cgroupFd: number): NativeLink;
  /** Attach an sk_lookup program to a network namespace fd. */
  attachNetns(netnsFd: number): NativeLink;
  /** Legacy attach to a sockmap/sockhash: kind "sk_msg_verdict" or "sk_skb_verdict". Lives with the map. */
  attachToMap(mapFd: number, kind: 'sk_msg_verdict' | 'sk_skb_verdict'): void;
  detachFromMap(mapFd: number, kind: 'sk_msg_verdict' | 'sk_skb_verdict'): void;
  /** An iterator program (SEC("iter/sockmap") etc.) run once over the map: attach, read to the end, detach. Returns the bytes it wrote. */
  runMapIter(mapFd: number): number;
}

export interface NativeMap {
  readonly name: string;
  readonly fd: number;
  info(): MapInfo;
  /** Returns the value (per-CPU maps: valueSize rounded up to 8, times possible CPUs) or null if absent. */
  lookup(key: Buffer): Buffer | null;
  /** flags: 0 = BPF_ANY, 1 = BPF_NOEXIST, 2 = BPF_EXIST */
  update(key: Buffer, value: Buffer, flags?: number): void;
  /** Puts a socket into a sockmap/sockhash; value is the socket fd. */
  updateSocket(key: Buffer, socketFd: number, flags?: number): void;
  /** Returns false if the key was absent. */
  delete(key: Buffer): boolean;
  /** Next key after `key` (first key when null); null at the end. */
  nextKey(key: Buffer | null): Buffer | null;
  /**
   * One batch of bpf_map_lookup_batch. Returns null if the kernel or map
   * type has no batch ops (caller falls back to nextKey/lookup).
   */
  lookupBatch(inBatch: Buffer | null, count: number): { keys: Buffer[]; values: Buffer[]; outBatch: Buffer | null } | null;
  pin(path: string): void;
  close(): void;
}

export interface NativeLink {
  readonly fd: number;
  info(): LinkInfo;
  pin(path: string): void;
  /** Atomically swap the program behind the link (BPF_LINK_UPDATE). */
  updateProgram(prog: NativeProgram): void;
  /** Detach the attachment now, even if pinned (bpf_link_detach). */
  detach(): void;
  close(): void;
}

export interface NativeObject {
  /** Size of the .rodata section, 0 when the object has none. */
  rodataSize(): number;
  /** Replace .rodata's initial value; before load(); size must equal rodataSize(). */
  setRodata(bytes: Buffer): void;
  load(): void;
  programs(): ProgramInfo[];
  maps(): MapInfo[];
  program(name: string): NativeProgram;
  map(name: string): NativeMap;
  close(): void;
}

export interface NativeBinding {
  /** Open an ELF object. pinRoot: where LIBBPF_PIN_BY_NAME maps are pinned and reused. */
  openObject(path: string, options?: { pinRoot?: string }): NativeObject;
  openPinnedMap(path: string): NativeMap;
  openPinnedLink(path: string): NativeLink;
  /** "prog" | "map" | "link" for a bpffs pin, from the pin's fdinfo. */
  pinnedKind(path: string): 'prog' | 'map' | 'link';
  /** Program id behind a pinned program (or a pinned link's program). */
  pinnedProgramId(path: string): number;
  unpin(path: string): void;
  /** getsockopt(SOL_IP|SOL_IPV6, SO_ORIGINAL_DST). null when the socket has none (ENOENT/ENOPROTOOPT). */
  originalDst(fd: number, family: 4 | 6): { address: string; port: number } | null;
  /** SO_NETNS_COOKIE of a socket opened inside the network namespace behind netnsFd. */
  netnsCookie(netnsFd: number): bigint;
  /** Every interface address (IPv4 and IPv6, text form) in the network namespace behind netnsFd. */
  netnsAddresses(netnsFd: number): string[];
  /** SO_COOKIE of a socket. */
  socketCookie(fd: number): bigint;
  /** A connected loopback TCP pair in the caller's netns, blocking: [connecting end, accepted end]. The caller closes both. */
  tcpLoopbackPair(): [number, number];
  /** getsockopt(SO_MEMINFO): the socket's own memory accounting (`ss -m`), in bytes. */
  socketMeminfo(fd: number): SocketMeminfo;
  /** pidfd_getfd: a duplicate of fd `fd` of process `pid`; the caller closes it. Needs ptrace access. */
  takeSocket(pid: number, fd: number): number;
  /** An unconnected non-blocking TCP socket made inside the network namespace behind netnsFd (SO_MARK set when mark != 0). */
  socketInNetns(netnsFd: number, family: 4 | 6, mark: number): number;
  /** A TCP listener bound and listening inside the network namespace behind netnsFd; IPv6 ones are IPv6-only. */
  listenInNetns(netnsFd: number, host: string, port: number, backlog: number, mark: number, reusePort: boolean): number;
  /** Writes a net.* sysctl of the network namespace behind netnsFd. */
  sysctlInNetns(netnsFd: number, name: string, value: string): void;
  /** flock(fd, LOCK_EX), polling LOCK_NB until timeoutMs: true once held, false on timeout. The kernel releases it when the fd closes or the process dies. */
  flockExclusive(fd: number, timeoutMs: number): boolean;
  /** flock(fd, LOCK_UN). */
  flockRelease(fd: number): void;
  numPossibleCpus(): number;
  libbpfVersion(): string;
  /** libbpf_probe_bpf_prog_type: 1 supported, 0 not, throws on probe error. */
  probeProgType(type: string): boolean;
  /** libbpf_probe_bpf_map_type: libbpf's map type name, e.g. "sockhash". */
  probeMapType(type: string): boolean;
  /** libbpf_probe_bpf_helper's method: helper by its BPF_FUNC_ suffix, e.g. "get_netns_cookie" (only the helpers bpf/ calls), in a program of this type and attach type. */
  probeHelper(progType: string, helper: string, attachType?: string): boolean;
  /** The kernel loads a program of this type for this attach type (sk_msg/sk_skb verdicts: and attaches it to a SOCKHASH). Throws on EPERM. */
  probeAttachType(progType: string, attachType: string): boolean;
  /** BPF_PROG_QUERY on a cgroup or netns fd: programs attached for this attach type (effective: also inherited ones). */
  queryPrograms(targetFd: number, attachType: string, effective?: boolean): Array<{ id: number; name: string }>;
  /** A loopback socket in a private SOCKHASH (with a pass-through SK_SKB verdict on request), 4096 bytes written: what FIONREAD reads. */
  sockmapFionread(withSkbVerdict: boolean): { written: number; peeked: number; fionread: number };
  /** Pins a one-element ARRAY map holding a u32 pin layout version at path. */
  pinLayoutMarker(path: string, version: number): void;
  /** A consumer of the pinned BPF ring buffers at paths (bpfmesh observe). */
  openRingReader(paths: string[]): NativeRingReader;
}

/** One consumer of one or more ring buffers; each event is one Buffer (a copy). */
export interface NativeRingReader {
  /** The events in the rings now, at most 4096 (the rest on the next call). */
  consume(): Buffer[];
  /** Calls onEvents on Node's loop whenever the kernel signals data (uv_poll on libbpf's epoll fd); keeps the loop alive until stop() or close(). */
  start(onEvents: (events: Buffer[]) => void): void;
  stop(): void;
  close(): void;
}

export interface SocketMeminfo {
  rmemAlloc: number;
  rcvbuf: number;
  wmemAlloc: number;
  sndbuf: number;
  fwdAlloc: number;
  wmemQueued: number;
  optmem: number;
  backlog: number;
  drops: number;
}

let cached: NativeBinding | undefined;

/** The addon, loaded once. */
export function native(): NativeBinding {
  if (cached === undefined) {
    try {
      cached = bindings('bpfmesh') as NativeBinding;
    } catch (err) {
      const e = new Error(
        `the native addon is not built (${(err as Error).message.split('\n')[0]}); run "npm install" (needs clang, libbpf-dev, pkg-config)`,
      ) as NativeError;
      e.code = ErrorCodes.ADDON_MISSING;
      e.errno = 0;
      e.syscall = 'dlopen';
      throw e;
    }
  }
  return cached;
}
