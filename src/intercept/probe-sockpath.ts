// Start-up probe of the same-host socket path: can this kernel bound it?
//
// mesh_sk_msg bounds a redirect by the bytes the peer socket holds, its
// sk_rmem_alloc. Kernels count redirected bytes there only since commits
// 54f89b3178d5 and d888b7af7c14 (6.13; 6.12.8, 6.1.123); before, a redirect
// is invisible to the bound and a reader that stops lets the writer queue
// up to tcp_mem. So rather than trusting a version string, the probe does
// what the path does: it redirects PROBE_BYTES between two loopback sockets
// in a scratch SOCKMAP (bpf/probe.bpf.c) and reads the reader's own
// accounting (SO_MEMINFO). Without it the path stays off (the settings row
// gets SOCKPATH_REFUSED instead of SOCKPATH; counted per connection as
// sockpath_refused, shown by `bpfmesh inspect`).
import { closeSync, writeSync } from 'node:fs';
import { bpfObjectPath } from '../config/paths.js';
import { native, type NativeObject } from '../bpf/native.js';
import * as c from '../bpf/codecs.js';

export interface SockpathProbe {
  /** The kernel counts redirected bytes in the receiver's sk_rmem_alloc: the path can be bounded. */
  bounded: boolean;
  /** Why not, when not bounded; what was seen, when bounded. */
  detail: string;
  redirectedBytes: number;
  receiverRmemAlloc: number;
}

const PROBE_BYTES = 64 * 1024;

function u64At(obj: NativeObject, map: string, slot: number): number {
  const key = Buffer.alloc(4);
  key.writeUInt32LE(slot);
  const v = obj.map(map).lookup(key);
  return v === null ? 0 : Number(v.readBigUInt64LE(0));
}

/** Runs the probe in the caller's network namespace (loopback only). Needs CAP_BPF + CAP_NET_ADMIN. */
export function probeSockpath(): SockpathProbe {
  const refused = (detail: string, redirectedBytes = 0, receiverRmemAlloc = 0): SockpathProbe => ({ bounded: false, detail, redirectedBytes, receiverRmemAlloc });
  let obj: NativeObject;
  try {
    obj = native().openObject(bpfObjectPath('probe'));
    obj.load();
  } catch (err) {
    return refused(`the probe program did not load: ${(err as Error).message}`);
  }
  const fds: number[] = [];
  try {
    const socks = obj.map('probe_socks');
    obj.program('probe_sk_msg').attachToMap(socks.fd, 'sk_msg_verdict');
    fds.push(...native().tcpLoopbackPair());
    fds.forEach((fd, slot) => {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(slot);
      socks.updateSocket(key, fd);
    });
    const data = Buffer.alloc(PROBE_BYTES, 0x5a);
    for (let off = 0; off < data.length; ) off += writeSync(fds[0]!, data, off);
    const redirectedBytes = u64At(obj, 'probe_stats', 1);
    const receiverRmemAlloc = native().socketMeminfo(fds[1]!).rmemAlloc;
    if (redirectedBytes < PROBE_BYTES) return refused(`only ${redirectedBytes} of ${PROBE_BYTES} bytes took the sk_msg redirect`, redirectedBytes, receiverRmemAlloc);
    if (receiverRmemAlloc < PROBE_BYTES) {
      return refused(
        `the receiver's sk_rmem_alloc is ${receiverRmemAlloc} B with ${redirectedBytes} B redirected into it: this kernel lacks commits 54f89b3178d5 and d888b7af7c14 (6.1.123+, 6.12.8+, 6.13+), so the socket path cannot be bounded`,
        redirectedBytes,
        receiverRmemAlloc,
      );
    }
    return { bounded: true, detail: `${redirectedBytes} B redirected, receiver's sk_rmem_alloc ${receiverRmemAlloc} B`, redirectedBytes, receiverRmemAlloc };
  } catch (err) {
    return refused(`the probe failed: ${(err as Error).message}`);
  } finally {
    for (const fd of fds) closeSync(fd);
    obj.close();
  }
}

let cached: SockpathProbe | undefined;

/** The probe, run once per process. */
export function sockpathProbe(): SockpathProbe {
  return (cached ??= probeSockpath());
}

/** A pod's settings row as this kernel allows it: the socket path asked for but not boundable becomes SOCKPATH_REFUSED. */
export function withSockpathProbe(s: c.PodSettings): c.PodSettings {
  if (!(s.flags & c.Flags.SOCKPATH) || sockpathProbe().bounded) return s;
  return { ...s, flags: (s.flags & ~c.Flags.SOCKPATH) | c.Flags.SOCKPATH_REFUSED };
}
