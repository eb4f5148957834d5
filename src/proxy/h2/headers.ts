// Header rules for forwarding HTTP/2: what crosses the proxy, what a
// gRPC status is, and how a response is classified for metrics.
import { sensitiveHeaders, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import type { Classification } from '../types.js';

// Connection-specific fields (RFC 9113 §8.2.2). nghttp2 already rejects a
// request that carries them, and node:http2 throws when asked to send them,
// so dropping them here keeps a misbehaving peer from failing the other leg.
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings']);

type HeaderValue = string | string[] | number | undefined;

// Node's header objects carry the never-index list under a symbol key;
// keep it so HPACK treats those fields the same on the next hop.
type WithSensitive = { [sensitiveHeaders]?: unknown };

function copy(from: IncomingHttpHeaders, keepPseudo: (name: string) => boolean): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  // for-in, not Object.entries: no array per header on a path every stream takes twice
  // (node:http2's header objects have a null prototype and string keys only).
  for (const name in from) {
    const value = (from as Record<string, HeaderValue>)[name];
    if (value === undefined || CONNECTION_SPECIFIC.has(name)) continue;
    if (name.startsWith(':') && !keepPseudo(name)) continue;
    if (name === 'te') {
      // The only TE value allowed in HTTP/2; gRPC servers insist on it.
      if (String(value).toLowerCase().includes('trailers')) out['te'] = 'trailers';
      continue;
    }
    out[name] = value;
  }
  const sensitive = (from as WithSensitive)[sensitiveHeaders];
  if (Array.isArray(sensitive)) (out as WithSensitive)[sensitiveHeaders] = sensitive;
  return out;
}

const REQUEST_PSEUDO = new Set([':method', ':path', ':scheme', ':authority']);

/** Request headers for the upstream: pseudo-headers kept, connection-specific fields dropped. */
export function requestHeaders(h: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out = copy(h, (n) => REQUEST_PSEUDO.has(n));
  // Without :authority node:http2 would invent one from the upstream's
  // address; an HTTP/2 request may name its authority in `host` instead.
  if (out[':authority'] === undefined && typeof h.host === 'string') out[':authority'] = h.host;
  return out;
}

/** Response (and 1xx) headers for the client: `:status` kept. */
export function responseHeaders(h: IncomingHttpHeaders): OutgoingHttpHeaders {
  return copy(h, (n) => n === ':status');
}

/** Trailers carry no pseudo-headers. */
export function trailerHeaders(h: IncomingHttpHeaders): OutgoingHttpHeaders {
  return copy(h, () => false);
}

export function firstValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

export function isGrpc(h: IncomingHttpHeaders): boolean {
  return firstValue(h['content-type'])?.startsWith('application/grpc') ?? false;
}

/** The numeric grpc-status in a header block, if it has a valid one. */
export function grpcStatusOf(h: IncomingHttpHeaders): number | undefined {
  const v = firstValue(h['grpc-status']);
  if (v === undefined || !/^\d{1,2}$/.test(v.trim())) return undefined;
  return Number(v.trim());
}

/** Linkerd's rule: a gRPC status other than OK fails; otherwise a 5xx fails. */
export function classify(statusCode: number, grpcStatus: number | undefined, error: string | undefined): Classification {
  if (error !== undefined) return 'failure';
  if (grpcStatus !== undefined) return grpcStatus === 0 ? 'success' : 'failure';
  return statusCode >= 500 ? 'failure' : 'success';
}

/** A header value made safe to send: one line, printable, bounded. */
export function headerText(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x1f\x7f]+/g, ' ').slice(0, 512);
}

/** gRPC's grpc-message encoding: percent-encode everything outside 0x20-0x7e, and '%'. */
export function grpcMessage(s: string): string {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}
