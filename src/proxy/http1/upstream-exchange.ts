// The upstream side of one HTTP/1 exchange, shared by the HTTP/1 forwarder
// (proxy-http1.ts, client speaks HTTP/1) and the l5d-orig-proto downgrade
// (orig-proto.ts Downgrade, client is an HTTP/2 stream from a peer proxy):
// take a pooled connection or dial one, map a connect failure to the
// proxy's answer, read the response head past interim ones, replay a request
// once when a reused connection turns out closed, and hand the connection
// back to the pool or close it. The request and response body bytes move
// through body.ts (BodyPump, writeChunk), which respects backpressure on
// every write. What differs between the two callers (where the request
// comes from, how the response head is written to the client, timers, tap)
// stays with them.
import { ErrorCodes, errorCode } from '../../errors.js';
import { endpointKey, type ConnLabels, type Connector, type Endpoint, type ProxyMetrics } from '../types.js';
import type { BodyPump } from './body.js';
import { parseResponseHead, type HeadReader, type ResponseHead } from './head-parser.js';
import { dialUpstream, type Http1Pool, type UpstreamConn, type UpstreamOwner } from './pool.js';

/** Methods whose request may be sent again when it provably never arrived (RFC 9110 §9.2.2). */
export const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** Where and for whom an upstream connection is dialed. */
export interface UpstreamTarget {
  ep: Endpoint;
  connect: Connector;
  metrics: ProxyMetrics;
  /** The labels the connection is counted under (tcpOpen/tcpClose, peer dst). */
  labels: ConnLabels;
}

/** What the exchange's owner hears about the connection it asked for. */
export interface UpstreamWaiter extends UpstreamOwner {
  /** Where to dial (asked only when no pooled connection fits). */
  upstreamTarget(): UpstreamTarget;
  /** False once the exchange was given up (client gone): a connection that comes later is closed. */
  wantsUpstream(): boolean;
  /** The connection to send the request on; `reused`: it came from the pool. */
  attach(up: UpstreamConn, reused: boolean): void;
  /** Connecting failed; `f` is the proxy's answer. */
  connectFailed(f: ConnectFailure, err: unknown): void;
}

/** A pooled keep-alive connection to the target if there is one, else a new one. */
export function openUpstream(pool: Http1Pool, ep: Endpoint, w: UpstreamWaiter): void {
  const up = pool.acquire(endpointKey(ep, 'http1'), w);
  if (up !== undefined) w.attach(up, true);
  else dialFor(w);
}

/** A new connection to the target (also for a replay: a pooled one might be stale too). */
export function dialFor(w: UpstreamWaiter): void {
  const t = w.upstreamTarget();
  dialUpstream(t.ep, t.connect, t.metrics, t.labels).then(
    (up) => {
      if (!w.wantsUpstream()) return up.destroy();
      up.owner = w;
      w.attach(up, false);
    },
    (err: unknown) => {
      if (w.wantsUpstream()) w.connectFailed(connectFailure(err), err);
    },
  );
}

/** The proxy's answer to a failed connect: 504 when it timed out, else 502. */
export interface ConnectFailure {
  status: 502 | 504;
  /** The l5d-proxy-error kind (metrics label). */
  error: 'connect_timeout' | 'connect_error';
  message: string;
}

const errMessage = (e: unknown): string => (e instanceof Error ? e.message : String(e));

export function connectFailure(err: unknown): ConnectFailure {
  const code = errorCode(err);
  if (code === ErrorCodes.CONNECT_TIMEOUT || code === 'ETIMEDOUT') return { status: 504, error: 'connect_timeout', message: `connect timed out: ${errMessage(err)}` };
  return { status: 502, error: 'connect_error', message: `connect error: ${errMessage(err)}` };
}

/**
 * Feeds `chunk` to the response head reader. Interim heads (1xx but 101)
 * go to `onInterim` and are skipped; returns the final head (2xx-5xx, or a
 * 101; the bytes after it are reader.rest), or null while it is incomplete. Throws
 * BPFMESH_E_HTTP_MALFORMED (or HEADERS_TOO_LARGE) on a bad head: a 502.
 */
export function readResponseHead(
  reader: HeadReader,
  chunk: Buffer,
  headRequest: boolean,
  onInterim: (head: ResponseHead) => void,
): ResponseHead | null {
  for (;;) {
    if (!reader.push(chunk)) return null;
    const head = parseResponseHead(reader.head, headRequest);
    if (head.statusCode >= 200 || head.statusCode === 101) return head;
    const rest = reader.rest;
    onInterim(head);
    reader.reset();
    if (rest.length === 0) return null;
    chunk = rest;
  }
}

/**
 * Response body bytes read from `up` into the response's pump (null once
 * the body is complete); true when they complete it. Bytes after the body's
 * end put the connection's framing off: it is marked dead, never reused.
 * Throws on a malformed chunked body (the caller cuts the client off).
 */
export function feedResponseBody(up: UpstreamConn, pump: BodyPump | null, chunk: Buffer): boolean {
  if (pump === null || pump.done) {
    up.dead = true;
    return false;
  }
  const used = pump.push(chunk);
  if (!pump.done) return false;
  if (used < chunk.length) up.dead = true;
  return true;
}

/**
 * Whether a request whose reused (pooled) connection closed before any
 * response byte may go once more on a new connection: the server closed an
 * idle connection as we picked it, so the request never got there. Only a
 * bodiless idempotent request, and only once.
 */
export function mayReplay(reused: boolean, gotResponseBytes: boolean, retried: boolean, bodiless: boolean, method: string): boolean {
  return reused && !gotResponseBytes && !retried && bodiless && IDEMPOTENT.has(method);
}

/** The exchange ended cleanly: a keep-alive connection goes back to the pool, any other is closed. */
export function settleUpstream(pool: Http1Pool, up: UpstreamConn, keepAlive: boolean): void {
  if (keepAlive) pool.release(up);
  else dropUpstream(up);
}

/** Close a connection whose state is unknown (mid-exchange, or not reusable): never pooled. */
export function dropUpstream(up: UpstreamConn | null): void {
  if (up === null) return;
  up.owner = null;
  up.destroy();
}
