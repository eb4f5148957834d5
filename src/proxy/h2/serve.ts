// HTTP/2 with prior knowledge (h2c): terminate the client's session, and
// forward each stream on a pooled session to the endpoint the route picks.
// Bodies move with pipe() both ways, so HTTP/2 flow control reaches end to
// end: node:http2 withholds WINDOW_UPDATE for a stream nobody reads, and
// pipe() stops reading when the other leg's write() returns false. What the
// proxy holds per stream and direction is about one window.
import http2, {
  constants as h2,
  type ClientHttp2Stream,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
  type ServerOptions,
} from 'node:http2';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { BpfmeshError, ErrorCodes } from '../../errors.js';
import { asEndpoint, type ConnLabels, type Connector, type Endpoint, type Lease, type ProxyMetrics, type RouteTarget, type Track } from '../types.js';
import { Downgrade, L5D_ORIG_PROTO } from '../orig-proto.js';
import type { Http1Pool } from '../http1/pool.js';
import {
  errorKind,
  passBeforeResponse,
  resetName,
  statusFor,
  grpcStatusFor,
  upstreamResetToClient,
  type ProxyStatus,
} from './codes.js';
import { classify, firstValue, grpcMessage, grpcStatusOf, headerText, isGrpc, requestHeaders, responseHeaders, trailerHeaders } from './headers.js';
import { H2UpstreamPool, type UpstreamStream } from './pool.js';
import { resolveSettings, type H2Log, type H2Settings, type ResolvedH2Settings } from './settings.js';
import { countWrites, tapH2, type TapPoint } from '../tap/hooks.js';
import type { TapExchange } from '../tap/hub.js';

export interface H2Context {
  labels: ConnLabels;
  /** Where the connection registers for drainH2: its proxy's own set (the node proxy runs one proxy per pod). */
  live: Set<H2Connection>;
  /** Opens the TCP (or TLS) connection to an endpoint. */
  connect: Connector;
  /**
   * Picks the endpoint for one request. Throw a BpfmeshError with code
   * BPFMESH_E_UNAVAILABLE for 503, BPFMESH_E_FAILFAST for 504; anything else is a 502.
   */
  route: (headers: IncomingHttpHeaders) => RouteTarget | Promise<RouteTarget>;
  /** The metric labels of a request to `ep` (TLS detail, dst_*); default: the connection's. */
  endpointLabels?: (ep: Endpoint, base: ConnLabels) => ConnLabels;
  /**
   * The balancer's feedback: a lease per routed stream, pending until the
   * response headers (or the proxy's error response, or the stream's end),
   * which also give the latency sample.
   */
  track?: Track;
  /**
   * Inbound: requests that carry l5d-orig-proto (HTTP/1 a peer proxy carried
   * over HTTP/2) go to the app as HTTP/1 on this pool's connections.
   */
  downgrade?: { pool: Http1Pool; responseTimeoutMs?: number };
  metrics: ProxyMetrics;
  log: H2Log;
  settings?: H2Settings;
  /**
   * Upstream sessions to share with other client connections. Without it the
   * connection gets its own pool, closed with it. Share one pool per
   * connector (a pool is keyed by address only).
   */
  pool?: H2UpstreamPool;
  /** Inbound: the verified client identity for l5d-client-id, or null; a client-sent value is always replaced. Undefined: untouched. */
  clientId?: string | null;
  /** A client session without a frame either way for this long gets a GOAWAY, and is closed if it is still open as long again; 0 or undefined: never. */
  idleMs?: number;
  /** Live tap (src/proxy/tap/): streams are reported only while a tapper is connected. */
  tap?: TapPoint;
}

export interface H2Connection {
  readonly session: ServerHttp2Session;
  /** Resolves when the client session has closed and its streams are done. */
  readonly closed: Promise<void>;
  /**
   * Sends GOAWAY (no new streams), lets the streams in flight finish, and
   * resolves when the session has closed. Streams still open after
   * `graceMs` (default settings.shutdownGraceMs) are reset.
   */
  shutdown(graceMs?: number): Promise<void>;
}

