// Byte-for-byte codecs of the structs in bpf/bpfmesh.h. Host-order fields
// use the machine's byte order; fields the header marks "network order" are
// big-endian here. TypedMap checks each codec's size against the map.
import { endianness } from 'node:os';
import { formatIp, type Family } from '../util/ip.js';

export interface Codec<T> {
  readonly name: string;
  readonly size: number;
  encode(value: T): Buffer;
  decode(buf: Buffer): T;
}

const LE = endianness() === 'LE';
const u16 = (b: Buffer, off: number): number => (LE ? b.readUInt16LE(off) : b.readUInt16BE(off));
const u32 = (b: Buffer, off: number): number => (LE ? b.readUInt32LE(off) : b.readUInt32BE(off));
const u64 = (b: Buffer, off: number): bigint => (LE ? b.readBigUInt64LE(off) : b.readBigUInt64BE(off));
const w16 = (b: Buffer, v: number, off: number): void => void (LE ? b.writeUInt16LE(v, off) : b.writeUInt16BE(v, off));
const w32 = (b: Buffer, v: number, off: number): void => void (LE ? b.writeUInt32LE(v, off) : b.writeUInt32BE(v, off));
const w64 = (b: Buffer, v: bigint, off: number): void => void (LE ? b.writeBigUInt64LE(v, off) : b.writeBigUInt64BE(v, off));

export const AF_INET = 2;
export const AF_INET6 = 10;
export const familyToAf = (f: Family): number => (f === 4 ? AF_INET : AF_INET6);
export const afToFamily = (af: number): Family => (af === AF_INET6 ? 6 : 4);

// --- constants mirrored from bpfmesh.h ---
export const ID_UNSET = 0xffffffff;
export const Flags = { FAIL_OPEN: 1, SOCKPATH: 2, INBOUND_ONLY_LISTED: 4, SOCKPATH_REFUSED: 8, NODE_PROXY: 16 } as const;
/** BPFMESH_NODE_PROXY_MARK: SO_MARK of the node proxy's sockets, its exemption in pods enrolled with NODE_PROXY. */
export const NODE_PROXY_MARK = 0x2102;
/** BPFMESH_SOCKPATH_HIGH_DEFAULT, _MIN: the socket path's high mark (bytes queued at the peer). */
export const SOCKPATH_HIGH_DEFAULT = 2 << 20;
export const SOCKPATH_HIGH_MIN = 64 << 10;
export const RuleKind = { INBOUND_IGNORE: 1, OUTBOUND_IGNORE: 2, INBOUND_REDIRECT: 3, LOCAL_ADDR: 4 } as const;
export type RuleKindValue = (typeof RuleKind)[keyof typeof RuleKind];
export const KEY_FIXED_BITS = 32 + 64;

/** enum bpfmesh_counter, in order. */
export const COUNTER_NAMES = [
  'out_redirected',
  'out_pass_proxy',
  'out_pass_loopback',
  'out_pass_port',
  'out_pass_subnet',
  'out_pass_no_proxy',
  'out_record_failed',
  'in_steered',
  'in_pass_port',
  'in_pass_subnet',
  'in_pass_local',
  'in_pass_no_proxy',
  'in_drop_no_proxy',
  'in_drop_assign',
  'orig_dst_answered',
  'orig_dst_missing',
  'sockpath_paired',
  'sockpath_pair_failed',
  'sockpath_redirected',
  'sockpath_passed',
  'bind_denied',
  'listener_registered',
  'sockpath_fallback',
  'sockpath_switchback',
  'sockpath_trimmed',
  'sockpath_trim_failed',
  'sockpath_refused',
] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];

// --- structs ---

export interface PodSettings {
  incomingPort: number;
  outgoingPort: number;
  adminPort: number;
  controlPort: number;
  proxyUid: number;
  proxyGid: number; // ID_UNSET when not set
  flags: number;
  /** Socket path high mark in bytes; 0: SOCKPATH_HIGH_DEFAULT. */
  sockpathHigh: number;
}

export const podSettings: Codec<PodSettings> = {
  name: 'struct pod_settings',
  size: 24,
  encode(v) {
    const b = Buffer.alloc(24);
    w16(b, v.incomingPort, 0);
    w16(b, v.outgoingPort, 2);
    w16(b, v.adminPort, 4);
    w16(b, v.controlPort, 6);
    w32(b, v.proxyUid, 8);
    w32(b, v.proxyGid, 12);
    w32(b, v.flags, 16);
    w32(b, v.sockpathHigh, 20);
    return b;
  },
  decode(b) {
    return {
      incomingPort: u16(b, 0),
      outgoingPort: u16(b, 2),
      adminPort: u16(b, 4),
      controlPort: u16(b, 6),
      proxyUid: u32(b, 8),
      proxyGid: u32(b, 12),
      flags: u32(b, 16),
      sockpathHigh: u32(b, 20),
    };
  },
};

