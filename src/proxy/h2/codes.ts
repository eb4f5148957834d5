// The error vocabulary of the HTTP/2 forwarder: which failure becomes which
// proxy-generated status, and which RST_STREAM code crosses to the other leg.
import { constants as h2 } from 'node:http2';
import { ErrorCodes, errorCode } from '../../errors.js';

/** Codes other layers raise and this one maps to a status (from the registry, src/errors.ts). */
export const H2ErrorCodes = {
  /** Route: no endpoint may take the request (load shed, NoEndpoints exists=true). */
  UNAVAILABLE: ErrorCodes.UNAVAILABLE,
  /** Route: the balancer stayed empty past the fail-fast timeout. */
  FAILFAST: ErrorCodes.FAILFAST,
  /** Connector: the upstream refused or reset the TCP connection. */
  CONNECT: ErrorCodes.CONNECT,
  /** Connector, or the HTTP/2 handshake with the upstream, took too long. */
  CONNECT_TIMEOUT: ErrorCodes.CONNECT_TIMEOUT,
} as const;

export type ProxyStatus = 502 | 503 | 504 | 403 | 404;

/** Linkerd's error responses: load shed 503, fail-fast and timeouts 504, connect errors 502. */
export function statusFor(err: unknown): ProxyStatus {
  switch (errorCode(err)) {
    case H2ErrorCodes.UNAVAILABLE:
      return 503;
    // Inbound policy (src/policy/): not authorized; no route of the server matches.
    case ErrorCodes.FORBIDDEN:
      return 403;
    case ErrorCodes.ROUTE_NOT_FOUND:
      return 404;
    case H2ErrorCodes.FAILFAST:
    case H2ErrorCodes.CONNECT_TIMEOUT:
      return 504;
    default:
      return 502;
  }
}

/** The gRPC status of a proxy-generated error: PERMISSION_DENIED (7) for 403, NOT_FOUND (5) for 404, else UNAVAILABLE (14). */
export function grpcStatusFor(status: ProxyStatus | 400): number {
  return status === 403 ? 7 : status === 404 ? 5 : 14;
}

/** The `error` metric label of a proxy-generated response. */
export function errorKind(status: ProxyStatus | 400): string {
  if (status === 400) return 'bad_request';
  if (status === 403) return 'forbidden';
  if (status === 404) return 'route_not_found';
  return status === 503 ? 'unavailable' : status === 504 ? 'timeout' : 'bad_gateway';
}

// RFC 9113 §7, indexed by code.
const NAMES = [
  'no_error', 'protocol_error', 'internal_error', 'flow_control_error', 'settings_timeout', 'stream_closed', 'frame_size_error',
  'refused_stream', 'cancel', 'compression_error', 'connect_error', 'enhance_your_calm', 'inadequate_security', 'http_1_1_required',
];

/** "cancel", "internal_error", ... for logs and the `error` label. */
export function resetName(code: number | undefined): string {
  return NAMES[code ?? 0] ?? `code_${code}`;
}

/**
 * An upstream reset, as the client should see it. Codes that tell the client
 * something it can act on pass through (REFUSED_STREAM: nothing was
 * processed, retry; CANCEL; ENHANCE_YOUR_CALM: back off). A protocol or
 * flow-control error between the proxy and the upstream is not the client's
 * fault, so it becomes INTERNAL_ERROR.
 */
export function upstreamResetToClient(code: number): number {
  switch (code) {
    case h2.NGHTTP2_REFUSED_STREAM:
    case h2.NGHTTP2_CANCEL:
    case h2.NGHTTP2_ENHANCE_YOUR_CALM:
      return code;
    default:
      return h2.NGHTTP2_INTERNAL_ERROR;
  }
}

/** Codes that, before any response, are better passed on than turned into a 502. */
export function passBeforeResponse(code: number): boolean {
  return code === h2.NGHTTP2_REFUSED_STREAM || code === h2.NGHTTP2_CANCEL || code === h2.NGHTTP2_ENHANCE_YOUR_CALM;
}