interface ConnState {
  readonly ctx: H2Context;
  readonly pool: H2UpstreamPool;
  readonly log: H2Log;
  /** The connection's labels per request authority: one object each, so the metrics' and endpoint labels' per-object caches hit on every stream. */
  readonly byAuthority: Map<string, ConnLabels>;
}

/** Authorities whose labels a connection keeps; a client cycling through more gets fresh objects (correct, only slower). */
const LABELS_PER_CONNECTION = 16;

function labelsWithAuthority(conn: ConnState, authority: string | undefined): ConnLabels {
  const base = conn.ctx.labels;
  if (authority === undefined || base.authority !== undefined) return base;
  let l = conn.byAuthority.get(authority);
  if (l === undefined) {
    l = { ...base, authority };
    if (conn.byAuthority.size < LABELS_PER_CONNECTION) conn.byAuthority.set(authority, l);
  }
  return l;
}

/** Shuts down the HTTP/2 connections of `set` (one proxy's H2Context.live; see H2Connection.shutdown). */
export async function drainH2(set: Set<H2Connection>, graceMs?: number): Promise<void> {
  await Promise.all([...set].map((c) => c.shutdown(graceMs)));
}

/**
 * Serves an HTTP/2 client connection whose first bytes (`buffered`, starting
 * with the connection preface) protocol detection has already read.
 */
function withClientId(h: OutgoingHttpHeaders, clientId: string | null | undefined): OutgoingHttpHeaders {
  if (clientId === undefined) return h;
  // Inbound: only this proxy sets l5d-* fields for the app.
  for (const k of Object.keys(h)) if (k.startsWith('l5d-')) delete h[k];
  if (clientId !== null) h['l5d-client-id'] = clientId;
  return h;
}

export function serveH2(client: Socket, buffered: Buffer, ctx: H2Context): H2Connection {
  const settings = resolveSettings(ctx.settings);
  const pool = ctx.pool ?? new H2UpstreamPool({ log: ctx.log, ...(ctx.settings ? { settings: ctx.settings } : {}) });
  const state: ConnState = { ctx, pool, log: ctx.log, byAuthority: new Map() };

  // node:http2 attaches its own handler only once the session exists; an
  // error in between must not become an uncaught exception.
  client.on('error', (err) => ctx.log.debug({ err }, 'h2 client socket error'));
  // The session reads what is already in the socket's readable buffer
  // before taking the handle over natively, so the replayed bytes go first
  // (h2-forward.test.ts splits the client's first write to check it).
  if (buffered.length > 0) client.unshift(buffered);
  const session = handshake(client, settings);
  session.setLocalWindowSize(settings.connectionWindowBytes);

  session.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) => {
    new Exchange(state, stream, headers, (flags & h2.NGHTTP2_FLAG_END_STREAM) !== 0).start();
  });
  session.on('error', (err) => ctx.log.debug({ err }, 'h2 client session error'));
  session.on('frameError', (type: number, code: number, id: number) => ctx.log.debug({ type, code, id }, 'h2 frame error'));

  const idleMs = ctx.idleMs ?? 0;
  if (idleMs > 0) {
    session.setTimeout(idleMs, () => {
      if (session.closed || session.destroyed) return session.destroy();
      session.close();
    });
  }
  const closed = new Promise<void>((resolve) => session.once('close', resolve));
  const conn: H2Connection = {
    session,
    closed,
    shutdown: async (graceMs = settings.shutdownGraceMs) => {
      if (!session.closed && !session.destroyed) session.close();
      const timer = setTimeout(() => session.destroy(), graceMs);
      await closed;
      clearTimeout(timer);
    },
  };
  ctx.live.add(conn);
  void closed.then(async () => {
    ctx.live.delete(conn);
    if (!client.destroyed) client.destroy();
    if (ctx.pool === undefined) await pool.close();
  });
  return conn;
}