export const netnsCookieKey: Codec<bigint> = {
  name: '__u64 netns cookie',
  size: 8,
  encode(v) {
    const b = Buffer.alloc(8);
    w64(b, v, 0);
    return b;
  },
  decode: (b) => u64(b, 0),
};

export const u8Value: Codec<number> = {
  name: '__u8',
  size: 1,
  encode: (v) => Buffer.from([v]),
  decode: (b) => b[0] ?? 0,
};

export interface PortRuleKey {
  kind: RuleKindValue;
  netnsCookie: bigint;
  port: number;
  /** Leading bits of the port that are fixed, 0..16. */
  portBits: number;
}

export const portRuleKey: Codec<PortRuleKey> = {
  name: 'struct port_rule_key',
  size: 24,
  encode(v) {
    const b = Buffer.alloc(24);
    w32(b, KEY_FIXED_BITS + v.portBits, 0);
    w32(b, v.kind, 4);
    w64(b, v.netnsCookie, 8);
    b.writeUInt16BE(v.port, 16);
    return b;
  },
  decode(b) {
    return {
      portBits: u32(b, 0) - KEY_FIXED_BITS,
      kind: u32(b, 4) as RuleKindValue,
      netnsCookie: u64(b, 8),
      port: b.readUInt16BE(16),
    };
  },
};

export interface SubnetKey {
  kind: RuleKindValue;
  netnsCookie: bigint;
  family: Family;
  addr: Buffer; // 4 or 16 bytes
  prefix: number;
}

function subnetKey(family: Family): Codec<SubnetKey> {
  const addrLen = family === 4 ? 4 : 16;
  const size = family === 4 ? 24 : 32;
  return {
    name: family === 4 ? 'struct subnet4_key' : 'struct subnet6_key',
    size,
    encode(v) {
      const b = Buffer.alloc(size);
      w32(b, KEY_FIXED_BITS + v.prefix, 0);
      w32(b, v.kind, 4);
      w64(b, v.netnsCookie, 8);
      v.addr.copy(b, 16, 0, addrLen);
      return b;
    },
    decode(b) {
      return {
        prefix: u32(b, 0) - KEY_FIXED_BITS,
        kind: u32(b, 4) as RuleKindValue,
        netnsCookie: u64(b, 8),
        family,
        addr: Buffer.from(b.subarray(16, 16 + addrLen)),
      };
    },
  };
}
export const subnet4Key = subnetKey(4);
export const subnet6Key = subnetKey(6);

export interface OrigDst {
  family: Family;
  address: string;
  port: number;
}

export const origDst: Codec<OrigDst> = {
  name: 'struct orig_dst',
  size: 24,
  encode() {
    throw new Error('orig_dst is written by the kernel only');
  },
  decode(b) {
    const family = afToFamily(u32(b, 0));
    return { family, address: formatIp(b.subarray(4, family === 4 ? 8 : 20), family), port: b.readUInt16BE(20) };
  },
};

export interface SockTuple {
  netnsCookie: bigint;
  family: Family;
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
}

export const sockTuple: Codec<SockTuple> = {
  name: 'struct sock_tuple',
  size: 56,
  encode() {
    throw new Error('sock_tuple keys are written by the kernel only');
  },
  decode(b) {
    const family = afToFamily(u32(b, 8));
    const len = family === 4 ? 4 : 16;
    return {
      netnsCookie: u64(b, 0),
      family,
      localPort: u32(b, 12),
      remotePort: u32(b, 16),
      localAddress: formatIp(b.subarray(20, 20 + len), family),
      remoteAddress: formatIp(b.subarray(36, 36 + len), family),
    };
  },
};

export interface ListenerKey {
  netnsCookie: bigint;
  family: Family;
}

export const listenerKey: Codec<ListenerKey> = {
  name: 'struct listener_key',
  size: 16,
  encode(v) {
    const b = Buffer.alloc(16);
    w64(b, v.netnsCookie, 0);
    w32(b, familyToAf(v.family), 8);
    return b;
  },
  decode(b) {
    return { netnsCookie: u64(b, 0), family: afToFamily(u32(b, 8)) };
  },
};

export interface CounterKey {
  netnsCookie: bigint;
  id: number;
}

export const counterKey: Codec<CounterKey> = {
  name: 'struct counter_key',
  size: 16,
  encode(v) {
    const b = Buffer.alloc(16);
    w64(b, v.netnsCookie, 0);
    w32(b, v.id, 8);
    return b;
  },
  decode(b) {
    return { netnsCookie: u64(b, 0), id: u32(b, 8) };
  },
};

