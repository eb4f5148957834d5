// What the HTTP layers call, and only when `point.hub.active`: the request
// as the tap hub sees it, from what those layers already hold (the
// connection's labels, the routed endpoint, the request head).
import type { IncomingHttpHeaders } from 'node:http2';
import type { Writable } from 'node:stream';
import type { RequestHead } from '../http1/head-parser.js';
import type { Addr, ConnLabels, Endpoint } from '../types.js';
import type { TapExchange, TapHub, TapRequest } from './hub.js';

/** Per client connection: the hub, and the addresses the events name. */
export interface TapPoint {
  hub: TapHub;
  /** The client's address (peer of the accepted connection). */
  source: Addr | undefined;
  /** The original destination (inbound: the pod's own address and port). */
  target: Addr;
}

const pathOf = (target: string): string => {
  let p = target;
  if (!p.startsWith('/')) {
    // absolute-form (a proxy request): the path after the authority
    const scheme = p.indexOf('://');
    const slash = scheme < 0 ? -1 : p.indexOf('/', scheme + 3);
    p = slash < 0 ? (p === '*' ? '*' : '/') : p.slice(slash);
  }
  const q = p.indexOf('?');
  return q < 0 ? p : p.slice(0, q);
};

function metas(point: TapPoint, ep: Endpoint, labels: ConnLabels): Pick<TapRequest, 'direction' | 'destination' | 'destinationLabels' | 'sourceMeta' | 'destinationMeta'> {
  const tls = labels.tls === 'true' ? 'true' : (labels.no_tls_reason ?? labels.tls);
  if (labels.direction === 'inbound') {
    return {
      direction: 'inbound',
      destination: point.target,
      destinationLabels: undefined,
      sourceMeta: tls === 'true' ? { tls, client_id: labels.client_id ?? '' } : { tls },
      destinationMeta: undefined,
    };
  }
  return {
    direction: 'outbound',
    destination: ep.addr,
    destinationLabels: ep.labels,
    sourceMeta: { tls: 'loopback' },
    destinationMeta: { ...ep.labels, ...(tls === 'true' ? { tls, server_id: labels.server_id ?? '' } : { tls }) },
  };
}

export function tapHttp1(point: TapPoint, req: RequestHead, ep: Endpoint, labels: ConnLabels): TapExchange | undefined {
  return point.hub.start({
    ...metas(point, ep, labels),
    source: point.source,
    scheme: 'http',
    method: req.method,
    authority: labels.authority ?? req.host ?? '',
    path: pathOf(req.target),
  });
}

export function tapH2(point: TapPoint, headers: IncomingHttpHeaders, ep: Endpoint, labels: ConnLabels): TapExchange | undefined {
  const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);
  return point.hub.start({
    ...metas(point, ep, labels),
    source: point.source,
    scheme: one(headers[':scheme']) ?? 'http',
    method: one(headers[':method']) ?? 'GET',
    authority: labels.authority ?? one(headers[':authority']) ?? one(headers.host) ?? '',
    path: pathOf(one(headers[':path']) ?? '/'),
  });
}

/** Counts what is written to a tapped response stream (HTTP/2: the body's DATA). */
export function countWrites(stream: Writable, x: TapExchange): void {
  const write = stream.write.bind(stream) as (chunk: unknown, ...rest: unknown[]) => boolean;
  stream.write = ((chunk: unknown, ...rest: unknown[]): boolean => {
    if (chunk instanceof Uint8Array) x.bytes += chunk.length;
    else if (typeof chunk === 'string') x.bytes += Buffer.byteLength(chunk);
    return write(chunk, ...rest);
  }) as Writable['write'];
}