function handshake(client: Socket, s: ResolvedH2Settings): ServerHttp2Session {
  const options: ServerOptions = {
    settings: { initialWindowSize: s.streamWindowBytes, maxConcurrentStreams: s.maxConcurrentStreams, maxHeaderListSize: s.maxHeaderListBytes },
    maxSessionMemory: s.maxSessionMemoryMb,
    maxHeaderListPairs: s.maxHeaderListPairs,
  };
  // performServerHandshake (Node >= 20.12) makes a session without a server;
  // an http2.Server's 'connection' handler would also work for a plain
  // socket, but it destroys a TLS socket whose ALPN is not "h2".
  if (typeof http2.performServerHandshake === 'function') return http2.performServerHandshake(client, options);
  const server = http2.createServer(options);
  let session: ServerHttp2Session | undefined;
  server.once('session', (sess: ServerHttp2Session) => (session = sess));
  server.emit('connection', client);
  if (session === undefined) throw new BpfmeshError(ErrorCodes.STATE, 'node:http2 did not make a session for the connection');
  return session;
}

/**
 * One client stream and the upstream stream it is forwarded on.
 *
 * Two node:http2 behaviours shape this (Node 20):
 * - A stream that receives RST_STREAM(CANCEL) or RST_STREAM(NO_ERROR) still
 *   emits 'end', as if END_STREAM had come. So bodies are piped with
 *   { end: false } and the end is passed on only when `rstCode` (already set
 *   when 'end' fires) says it was a clean one; otherwise a truncated body
 *   would reach the other side as complete.
 * - close(code) on a stream whose writable side is open ends that side
 *   first, which sends END_STREAM before the RST_STREAM: the peer sees a
 *   clean end. So a reset after the response started is destroy(err)
 *   (RST_STREAM INTERNAL_ERROR at once), and the upstream stream is
 *   cancelled through its AbortSignal (RST_STREAM CANCEL at once).
 */
class Exchange {
  private readonly startedAt = performance.now();
  private labels: ConnLabels;
  private readonly grpc: boolean;
  private ep: Endpoint | undefined;
  private lease: Lease | undefined;
  private readonly abort = new AbortController();
  private up: ClientHttp2Stream | undefined;
  private upstream: UpstreamStream | undefined;
  private retried = false;
  private upError: Error | undefined;
  /** Time to the response headers the client got; undefined until then. */
  private latencyMs: number | undefined;
  private statusCode = 0;
  private grpcStatus: number | undefined;
  private error: string | undefined;
  /** The whole response (END_STREAM) came from the upstream, or the proxy generated one. */
  private responseEnded = false;
  /** The whole request (END_STREAM) came from the client. */
  private requestEnded: boolean;
  private reqTrailers: OutgoingHttpHeaders | undefined;
  private resTrailers: OutgoingHttpHeaders | undefined;
  /** The stream as a tapper sees it, while one does. */
  private tapx: TapExchange | undefined;

  constructor(
    private readonly conn: ConnState,
    private readonly down: ServerHttp2Stream,
    private readonly headers: IncomingHttpHeaders,
    private readonly reqEndStream: boolean,
  ) {
    this.requestEnded = reqEndStream;
    const authority = firstValue(headers[':authority']) ?? headers.host;
    this.labels = labelsWithAuthority(conn, authority);
    this.grpc = isGrpc(headers);
  }

