// Tap events as `linkerd viz tap` prints them (one line per event), and as
// one JSON object per line in the shape of its `-o json` output.
import { decodeTcpAddress, type TapEventMsg } from '../../control/protos.js';
import { formatAddr } from '../types.js';

/** gRPC status names as Linkerd's CLI prints them (Go's codes.Code). */
const GRPC_NAMES = [
  'OK',
  'Canceled',
  'Unknown',
  'InvalidArgument',
  'DeadlineExceeded',
  'NotFound',
  'AlreadyExists',
  'PermissionDenied',
  'ResourceExhausted',
  'FailedPrecondition',
  'Aborted',
  'OutOfRange',
  'Unimplemented',
  'Internal',
  'Unavailable',
  'DataLoss',
  'Unauthenticated',
];

type Duration = { seconds: string; nanos: number } | null | undefined;
type Method = { registered?: string; unregistered?: string; type?: string } | null | undefined;

export const micros = (d: Duration): number => (d === null || d === undefined ? 0 : Number(d.seconds) * 1_000_000 + Math.floor(d.nanos / 1000));

const methodName = (m: Method): string => (m?.type === 'unregistered' ? (m.unregistered ?? '') : (m?.registered ?? ''));

function addr(a: TapEventMsg['source']): string {
  const d = decodeTcpAddress(a);
  return d === null ? '<nil>:0' : formatAddr(d);
}

/** The part every line shares: `proxy=in  src=… dst=… tls=…`. */
function flow(ev: TapEventMsg): string {
  const inbound = ev.proxy_direction === 'INBOUND';
  const outbound = ev.proxy_direction === 'OUTBOUND';
  const tls = inbound ? (ev.source_meta?.labels['tls'] ?? '') : outbound ? (ev.destination_meta?.labels['tls'] ?? '') : '';
  return `proxy=${inbound ? 'in ' : outbound ? 'out' : '???'} src=${addr(ev.source)} dst=${addr(ev.destination)} tls=${tls}`;
}

/** One event as `linkerd viz tap` prints it. */
export function formatTapEvent(ev: TapEventMsg): string {
  const h = ev.http;
  const f = flow(ev);
  const idOf = (id: { base: number; stream: string } | null | undefined): string => `${id?.base ?? 0}:${id?.stream ?? 0}`;
  if (h?.event === 'request_init' && h.request_init) {
    const r = h.request_init;
    return `req id=${idOf(r.id)} ${f} :method=${methodName(r.method)} :authority=${r.authority} :path=${r.path}`;
  }
  if (h?.event === 'response_init' && h.response_init) {
    const r = h.response_init;
    return `rsp id=${idOf(r.id)} ${f} :status=${r.http_status} latency=${micros(r.since_request_init)}µs`;
  }
  if (h?.event === 'response_end' && h.response_end) {
    const r = h.response_end;
    const eos = r.eos;
    const tail = `duration=${micros(r.since_response_init)}µs response-length=${r.response_bytes}B`;
    if (eos?.end === 'grpc_status_code') return `end id=${idOf(r.id)} ${f} grpc-status=${GRPC_NAMES[eos.grpc_status_code ?? 0] ?? String(eos.grpc_status_code)} ${tail}`;
    if (eos?.end === 'reset_error_code') return `end id=${idOf(r.id)} ${f} reset-error=${eos.reset_error_code} ${tail}`;
    return `end id=${idOf(r.id)} ${f} ${tail}`;
  }
  return `unknown ${f}`;
}

/** One event as a JSON object (the fields of `linkerd viz tap -o json`), on one line. */
export function tapEventJson(ev: TapEventMsg): Record<string, unknown> {
  const peer = (a: TapEventMsg['source'], meta: TapEventMsg['source_meta']): Record<string, unknown> => {
    const d = decodeTcpAddress(a);
    return { ip: d?.host ?? '', port: d?.port ?? 0, metadata: meta?.labels ?? {} };
  };
  const h = ev.http;
  const id = (x: { base: number; stream: string } | null | undefined): Record<string, number> => ({ base: x?.base ?? 0, stream: Number(x?.stream ?? 0) });
  const out: Record<string, unknown> = {
    source: peer(ev.source, ev.source_meta),
    destination: peer(ev.destination, ev.destination_meta),
    routeMeta: ev.route_meta?.labels ?? {},
    proxyDirection: ev.proxy_direction,
  };
  if (h?.request_init) {
    const r = h.request_init;
    const scheme = r.scheme as Method;
    out['requestInitEvent'] = { id: id(r.id), method: methodName(r.method), scheme: methodName(scheme), authority: r.authority, path: r.path };
  }
  if (h?.response_init) {
    const r = h.response_init;
    out['responseInitEvent'] = { id: id(r.id), sinceRequestInitMicros: micros(r.since_request_init), httpStatus: r.http_status };
  }
  if (h?.response_end) {
    const r = h.response_end;
    out['responseEndEvent'] = {
      id: id(r.id),
      sinceRequestInitMicros: micros(r.since_request_init),
      sinceResponseInitMicros: micros(r.since_response_init),
      responseBytes: Number(r.response_bytes),
      ...(r.eos?.end === 'grpc_status_code' ? { grpcStatusCode: r.eos.grpc_status_code } : {}),
      ...(r.eos?.end === 'reset_error_code' ? { resetErrorCode: r.eos.reset_error_code } : {}),
    };
  }
  return out;
}