/** A __u64 value, or the sum over CPUs of a per-CPU __u64 value. */
export const u64Sum: Codec<bigint> = {
  name: '__u64',
  size: 8,
  encode(v) {
    const b = Buffer.alloc(8);
    w64(b, v, 0);
    return b;
  },
  decode(b) {
    let sum = 0n;
    for (let off = 0; off + 8 <= b.length; off += 8) sum += u64(b, off);
    return sum;
  },
};

/** The rodata of inbound.bpf.o: `const volatile __u64 pod_netns_cookie`. */
export const inboundRodata: Codec<{ podNetnsCookie: bigint }> = {
  name: 'inbound.bpf.o .rodata',
  size: 8,
  encode: (v) => netnsCookieKey.encode(v.podNetnsCookie),
  decode: (b) => ({ podNetnsCookie: u64(b, 0) }),
};

/** The rodata of intercept.bpf.o: `const volatile __u32 bpfmesh_test_knobs` (negative-control tests only). */
export const TestKnobs = { NO_DRAIN_CHECK: 1, NO_TRIM: 2 } as const;
export const interceptRodata: Codec<{ testKnobs: number }> = {
  name: 'intercept.bpf.o .rodata',
  size: 4,
  encode(v) {
    const b = Buffer.alloc(4);
    w32(b, v.testKnobs, 0);
    return b;
  },
  decode: (b) => ({ testKnobs: u32(b, 0) }),
};

// --- bpfmesh observe (bpf/observe.h) ---

/** BPFMESH_OBS_RING_BYTES: the size of each ring buffer mesh_events. */
export const OBS_RING_BYTES = 256 << 10;
/** BPFMESH_OBS_POLL_MS: the reader drains this often; the kernel wakes it only once the ring is a quarter full. */
export const OBS_POLL_MS = 100;

/** struct obs_config: events are emitted while the kernel's CLOCK_MONOTONIC < untilNs (0: off), for netnsCookie's pod only (0: every pod). */
export const obsConfig: Codec<{ untilNs: bigint; netnsCookie: bigint }> = {
  name: 'struct obs_config',
  size: 16,
  encode(v) {
    const b = Buffer.alloc(16);
    w64(b, v.untilNs, 0);
    w64(b, v.netnsCookie, 8);
    return b;
  },
  decode: (b) => ({ untilNs: u64(b, 0), netnsCookie: u64(b, 8) }),
};

/** Key of the one-element ARRAY maps (mesh_obs_cfg, mesh_obs_drops). */
export const u32Key: Codec<number> = {
  name: '__u32',
  size: 4,
  encode(v) {
    const b = Buffer.alloc(4);
    w32(b, v, 0);
    return b;
  },
  decode: (b) => u32(b, 0),
};

export interface ObsEvent {
  tsNs: bigint;
  netnsCookie: bigint;
  /** 0 outside a task (sk_lookup, sockops, sk_msg). */
  cgroupId: bigint;
  /** 0 where the hook has none. */
  sockCookie: bigint;
  /** enum bpfmesh_counter: COUNTER_NAMES[event]. */
  event: number;
  /** null when the event carries no addresses. */
  family: Family | null;
  pid: number;
  /** ID_UNSET outside a task. */
  uid: number;
  srcAddress: string;
  srcPort: number;
  dstAddress: string;
  dstPort: number;
  comm: string;
}

/** struct obs_event, as the ring buffer hands it over. */
export const obsEvent: Codec<ObsEvent> = {
  name: 'struct obs_event',
  size: 104,
  encode() {
    throw new Error('obs_event is written by the kernel only');
  },
  decode(b) {
    const af = u32(b, 36);
    const family = af === AF_INET ? 4 : af === AF_INET6 ? 6 : null;
    const len = family === 6 ? 16 : 4;
    const comm = b.subarray(88, 104);
    const nul = comm.indexOf(0);
    return {
      tsNs: u64(b, 0),
      netnsCookie: u64(b, 8),
      cgroupId: u64(b, 16),
      sockCookie: u64(b, 24),
      event: u32(b, 32),
      family,
      pid: u32(b, 40),
      uid: u32(b, 44),
      srcAddress: family === null ? '' : formatIp(b.subarray(48, 48 + len), family),
      dstAddress: family === null ? '' : formatIp(b.subarray(64, 64 + len), family),
      srcPort: u16(b, 80),
      dstPort: u16(b, 82),
      comm: comm.subarray(0, nul < 0 ? 16 : nul).toString('latin1'),
    };
  },
};