  start(): void {
    const { down } = this;
    down.on('error', (err) => this.conn.log.debug({ err, stream: down.id }, 'h2 client stream error'));
    down.on('trailers', (t: IncomingHttpHeaders) => (this.reqTrailers = withClientId(trailerHeaders(t), this.conn.ctx.clientId === undefined ? undefined : null)));
    down.once('end', () => this.onRequestEnd());
    // The client reset the stream while the response was open.
    down.once('aborted', () => this.cancelUpstream());
    down.on('wantTrailers', () => down.sendTrailers(this.resTrailers ?? {}));
    down.once('close', () => this.onClientClose());
    this.connect().catch((err: unknown) => {
      this.conn.log.warn({ err }, 'h2 forwarding failed');
      this.fail(502, err);
    });
  }

  private gone(): boolean {
    return this.down.closed || this.down.destroyed;
  }

  /** Route, count the request under the endpoint's labels, then forward (or downgrade). */
  private async connect(): Promise<void> {
    const { ctx } = this.conn;
    let ep: Endpoint;
    try {
      ep = asEndpoint(await ctx.route(this.headers));
    } catch (err) {
      ctx.metrics.request(this.labels);
      this.fail(statusFor(err), err);
      return;
    }
    this.ep = ep;
    this.lease = ctx.track?.(ep);
    if (ctx.endpointLabels !== undefined) this.labels = ctx.endpointLabels(ep, this.labels);
    ctx.metrics.request(this.labels);
    if (ctx.tap?.hub.active === true) this.tapx = tapH2(ctx.tap, this.headers, ep, this.labels);
    if (this.tapx !== undefined) countWrites(this.down, this.tapx);
    if (this.gone()) return;
    if (ctx.downgrade !== undefined && this.headers[L5D_ORIG_PROTO] !== undefined) return this.downgrade(ep, ctx.downgrade);
    return this.forward(ep);
  }

  private downgrade(ep: Endpoint, { pool, responseTimeoutMs }: { pool: Http1Pool; responseTimeoutMs?: number }): void {
    const { ctx } = this.conn;
    new Downgrade(this.down, this.headers, this.reqEndStream, ep, { pool, connect: ctx.connect, metrics: ctx.metrics, labels: this.labels, clientId: ctx.clientId, log: this.conn.log, ...(responseTimeoutMs !== undefined ? { responseTimeoutMs } : {}) }, {
      responded: (status) => {
        this.latencyMs = performance.now() - this.startedAt;
        this.statusCode = status;
        this.settle(this.latencyMs, false);
        this.tapx?.response(status);
      },
      ended: () => (this.responseEnded = true),
      failed: (status, err) => this.fail(status, err),
      reset: (error) => {
        this.error = error;
        this.resetClient();
      },
    }).start();
  }

  private async forward(to: Endpoint): Promise<void> {
    const { ctx, pool } = this.conn;
    const end = this.reqEndStream;
    let upstream: UpstreamStream | undefined;
    try {
      upstream = await pool.request(
        to,
        ctx.connect,
        withClientId(requestHeaders(this.headers), ctx.clientId),
        { endStream: end, waitForTrailers: !end, signal: this.abort.signal },
        () => this.gone(),
      );
    } catch (err) {
      this.fail(statusFor(err), err);
      return;
    }
    if (upstream === undefined) return;
    this.attach(upstream);
  }

  private attach(upstream: UpstreamStream): void {
    const { down } = this;
    const up = upstream.stream;
    this.up = up;
    this.upstream = upstream;
    up.on('error', (err: Error) => {
      this.upError ??= err;
    });
    // Request trailers arrive before the request's end, so they are known
    // by the time the upstream stream asks for them.
    up.on('wantTrailers', () => up.sendTrailers(this.reqTrailers ?? {}));
    up.on('headers', (h: IncomingHttpHeaders) => {
      const status = Number(h[':status']);
      // 1xx (100-continue, 103 early hints) go on as they come.
      if (status >= 100 && status < 200 && !this.gone() && !down.headersSent) down.additionalHeaders(responseHeaders(h));
    });
    up.once('response', (h: IncomingHttpHeaders, flags: number) => this.onResponse(h, (flags & h2.NGHTTP2_FLAG_END_STREAM) !== 0));
    up.on('trailers', (t: IncomingHttpHeaders) => {
      this.resTrailers = trailerHeaders(t);
      this.grpcStatus = grpcStatusOf(t) ?? this.grpcStatus;
    });
    up.once('end', () => this.onResponseEnd());
    up.once('close', () => this.onUpstreamClose());
    if (!this.reqEndStream) down.pipe(up, { end: false });
  }

