// bpfmesh observe: what each kernel steering event means, and its printed
// forms (a human line in the spirit of `hubble observe`, a JSON line).
// An event's id is the counter the decision increments (enum
// bpfmesh_counter), so reasons and counters never disagree.
import { COUNTER_NAMES, ID_UNSET, type CounterName, type ObsEvent } from '../bpf/codecs.js';
import { formatAddr } from '../util/addr.js';

export type Direction = 'outbound' | 'inbound' | 'orig-dst' | 'sockpath' | 'bind' | 'listener';

export interface Meaning {
  direction: Direction;
  verdict: string;
  reason: string;
}

/** Every counter a program emits an event for; the others (per message, per skb) never reach the ring. */
export const EVENT_MEANINGS: Partial<Record<CounterName, Meaning>> = {
  out_redirected: { direction: 'outbound', verdict: 'REDIRECTED', reason: 'to-proxy' },
  out_pass_proxy: { direction: 'outbound', verdict: 'PASSED', reason: 'proxy-uid' },
  out_pass_loopback: { direction: 'outbound', verdict: 'PASSED', reason: 'loopback' },
  out_pass_port: { direction: 'outbound', verdict: 'PASSED', reason: 'ignored-port' },
  out_pass_subnet: { direction: 'outbound', verdict: 'PASSED', reason: 'ignored-subnet' },
  out_pass_no_proxy: { direction: 'outbound', verdict: 'PASSED', reason: 'fail-open' },
  out_record_failed: { direction: 'outbound', verdict: 'PASSED', reason: 'record-failed' },
  in_steered: { direction: 'inbound', verdict: 'STEERED', reason: 'to-proxy' },
  in_pass_port: { direction: 'inbound', verdict: 'PASSED', reason: 'ignored-port' },
  in_pass_subnet: { direction: 'inbound', verdict: 'PASSED', reason: 'ignored-subnet' },
  in_pass_local: { direction: 'inbound', verdict: 'PASSED', reason: 'local' },
  in_pass_no_proxy: { direction: 'inbound', verdict: 'PASSED', reason: 'fail-open' },
  in_drop_no_proxy: { direction: 'inbound', verdict: 'REFUSED', reason: 'no-proxy' },
  in_drop_assign: { direction: 'inbound', verdict: 'REFUSED', reason: 'assign-failed' },
  orig_dst_answered: { direction: 'orig-dst', verdict: 'ANSWERED', reason: 'SO_ORIGINAL_DST' },
  orig_dst_missing: { direction: 'orig-dst', verdict: 'MISSING', reason: 'SO_ORIGINAL_DST' },
  sockpath_paired: { direction: 'sockpath', verdict: 'PAIRED', reason: 'sockhash' },
  sockpath_pair_failed: { direction: 'sockpath', verdict: 'TCP', reason: 'pair-failed' },
  sockpath_refused: { direction: 'sockpath', verdict: 'TCP', reason: 'kernel-cannot-bound' },
  sockpath_fallback: { direction: 'sockpath', verdict: 'TCP', reason: 'above-high-mark' },
  sockpath_switchback: { direction: 'sockpath', verdict: 'REDIRECT', reason: 'drained' },
  bind_denied: { direction: 'bind', verdict: 'DENIED', reason: 'proxy-port' },
  listener_registered: { direction: 'listener', verdict: 'REGISTERED', reason: 'inbound-proxy' },
};

export interface Endpoint {
  address: string;
  port: number;
}

/** One event, resolved: the JSON line of `bpfmesh observe --json`. */
export interface ObservedEvent {
  time: string;
  tsNs: string;
  pod: string;
  netnsCookie: string;
  /** The event's id, the name of the counter it goes with. */
  event: string;
  direction: Direction | 'unknown';
  verdict: string;
  reason: string;
  family: 'ipv4' | 'ipv6' | null;
  src: Endpoint | null;
  dst: Endpoint | null;
  /** The calling task, for hooks that run in one (connect, bind, getsockopt); else null. */
  process: { pid: number; uid: number; comm: string; cgroupId: string } | null;
  socketCookie: string | null;
}

const endpoint = (address: string, port: number): Endpoint | null =>
  (address === '' || address === '0.0.0.0' || address === '::') && port === 0 ? null : { address, port };

/**
 * Resolve a decoded event. wallOffsetNs: wall-clock ns minus the kernel's
 * monotonic ns (bpf_ktime_get_ns), measured once at start.
 */
export function resolveEvent(e: ObsEvent, pod: string, wallOffsetNs: bigint): ObservedEvent {
  const name = COUNTER_NAMES[e.event];
  const meaning = name === undefined ? undefined : EVENT_MEANINGS[name];
  const wallMs = Number((e.tsNs + wallOffsetNs) / 1_000_000n);
  return {
    time: new Date(wallMs).toISOString(),
    tsNs: e.tsNs.toString(),
    pod,
    netnsCookie: e.netnsCookie.toString(),
    event: name ?? `unknown(${e.event})`,
    direction: meaning?.direction ?? 'unknown',
    verdict: meaning?.verdict ?? 'UNKNOWN',
    reason: meaning?.reason ?? `event ${e.event}`,
    family: e.family === null ? null : e.family === 4 ? 'ipv4' : 'ipv6',
    src: e.family === null ? null : endpoint(e.srcAddress, e.srcPort),
    dst: e.family === null ? null : endpoint(e.dstAddress, e.dstPort),
    process: e.pid === 0 && e.uid === ID_UNSET ? null : { pid: e.pid, uid: e.uid, comm: e.comm, cgroupId: e.cgroupId.toString() },
    socketCookie: e.sockCookie === 0n ? null : e.sockCookie.toString(),
  };
}

const hostPort = (ep: Endpoint): string => formatAddr({ host: ep.address, port: ep.port });

/** HH:MM:SS.mmm in UTC: the time column. */
const clock = (iso: string): string => iso.slice(11, 23);

/**
 * A human line: time, pod, direction, verdict, reason, src -> dst, and the
 * calling process when there is one. A connect has no source address yet:
 * the process stands in for it.
 */
export function formatEvent(ev: ObservedEvent): string {
  const proc = ev.process === null ? '' : `${ev.process.comm || '?'}[${ev.process.pid}]`;
  const src = ev.src !== null ? hostPort(ev.src) : proc || '-';
  const dst = ev.dst !== null ? hostPort(ev.dst) : '-';
  const who = ev.process === null ? '' : `  (${proc} uid ${ev.process.uid === ID_UNSET ? '?' : ev.process.uid})`;
  return `${clock(ev.time)}  ${ev.pod}  ${ev.direction.padEnd(8)}  ${ev.verdict.padEnd(10)}  ${ev.reason.padEnd(15)}  ${src} -> ${dst}${who}`;
}