  private onRequestEnd(): void {
    // 'end' after a reset is not END_STREAM; the close handler cancels the upstream.
    if ((this.down.rstCode ?? h2.NGHTTP2_NO_ERROR) !== h2.NGHTTP2_NO_ERROR) return;
    this.requestEnded = true;
    const up = this.up;
    if (up !== undefined && !up.destroyed && !up.writableEnded) up.end(); // then 'wantTrailers'
  }

  private onResponse(h: IncomingHttpHeaders, endStream: boolean): void {
    const { down } = this;
    const up = this.up!;
    if (this.gone()) return;
    this.latencyMs = performance.now() - this.startedAt;
    this.settle(this.latencyMs, false);
    this.statusCode = Number(h[':status'] ?? 0);
    // A gRPC "trailers-only" response carries its status in the headers.
    this.grpcStatus = grpcStatusOf(h);
    this.tapx?.response(this.statusCode);
    try {
      down.respond(responseHeaders(h), { endStream, waitForTrailers: !endStream });
    } catch (err) {
      // node:http2 validates what it sends; a header it refuses ends both streams.
      this.conn.log.warn({ err, stream: down.id }, 'h2 response headers rejected');
      this.error = 'bad_response';
      this.cancelUpstream();
      this.resetClient();
      return;
    }
    if (endStream) this.responseEnded = true;
    else up.pipe(down, { end: false });
  }

  private onResponseEnd(): void {
    const up = this.up!;
    if (this.gone() || this.latencyMs === undefined || this.responseEnded) return;
    if ((up.rstCode ?? h2.NGHTTP2_NO_ERROR) !== h2.NGHTTP2_NO_ERROR) return; // a reset: see onUpstreamClose
    this.responseEnded = true;
    if (!this.down.writableEnded) this.down.end(); // then 'wantTrailers'
  }

  private onUpstreamClose(): void {
    const up = this.up!;
    const code = up.rstCode ?? h2.NGHTTP2_NO_ERROR;
    if (this.gone()) return;
    if (this.responseEnded) {
      // The upstream is done with the request too (e.g. it answered early and
      // sent RST_STREAM(NO_ERROR)); the rest of the client's body has nowhere to go.
      if (!this.requestEnded) this.dropRequestBody();
      return;
    }
    if (this.latencyMs === undefined) {
      // Nothing has reached the client yet.
      if (code === h2.NGHTTP2_REFUSED_STREAM && this.reqEndStream && !this.retried) {
        // REFUSED_STREAM (also what streams above a GOAWAY's last id get)
        // means the upstream did not process the request; one without a body
        // can go again, once, on a fresh session.
        this.retried = true;
        this.up = undefined;
        this.forward(this.ep!).catch((err: unknown) => this.fail(502, err));
        return;
      }
      const failure = this.upstream?.failure();
      this.settle(performance.now() - this.startedAt, true);
      if (passBeforeResponse(code) && failure === undefined) {
        this.error = resetName(code);
        this.resetClient(code);
      } else {
        const cause = failure ?? this.upError ?? new Error(`upstream reset the stream (${resetName(code)})`);
        this.fail(statusFor(cause), cause);
      }
      return;
    }
    this.error = code === h2.NGHTTP2_NO_ERROR ? 'upstream_closed' : resetName(code);
    this.resetClient();
  }

  private onClientClose(): void {
    const { down } = this;
    const code = down.rstCode ?? h2.NGHTTP2_NO_ERROR;
    const complete = this.responseEnded && code === h2.NGHTTP2_NO_ERROR;
    if (!complete || !this.requestEnded) this.cancelUpstream();
    this.settle(undefined, false); // cut short before a response: no sample
    this.tapx?.end(complete ? { grpcStatus: this.grpcStatus } : { reset: code === h2.NGHTTP2_NO_ERROR ? h2.NGHTTP2_CANCEL : code });
    if (this.latencyMs === undefined) return; // no response was sent: nothing to count
    const error = this.error ?? (complete ? undefined : code === h2.NGHTTP2_NO_ERROR ? 'closed' : resetName(code));
    this.conn.ctx.metrics.response(this.labels, {
      statusCode: this.statusCode,
      classification: classify(this.statusCode, this.grpcStatus, error),
      ...(this.grpcStatus !== undefined ? { grpcStatus: this.grpcStatus } : {}),
      ...(error !== undefined ? { error } : {}),
      latencyMs: this.latencyMs,
    });
  }

  /**
   * The response is complete and nobody will read the rest of the request
   * body: read and drop it. RFC 9113 §8.1 allows RST_STREAM(NO_ERROR)
   * instead, but clients handle it badly: curl 7.88 fails the response when
   * that frame comes in the same read as its end, and a node:http2 client
   * stream with writes still queued never closes after one. Dropping costs
   * the client's bandwidth, not the proxy's memory.
   */
  private dropRequestBody(): void {
    if (this.up !== undefined) this.down.unpipe(this.up);
    this.down.resume();
  }

  /** Ends the stream's lease (once), with a latency sample when given. */
  private settle(latencyMs: number | undefined, failed: boolean): void {
    const lease = this.lease;
    if (lease === undefined) return;
    this.lease = undefined;
    if (latencyMs !== undefined) lease.observe(latencyMs, failed);
    lease.end();
  }

  /** RST_STREAM(CANCEL) to the upstream at once, without ending the request body first. */
  private cancelUpstream(): void {
    const up = this.up;
    if (up === undefined || up.closed || up.destroyed) return;
    this.down.unpipe(up);
    this.abort.abort();
  }

  /**
   * Resets the client stream. Before the response headers the code goes as
   * given; after them only destroy() resets without a clean END_STREAM first,
   * and its code is INTERNAL_ERROR.
   */
  private resetClient(code: number = h2.NGHTTP2_INTERNAL_ERROR): void {
    const { down } = this;
    if (this.gone()) return;
    if (this.up !== undefined) this.up.unpipe(down);
    if (!down.headersSent) down.close(upstreamResetToClient(code));
    else down.destroy(new Error(`upstream stream failed (${this.error ?? resetName(code)})`));
  }

  /** A proxy-generated error response, Linkerd's way: status + l5d-proxy-error; gRPC gets UNAVAILABLE in a trailers-only response. */
  private fail(status: ProxyStatus | 400, err: unknown): void {
    const { down } = this;
    if (this.gone()) return;
    const reason = headerText(err instanceof Error ? err.message : String(err));
    this.conn.log.debug({ err, status, stream: down.id }, 'h2 proxy error response');
    this.error = errorKind(status);
    if (down.headersSent) {
      this.resetClient();
      return;
    }
    this.latencyMs = performance.now() - this.startedAt;
    this.settle(this.latencyMs, status !== 400);
    const headers: OutgoingHttpHeaders = this.grpc
      ? { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(grpcStatusFor(status)), 'grpc-message': grpcMessage(reason), 'l5d-proxy-error': reason }
      : { ':status': status, 'content-length': '0', 'l5d-proxy-error': reason };
    this.statusCode = this.grpc ? 200 : status;
    if (this.grpc) this.grpcStatus = grpcStatusFor(status);
    this.tapx?.response(this.statusCode);
    this.responseEnded = true;
    down.respond(headers, { endStream: true });
    if (!this.requestEnded) this.dropRequestBody();
  }
}
