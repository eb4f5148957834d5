// HTTP/1.1 forwarding without node:http on the data path. Per client
// connection, one request at a time (pipelined requests wait their turn):
// parse the request head, pick the upstream (ctx.route), take a pooled
// keep-alive connection or open one, write the head without the hop-by-hop
// fields as one Buffer, move the body as bytes (body.ts), parse the
// response head, forward it and its body the same way, then hand the
// upstream connection back to the pool when the exchange ended cleanly.
// Only heads are parsed: that is what keeps this near an opaque relay
// (docs/design.md, "Performance notes").
//
// Errors the proxy causes get a response of its own with `l5d-proxy-error`
// (docs/linkerd-compat.md): 502 connect error or upstream reset before a
// response, 504 connect or response timeout, 503 no endpoint (ctx.route
// throws BPFMESH_E_UNAVAILABLE), 400 malformed request, 431 headers too
// large. Once a response head went to the client an error can only cut the
// connection.
//
// Metrics: request() per request, response() per response head (latency
// from the request head to the response head); tcpOpen/tcpClose for the
// upstream connections opened here (peer dst); tcpRead/tcpWrite for both
// peers. The client connection's tcpOpen/tcpClose (peer src) belong to
// whoever accepted it.
import { STATUS_CODES } from 'node:http';
import { constants as h2c, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import type { Socket } from 'node:net';
import { ErrorCodes, errorCode } from '../../errors.js';
import { asEndpoint, type Classification, type ConnLabels, type Connector, type Endpoint, type Lease, type ProxyMetrics, type RouteTarget, type Track } from '../types.js';
import { h1RequestToH2, h2ResponseToH1, isPeerNotH2, L5D_ORIG_PROTO, lastChunk, parseOrigProto, type H1ResponseFraming, type OrigProtoUpgrader } from '../orig-proto.js';
import { BodyPump, ChunkedDecoder, writeChunk } from './body.js';
import {
  DEFAULT_MAX_HEAD_BYTES,
  HeadReader,
  HeaderFlag,
  HttpErrorCodes,
  parseRequestHead,
  rewriteHead,
  type RequestHead,
  type ResponseHead,
} from './head-parser.js';
import { AuthorityLabels } from './authority-labels.js';
import { Http1Pool, UpstreamConn } from './pool.js';
import { connectFailure, dialFor, dropUpstream, feedResponseBody, mayReplay, openUpstream, readResponseHead, settleUpstream, type ConnectFailure, type UpstreamTarget, type UpstreamWaiter } from './upstream-exchange.js';
import { tapHttp1, type TapPoint } from '../tap/hooks.js';
import type { TapExchange } from '../tap/hub.js';

export const Http1ErrorCodes = {
  /** No endpoint to send to (load shed, NoEndpoints): 503. */
  UNAVAILABLE: ErrorCodes.UNAVAILABLE,
  /** Connecting to the upstream failed: 502. */
  CONNECT: ErrorCodes.CONNECT,
  /** Connecting to the upstream timed out: 504. */
  CONNECT_TIMEOUT: ErrorCodes.CONNECT_TIMEOUT,
} as const;

/** The logger calls used here (a pino Logger fits). */
export interface Http1Log {
  debug(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface Http1Context {
  labels: ConnLabels;
  /** Picks the endpoint for a request. Throw (or reject with) a BpfmeshError BPFMESH_E_UNAVAILABLE for a 503. */
  route(head: RequestHead): RouteTarget | Promise<RouteTarget>;
  connect: Connector;
  /** The metric labels of a request to `ep` (TLS detail, dst_*); default: the connection's. */
  endpointLabels?: (ep: Endpoint, base: ConnLabels) => ConnLabels;
  /** Outbound: carry requests to h2-hinted meshed endpoints over HTTP/2 (l5d-orig-proto). */
  origProto?: OrigProtoUpgrader;
  metrics: ProxyMetrics;
  /** Share one pool between client connections; without it each client connection gets its own. */
  pool?: Http1Pool;
  /** Idle timeout of the connection's own pool (when `pool` is not given). Linkerd: 3 s. */
  poolIdleMs?: number;
  /** From the end of the request to the response head; none when undefined or 0. */
  responseTimeoutMs?: number;
  /** A request body that moves no byte for this long (while the proxy reads) is cut: 408, or a reset after the response began. Default 60 s; 0: none. */
  bodyTimeoutMs?: number;
  /** A keep-alive client that sends nothing for this long is closed; default 60 s. */
  clientIdleMs?: number;
  /** Where the connection registers for drainHttp1: its proxy's own set (the node proxy runs one proxy per pod). */
  live: Set<Drainable>;
  /** The proxy is shutting down (the client spoke after the drain began): serve what came, then close as a drained connection does. */
  draining?: boolean;
  /** An upgraded connection (101, CONNECT) with no byte either way for this long is closed, as idle opaque TCP is; default 1 h, 0: none. */
  tunnelIdleMs?: number;
  /** A request head must arrive in full within this long of its first byte (408 after); default 10 s. */
  headTimeoutMs?: number;
  maxHeadBytes?: number;
  /**
   * Inbound: the verified client identity for the l5d-client-id header, or
   * null for none. Either way a client-sent l5d-client-id is dropped, so it
   * cannot be forged. Undefined (outbound): the header passes untouched.
   */
  clientId?: string | null;
  log: Http1Log;
  /**
   * The balancer's feedback: a lease per routed request, pending from the
   * routing to the response head (or the proxy's own error response), which
   * also gives the latency sample (request head to response head).
   */
  track?: Track;
  /** Live tap (src/proxy/tap/): requests are reported only while a tapper is connected. */
  tap?: TapPoint;
}

/**
 * Serve HTTP/1 on an accepted client connection; `buffered` are the bytes
 * protocol detection read, `firstByteAt` (performance.now()) when the first
 * of them came: the first head's time bound counts from it.
 */
export function serveHttp1(client: Socket, buffered: Buffer, ctx: Http1Context, firstByteAt?: number): void {
  new ClientConn(client, ctx).start(buffered, firstByteAt);
}

/** What a drain asks of a served connection. */
export interface Drainable {
  drain(): void;
}

/**
 * Shutdown: idle keep-alive client connections close now (a server may close
 * an idle HTTP/1.1 connection at any time); busy ones answer their current
 * request with `Connection: close` and close after it. Tunnels are left to
 * the grace period.
 */
export function drainHttp1(set: Set<Drainable>): void {
  for (const c of set) c.drain();
}

const enum St {
  HEAD, // reading a request head
  ROUTE, // routing / connecting
  EXCHANGE, // request and response on an upstream connection
  H2, // request and response on an HTTP/2 stream to the peer proxy (l5d-orig-proto)
  TUNNEL, // after a 101 (or a CONNECT 2xx): raw bytes both ways
  CLOSED,
}

/** Client bytes buffered while a request is in flight before the client is paused. */
const PIPELINE_MAX = 64 * 1024;
/** How often byte counters are reported for long-lived connections. */
const FLUSH_MS = 1000;
/** A closed-by-us client that does not close its side is destroyed after this. */
const LINGER_MS = 5000;
const CLIENT_IDLE_MS = 60_000;
const HEAD_TIMEOUT_MS = 10_000;
const TUNNEL_IDLE_MS = 3_600_000;
const BODY_TIMEOUT_MS = 60_000;
/** scheme://authority at the start of an absolute-form target. */
const ABSOLUTE_FORM_AUTHORITY = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/([^/?#]*)/;

const DROP_REQUEST = HeaderFlag.HOP | HeaderFlag.UPGRADE;
const DROP_REQUEST_UPGRADE = HeaderFlag.HOP;

const EMPTY = Buffer.alloc(0);
const isPromise = <T>(v: T | Promise<T>): v is Promise<T> => typeof (v as { then?: unknown }).then === 'function';
const errMessage = (e: unknown): string => (e instanceof Error ? e.message : String(e));
// Header values must not carry controls (a message may come from anywhere).
const headerSafe = (s: string): string => s.replace(/[^\x20-\x7e]+/g, ' ').slice(0, 200);
const classify = (status: number): Classification => (status >= 500 ? 'failure' : 'success');

class ClientConn implements UpstreamWaiter {
  private state = St.HEAD;
  private readonly reader: HeadReader;
  private readonly resReader: HeadReader;
  private readonly pool: Http1Pool;
  private readonly ownPool: boolean;
  /** Client bytes read but not consumed yet (the start of the next request). */
  private pending: Buffer | null = null;
  private clientEnded = false;
  private keepClient = true;
  /** The proxy is shutting down: no exchange after the current one. */
  private draining = false;

  // The exchange in progress.
  private req: RequestHead | null = null;
  private ep: Endpoint | null = null;
  private lease: Lease | null = null;
  /** The labels of this request: the connection's, then the endpoint's once routed. */
  private labels: ConnLabels;
  private t0 = 0;
  private reqPump: BodyPump | null = null;
  private reqDone = false;
  private up: UpstreamConn | null = null;
  private upReused = false;
  private retried = false;
  private gotResponseBytes = false;
  private res: ResponseHead | null = null;
  private resPump: BodyPump | null = null;
  private resDone = false;
  /** The response-head timer: armed by a deadline, its timer kept between requests (see startTimer). */
  private timer: NodeJS.Timeout | null = null;
  /** When the response head is due (performance.now() ms); 0 while none is awaited. */
  private responseDeadline = 0;
  /** Runs from the first byte of a request head that did not arrive in one read (slow-header clients). */
  private headTimer: NodeJS.Timeout | null = null;
  /** When the first head's first byte came (during protocol detection), if before start(). */
  private headSince: number | undefined;
  /** Runs while a request body is expected; refreshed by every client byte. */
  private bodyTimer: NodeJS.Timeout | null = null;
  /** The request as a tapper sees it, while one does. */
  private tapx: TapExchange | null = null;

  // The exchange over HTTP/2 (St.H2).
  private h2: ClientHttp2Stream | null = null;
  private h2Abort: AbortController | null = null;
  private h2Remaining = 0;
  private h2Decoder: ChunkedDecoder | null = null;
  private h2Framing: H1ResponseFraming | null = null;
  private h2Trailers: IncomingHttpHeaders | undefined;

  // Byte counters already reported.
  private lastFlush = 0;
  private srcRead = 0;
  private srcWritten = 0;

  constructor(
    private readonly client: Socket,
    private readonly ctx: Http1Context,
  ) {
    const max = ctx.maxHeadBytes ?? DEFAULT_MAX_HEAD_BYTES;
    this.reader = new HeadReader(max, true);
    this.resReader = new HeadReader(max);
    this.labels = ctx.labels;
    this.ownPool = ctx.pool === undefined;
    this.pool = ctx.pool ?? new Http1Pool({ idleMs: ctx.poolIdleMs ?? 3000 });
  }

  start(buffered: Buffer, firstByteAt?: number): void {
    const c = this.client;
    this.headSince = firstByteAt;
    this.ctx.live.add(this);
    c.setNoDelay(true);
    c.on('data', this.onClientData);
    c.on('end', this.onClientEnd);
    c.on('error', this.onClientError);
    c.on('close', this.onClientClose);
    this.lastFlush = performance.now();
    // Idleness is the socket's own inactivity timer, which Node refreshes on
    // every read and write: no timer per request on the keep-alive path.
    c.setTimeout(this.ctx.clientIdleMs ?? CLIENT_IDLE_MS);
    c.on('timeout', this.onClientIdle);
    if (buffered.length > 0) this.onClientData(buffered);
    if (this.ctx.draining === true) this.drain();
    if (this.state !== St.CLOSED && (this.pending === null || this.pending.length <= PIPELINE_MAX)) c.resume();
  }

  /** Labels with the request's authority (Host, or an absolute-form target's); made on the first request that has one. */
  private authLabels: AuthorityLabels | null = null;

  private withAuthority(base: ConnLabels, req: RequestHead): ConnLabels {
    if (base.authority !== undefined) return base;
    // Origin-form ("/…") and "*" targets carry no authority: no regex on the common path.
    const abs = req.target.startsWith('/') || req.target === '*' ? null : ABSOLUTE_FORM_AUTHORITY.exec(req.target);
    const authority = abs !== null ? abs[1]! : req.host;
    if (authority === undefined || authority === '') return base;
    return (this.authLabels ??= new AuthorityLabels()).get(base, authority);
  }

  // ---- client side ----

  private readonly onClientData = (chunk: Buffer): void => {
    this.bodyTimer?.refresh();
    switch (this.state) {
      case St.HEAD:
        return this.consumeHead(chunk);
      case St.EXCHANGE:
        if (this.reqPump !== null && !this.reqDone) return this.pushRequestBody(chunk);
        return this.hold(chunk);
      case St.ROUTE:
        return this.hold(chunk);
      case St.H2:
        if (!this.reqDone) return this.pushH2Body(chunk);
        return this.hold(chunk);
      case St.TUNNEL:
        if (this.up !== null) this.relay(chunk, this.up.socket, this.client);
        return;
      case St.CLOSED:
        return; // draining what a closed-by-us client still sends, so its socket closes cleanly
    }
  };

  /** Keep client bytes for later (request body before the upstream is ready, or a pipelined request). */
  private hold(chunk: Buffer): void {
    this.pending = this.pending === null ? chunk : Buffer.concat([this.pending, chunk]);
    if (this.pending.length > PIPELINE_MAX) this.client.pause();
  }

  private consumeHead(chunk: Buffer): void {
    let head: RequestHead;
    try {
      if (!this.reader.push(chunk)) return this.armHeadTimer();
      this.clearHeadTimer();
      head = parseRequestHead(this.reader.head);
    } catch (err) {
      // No request to speak of: the error response is all there is.
      this.req = null;
      this.t0 = performance.now();
      this.labels = this.ctx.labels;
      this.ctx.metrics.request(this.labels);
      const tooLarge = errorCode(err) === HttpErrorCodes.HEADERS_TOO_LARGE;
      this.ctx.log.debug({ err: errMessage(err) }, 'bad request');
      return this.proxyError(tooLarge ? 431 : 400, tooLarge ? 'headers_too_large' : 'malformed_request', errMessage(err), true);
    }
    const rest = this.reader.rest;
    this.startRequest(head, rest.length > 0 ? rest : null);
  }

  private startRequest(head: RequestHead, rest: Buffer | null): void {
    this.state = St.ROUTE;
    this.req = head;
    this.t0 = performance.now();
    this.pending = rest;
    this.keepClient = head.keepAlive && !this.clientEnded && !this.draining;
    this.reqDone = head.framing === 'none';
    if (!this.reqDone) this.armBodyTimer();
    this.retried = false;
    this.ep = null;
    this.settleLease(undefined);
    this.labels = this.withAuthority(this.ctx.labels, head);
    let target: RouteTarget | Promise<RouteTarget>;
    try {
      target = this.ctx.route(head);
    } catch (err) {
      return this.routeFailed(err);
    }
    if (isPromise(target)) {
      target.then(
        (t) => this.routed(t),
        (err: unknown) => this.routeFailed(err),
      );
    } else {
      this.routed(target);
    }
  }

  private routed(target: RouteTarget): void {
    if (this.state !== St.ROUTE) return; // the client went away meanwhile
    const ep = asEndpoint(target);
    this.ep = ep;
    this.lease = this.ctx.track?.(ep) ?? null;
    if (this.ctx.endpointLabels !== undefined) this.labels = this.withAuthority(this.ctx.endpointLabels(ep, this.ctx.labels), this.req!);
    this.ctx.metrics.request(this.labels);
    if (this.ctx.tap?.hub.active === true) this.tapx = tapHttp1(this.ctx.tap, this.req!, ep, this.labels) ?? null;
    const op = this.ctx.origProto;
    const how = op === undefined ? 'http1' : op.decide(ep, this.req!);
    if (how === 'fallback') this.ctx.metrics.origProto?.('fallback_http1');
    if (how !== 'h2') return this.viaHttp1();
    // Wait for the peer's SETTINGS before taking any body bytes: if it does
    // not speak HTTP/2, the request is still whole here and goes over HTTP/1.
    op!.session(ep, this.ctx.connect).then(
      (session) => {
        if (this.state === St.ROUTE && this.req !== null) this.startH2(session);
      },
      (err: unknown) => {
        if (this.state !== St.ROUTE) return;
        if (!isPeerNotH2(err)) return this.connectFailed(connectFailure(err));
        this.ctx.log.debug({ err: errMessage(err) }, 'peer does not speak HTTP/2; HTTP/1 instead');
        this.ctx.metrics.origProto?.('fallback_http1');
        this.viaHttp1();
      },
    );
  }

  private viaHttp1(): void {
    openUpstream(this.pool, this.ep!, this);
  }

  upstreamTarget(): UpstreamTarget {
    return { ep: this.ep!, connect: this.ctx.connect, metrics: this.ctx.metrics, labels: this.labels };
  }

  private routeFailed(err: unknown): void {
    if (this.state !== St.ROUTE) return;
    this.ctx.metrics.request(this.labels);
    if (errorCode(err) === Http1ErrorCodes.UNAVAILABLE) return this.proxyError(503, 'unavailable', `service unavailable: ${errMessage(err)}`);
    // Inbound policy (src/policy/): not authorized, or no route of the server matches.
    if (errorCode(err) === ErrorCodes.FORBIDDEN) return this.proxyError(403, 'forbidden', errMessage(err));
    if (errorCode(err) === ErrorCodes.ROUTE_NOT_FOUND) return this.proxyError(404, 'route_not_found', errMessage(err));
    this.ctx.log.warn({ err: errMessage(err) }, 'route failed');
    this.proxyError(502, 'route_error', `routing failed: ${errMessage(err)}`);
  }

  wantsUpstream(): boolean {
    return this.state === St.ROUTE;
  }

  connectFailed(f: ConnectFailure): void {
    this.proxyError(f.status, f.error, f.message);
  }

  /** Send the request on `up`: head, then whatever body bytes are already here. */
  attach(up: UpstreamConn, reused: boolean): void {
    const req = this.req!;
    this.state = St.EXCHANGE;
    this.up = up;
    this.upReused = reused;
    this.gotResponseBytes = false;
    this.res = null;
    this.resPump = null;
    this.resDone = false;
    this.resReader.reset();
    const sock = up.socket;
    // The proxy speaks HTTP/1.1 upstream whatever the client speaks (RFC 9110 §6.2),
    // so upstream connections stay reusable; a 1.0 request may lack Host.
    let startLine: string | undefined;
    let extra = '';
    if (req.wireMinor !== 1) startLine = `${req.method} ${req.target} HTTP/1.1`;
    if (req.versionMinor === 0) {
      if (req.host === undefined) extra = `Host: ${this.ctx.labels.authority ?? this.ctx.labels.target_addr}\r\n`;
    }
    if (req.upgrade) extra += 'Connection: upgrade\r\n';
    const clientId = this.ctx.clientId;
    if (typeof clientId === 'string') extra += `l5d-client-id: ${clientId}\r\n`;
    const drop = (req.upgrade ? DROP_REQUEST_UPGRADE : DROP_REQUEST) | (clientId === undefined ? 0 : HeaderFlag.CLIENT_ID);
    const head = rewriteHead(req, drop, startLine, extra);
    if (req.framing !== 'none') {
      this.reqPump = new BodyPump(this.client, sock, req.framing, req.contentLength, false, clientId !== undefined);
      const p = this.pending;
      this.pending = null;
      this.pushRequestBody(p ?? EMPTY, head);
    } else {
      this.reqPump = null;
      sock.write(head);
    }
    if (this.state !== St.EXCHANGE) return;
    if (!this.reqDone && this.clientEnded) return this.abort('client closed mid-request');
    if (this.reqDone) this.startTimer();
    // Expect: 100-continue: the client waits for the interim response before sending the body.
    else if (req.expectContinue) this.startTimer();
    if (this.pending === null || this.pending.length <= PIPELINE_MAX) this.client.resume();
    up.socket.resume();
  }

  /** `head`: the request head still to be written, along with the first body bytes. */
  private pushRequestBody(chunk: Buffer, head?: Buffer): void {
    const pump = this.reqPump!;
    let used: number;
    try {
      used = head === undefined ? pump.push(chunk) : pump.pushFirst(head, chunk);
    } catch (err) {
      // A broken chunked request body: the upstream got a part of it and is useless now.
      this.ctx.log.debug({ err: errMessage(err) }, 'bad request body');
      return this.proxyError(400, 'malformed_request', errMessage(err), true);
    }
    if (!pump.done) return;
    if (used < chunk.length) this.hold(chunk.subarray(used));
    this.requestDone();
  }

  private requestDone(): void {
    this.reqDone = true;
    this.clearBodyTimer();
    this.reqPump = null;
    if (this.resDone) return this.exchangeDone();
    if (this.res === null) this.startTimer();
  }

  private readonly onClientEnd = (): void => {
    this.clientEnded = true;
    this.keepClient = false;
    switch (this.state) {
      case St.HEAD:
        return this.closeClient();
      case St.ROUTE:
        return; // the body read so far is in `pending`: attach() sees whether it is complete
      case St.EXCHANGE:
        // A request cut short: nothing sensible can go upstream any more.
        if (!this.reqDone) return this.abort('client closed mid-request');
        return; // wait for the response, then close
      case St.H2:
        if (!this.reqDone) return this.abort('client closed mid-request');
        return;
      case St.TUNNEL:
        this.up?.socket.end();
        return;
      case St.CLOSED:
        return;
    }
  };

  private readonly onClientError = (err: Error): void => {
    this.ctx.log.debug({ err: err.message }, 'client connection error');
  };

  private readonly onClientClose = (): void => {
    this.ctx.live.delete(this);
    this.stopExchange();
    this.flushBytes(null);
    if (this.ownPool) this.pool.close();
  };

  /** Stop both body pumps and drop the upstream connection mid-exchange. */
  private stopExchange(): void {
    if (this.tapx !== null) this.tapEnd(this.resPump?.written ?? this.tapx.bytes);
    this.state = St.CLOSED;
    this.dropTimer();
    this.clearBodyTimer();
    this.clearHeadTimer();
    this.settleLease(undefined); // cut short: no sample
    this.reqPump?.stop();
    this.resPump?.stop();
    this.dropH2();
    // Mid-exchange or tunnel: the upstream connection's state is unknown, never pool it.
    dropUpstream(this.up);
    this.up = null;
  }

  drain(): void {
    this.draining = true;
    if (this.state === St.HEAD && this.pending === null && !this.reader.buffering) return this.closeClient();
    if (this.state !== St.TUNNEL && this.state !== St.CLOSED) this.keepClient = false;
  }

  /** End the client connection after what was written. */
  private closeClient(): void {
    this.state = St.CLOSED;
    this.pending = null;
    this.dropTimer();
    this.clearBodyTimer();
    this.clearHeadTimer();
    const c = this.client;
    c.resume(); // read and drop until the client closes its side
    if (!c.writableEnded) c.end();
    c.setTimeout(LINGER_MS, () => c.destroy());
  }

  /** Tear both connections down (a message cut short). */
  private abort(why: string): void {
    this.ctx.log.debug({ why }, 'aborting exchange');
    this.stopExchange();
    // A reset, not a FIN: for a close-delimited response a FIN would read as a complete body.
    try {
      this.client.resetAndDestroy();
    } catch {
      this.client.destroy(); // not a TCP handle (a TLS socket)
    }
  }

  // ---- upstream side ----

  onUpstreamData(up: UpstreamConn, chunk: Buffer): void {
    if (up !== this.up) return;
    if (this.state === St.TUNNEL) return this.relay(chunk, this.client, up.socket);
    this.gotResponseBytes = true;
    if (this.res === null) return this.consumeResponseHead(chunk);
    let complete: boolean;
    try {
      complete = feedResponseBody(up, this.resPump, chunk);
    } catch (err) {
      return this.abort(`malformed response body: ${errMessage(err)}`);
    }
    if (complete) this.responseDone();
  }

  private consumeResponseHead(chunk: Buffer): void {
    const req = this.req!;
    let head: ResponseHead | null;
    try {
      head = readResponseHead(this.resReader, chunk, req.method === 'HEAD', this.onInterim);
    } catch (err) {
      this.ctx.log.debug({ err: errMessage(err) }, 'bad response from upstream');
      return this.proxyError(502, 'malformed_response', `bad response from upstream: ${errMessage(err)}`);
    }
    if (head === null) return;
    const rest = this.resReader.rest;
    const status = head.statusCode;
    if (status === 101 || (req.method === 'CONNECT' && status < 300)) {
      if (status === 101 && !req.upgrade) {
        return this.proxyError(502, 'malformed_response', 'upstream switched protocols without an upgrade request');
      }
      return this.tunnel(head, rest);
    }
    this.responseHead(head, rest);
  }

  /** Interim (100 Continue, 103 Early Hints): passed on, except to HTTP/1.0 clients, which know none. */
  private readonly onInterim = (head: ResponseHead): void => {
    this.clearTimer();
    if (this.req!.versionMinor >= 1) this.client.write(rewriteHead(head, HeaderFlag.HOP | HeaderFlag.UPGRADE));
  };

  private responseHead(head: ResponseHead, rest: Buffer): void {
    const req = this.req!;
    const up = this.up!;
    this.clearTimer();
    this.res = head;
    this.recordResponse(head.statusCode, undefined);
    // An HTTP/1.0 client cannot read chunked: de-chunk and delimit by close.
    const dechunk = req.versionMinor === 0 && head.framing === 'chunked';
    // The client connection persists only after a complete, self-delimited exchange.
    if (dechunk || head.framing === 'close' || !this.reqDone) this.keepClient = false;
    let conn = '';
    if (!this.keepClient) conn = 'Connection: close\r\n';
    else if (req.versionMinor === 0) conn = 'Connection: keep-alive\r\n';
    const startLine = head.wireMinor !== 1 ? `HTTP/1.1 ${head.statusCode} ${head.reason}` : undefined;
    const drop = HeaderFlag.HOP | HeaderFlag.UPGRADE | (dechunk ? HeaderFlag.TRANSFER_ENCODING : 0);
    const out = rewriteHead(head, drop, startLine, conn);
    const c = this.client;
    if (head.framing === 'none') {
      c.write(out);
      return this.responseDone(rest.length > 0);
    }
    const pump = new BodyPump(up.socket, c, head.framing, head.contentLength, dechunk);
    this.resPump = pump;
    let used: number;
    try {
      used = pump.pushFirst(out, rest);
    } catch (err) {
      return this.abort(`malformed response body: ${errMessage(err)}`);
    }
    if (pump.done) this.responseDone(used < rest.length);
  }

  private responseDone(extra = false): void {
    if (this.tapx !== null) this.tapEnd(this.resPump?.written ?? 0);
    this.resDone = true;
    this.resPump = null;
    if (extra) this.up!.dead = true;
    if (!this.reqDone) {
      // Answered before the request was complete (an early error, or an
      // Expect the server refused): the upstream connection is mid-request.
      dropUpstream(this.up);
      this.up = null;
      this.reqPump?.stop();
      this.reqPump = null;
      return this.closeClient();
    }
    this.exchangeDone();
  }

  private exchangeDone(): void {
    const up = this.up!;
    this.up = null;
    this.flushBytes(up);
    settleUpstream(this.pool, up, this.res!.keepAlive && !this.req!.upgrade);
    this.req = null;
    this.res = null;
    if (!this.keepClient || this.clientEnded) return this.closeClient();
    this.nextExchange();
  }

  onUpstreamEnd(up: UpstreamConn): void {
    if (up !== this.up) return;
    if (this.state === St.TUNNEL) {
      this.client.end();
      return;
    }
    this.upstreamGone(up, undefined);
  }

  onUpstreamClose(up: UpstreamConn, err: Error | undefined): void {
    if (up !== this.up) return;
    if (this.state === St.TUNNEL) {
      this.up = null;
      if (err !== undefined) this.client.destroy();
      else if (!this.client.writableEnded) this.client.end();
      return;
    }
    this.upstreamGone(up, err);
  }

  private upstreamGone(up: UpstreamConn, err: Error | undefined): void {
    if (this.res !== null) {
      if (this.resDone) return; // waiting for the request's end; exchangeDone will drop the connection
      // A close-delimited body ends with a FIN; a reset cuts it short.
      if (err === undefined && this.resPump!.eof()) return this.responseDone();
      return this.abort('upstream closed mid-response');
    }
    this.clearTimer();
    this.up = null;
    dropUpstream(up);
    const req = this.req!;
    if (mayReplay(this.upReused, this.gotResponseBytes, this.retried, req.framing === 'none', req.method)) {
      this.retried = true;
      this.state = St.ROUTE;
      return dialFor(this);
    }
    const why = err === undefined ? 'connection closed before a response' : `connection error before a response: ${err.message}`;
    this.proxyError(502, 'upstream_reset', why);
  }

  // ---- HTTP/1 over HTTP/2 to the peer proxy (l5d-orig-proto) ----

  private startH2(session: ClientHttp2Session): void {
    const req = this.req!;
    const end = req.framing === 'none';
    const abort = new AbortController();
    let stream: ClientHttp2Stream;
    // Node 24's request() on a closing session returns a stream that errors
    // later instead of throwing: refuse it here, as Node 22 would have.
    if (session.closed || session.destroyed) return this.proxyError(502, 'connect_error', 'HTTP/2 request to the peer proxy failed: the session is closing (GOAWAY)');
    try {
      stream = session.request(h1RequestToH2(req), { endStream: end, signal: abort.signal });
    } catch (err) {
      // node:http2 refused a header, or the session began closing.
      return this.proxyError(502, 'connect_error', `HTTP/2 request to the peer proxy failed: ${errMessage(err)}`);
    }
    this.state = St.H2;
    this.h2 = stream;
    this.h2Abort = abort;
    this.h2Framing = null;
    this.h2Trailers = undefined;
    this.resDone = false;
    this.ctx.metrics.origProto?.('upgraded');
    stream.on('error', (err: Error) => this.ctx.log.debug({ err: err.message }, 'upgraded stream error'));
    stream.on('headers', (h: IncomingHttpHeaders) => {
      const status = Number(h[':status']);
      if (stream !== this.h2 || status < 100 || status >= 200 || status === 101) return;
      // Interim responses (100 Continue, 103) pass on, except to HTTP/1.0 clients.
      this.clearTimer();
      if (req.versionMinor >= 1) this.client.write(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Informational'}\r\n\r\n`, 'latin1');
    });
    stream.once('response', (h: IncomingHttpHeaders, flags: number) => this.onH2Response(stream, h, (flags & h2c.NGHTTP2_FLAG_END_STREAM) !== 0));
    stream.on('data', (chunk: Buffer) => this.onH2Data(stream, chunk));
    stream.on('trailers', (t: IncomingHttpHeaders) => (this.h2Trailers = t));
    stream.once('end', () => this.onH2End(stream));
    stream.once('close', () => this.onH2Close(stream));
    if (!end) {
      this.h2Remaining = req.contentLength;
      this.h2Decoder = req.framing === 'chunked' ? new ChunkedDecoder() : null;
      const p = this.pending;
      this.pending = null;
      if (p !== null) this.pushH2Body(p);
    }
    if (this.state !== St.H2) return;
    if (!this.reqDone && this.clientEnded) return this.abort('client closed mid-request');
    if (this.reqDone || req.expectContinue) this.startTimer();
    if (this.pending === null || this.pending.length <= PIPELINE_MAX) this.client.resume();
  }

  /** Request body bytes onto the stream: HTTP/2 frames them, so chunked framing is taken off. */
  private pushH2Body(chunk: Buffer): void {
    const stream = this.h2!;
    let used: number;
    let parts: Buffer[];
    let done: boolean;
    if (this.h2Decoder === null) {
      used = Math.min(this.h2Remaining, chunk.length);
      this.h2Remaining -= used;
      parts = [used === chunk.length ? chunk : chunk.subarray(0, used)];
      done = this.h2Remaining === 0;
    } else {
      parts = [];
      try {
        used = this.h2Decoder.feed(chunk, 0, parts);
      } catch (err) {
        this.ctx.log.debug({ err: errMessage(err) }, 'bad request body');
        return this.proxyError(400, 'malformed_request', errMessage(err), true);
      }
      done = this.h2Decoder.done;
    }
    let ok = true;
    for (const p of parts) if (p.length > 0) ok = stream.write(p) && ok;
    if (!ok && !this.client.isPaused()) {
      this.client.pause();
      stream.once('drain', () => {
        if (this.h2 === stream) this.client.resume();
      });
    }
    if (!done) return;
    if (used < chunk.length) this.hold(chunk.subarray(used));
    this.reqDone = true;
    this.clearBodyTimer();
    stream.end();
    if (this.resDone) return this.h2Done();
    if (this.h2Framing === null) this.startTimer();
  }

  private onH2Response(stream: ClientHttp2Stream, h: IncomingHttpHeaders, endStream: boolean): void {
    if (stream !== this.h2) return;
    const req = this.req!;
    this.clearTimer();
    // The peer proxy says which HTTP/1 version the app answered with; the
    // client gets this proxy's own (HTTP/1.1), so the value is only checked.
    const orig = h[L5D_ORIG_PROTO];
    if (orig !== undefined && parseOrigProto(String(orig)) === null) this.ctx.log.debug({ value: String(orig) }, `unknown ${L5D_ORIG_PROTO} on a response`);
    if (!this.reqDone) this.keepClient = false;
    const out = h2ResponseToH1(h, { clientMinor: req.versionMinor, head: req.method === 'HEAD', endStream, keepAlive: this.keepClient });
    this.keepClient = out.keepAlive;
    this.h2Framing = out.framing;
    this.recordResponse(out.status, undefined);
    this.client.write(out.head, 'latin1');
    if (endStream) this.h2ResponseDone();
  }

  private onH2Data(stream: ClientHttp2Stream, chunk: Buffer): void {
    if (stream !== this.h2 || this.h2Framing === null || this.h2Framing === 'none' || chunk.length === 0) return;
    if (this.tapx !== null) this.tapx.bytes += chunk.length;
    const c = this.client;
    let ok: boolean;
    if (this.h2Framing === 'chunked') ok = writeChunk(c, chunk);
    else ok = c.write(chunk);
    if (!ok && !stream.isPaused()) {
      stream.pause();
      c.once('drain', () => stream.resume());
    }
  }

  private onH2End(stream: ClientHttp2Stream): void {
    if (stream !== this.h2 || this.h2Framing === null || this.resDone) return;
    if ((stream.rstCode ?? h2c.NGHTTP2_NO_ERROR) !== h2c.NGHTTP2_NO_ERROR) return; // a reset: see onH2Close
    if (this.h2Framing === 'chunked') this.client.write(lastChunk(this.h2Trailers), 'latin1');
    this.h2ResponseDone();
  }

  private h2ResponseDone(): void {
    if (this.tapx !== null) this.tapEnd(this.tapx.bytes);
    this.resDone = true;
    if (this.reqDone) return this.h2Done();
    // Answered before the whole request came (an early error): the rest of the request has nowhere to go.
    this.dropH2();
    this.closeClient();
  }

  /** The exchange is over and the client connection stays: read the next request head (maybe already buffered). */
  private nextExchange(): void {
    if (this.draining) return this.closeClient();
    this.state = St.HEAD;
    this.reader.reset();
    const p = this.pending;
    this.pending = null;
    this.client.resume();
    if (p !== null) this.consumeHead(p);
  }

  /** No bytes either way for the idle time: only a connection between requests is closed (quietly). */
  private readonly onClientIdle = (): void => {
    if (this.state === St.HEAD && this.pending === null && !this.reader.buffering) this.closeClient();
    // Every tunnel byte passes the client socket, whose timer both directions
    // refresh: idle both ways, both sides are closed (FIN), as idle opaque TCP is.
    else if (this.state === St.TUNNEL) {
      this.ctx.log.debug({ idleMs: this.ctx.tunnelIdleMs ?? TUNNEL_IDLE_MS }, 'upgraded connection idle: closed');
      this.stopExchange();
      this.client.destroySoon();
    }
  };

  /** A client that started a request head and stalls gets a 408; the bound counts from the first byte. */
  private armHeadTimer(): void {
    if (this.headTimer !== null) return;
    const ms = this.ctx.headTimeoutMs ?? HEAD_TIMEOUT_MS;
    if (ms <= 0) return;
    const since = this.headSince;
    this.headSince = undefined;
    const left = since === undefined ? ms : Math.max(0, ms - (performance.now() - since));
    this.headTimer = setTimeout(() => {
      this.headTimer = null;
      if (this.state !== St.HEAD) return;
      this.req = null;
      this.t0 = performance.now();
      this.labels = this.ctx.labels;
      this.ctx.metrics.request(this.labels);
      this.proxyError(408, 'request_header_timeout', `no complete request head within ${ms} ms`, true);
    }, left);
    this.headTimer.unref();
  }

  private clearHeadTimer(): void {
    if (this.headTimer !== null) {
      clearTimeout(this.headTimer);
      this.headTimer = null;
    }
  }

  private h2Done(): void {
    this.h2 = null;
    this.h2Abort = null;
    this.h2Framing = null;
    this.h2Decoder = null;
    this.flushBytes(null);
    this.req = null;
    if (!this.keepClient || this.clientEnded) return this.closeClient();
    this.nextExchange();
  }

  private onH2Close(stream: ClientHttp2Stream): void {
    if (stream !== this.h2) return;
    const code = stream.rstCode ?? h2c.NGHTTP2_NO_ERROR;
    this.h2 = null;
    this.h2Abort = null;
    if (this.h2Framing === null) return this.proxyError(502, 'upstream_reset', `the peer proxy ended the stream before a response (HTTP/2 code ${code})`);
    this.abort(`the peer proxy reset the stream mid-response (HTTP/2 code ${code})`);
  }

  /** Cancel the HTTP/2 stream in flight (RST_STREAM CANCEL, without ending the request body first). */
  private dropH2(): void {
    const abort = this.h2Abort;
    this.h2 = null;
    this.h2Abort = null;
    abort?.abort();
  }

  // ---- tunnel ----

  private tunnel(head: ResponseHead, rest: Buffer): void {
    const up = this.up!;
    this.clearTimer();
    this.recordResponse(head.statusCode, undefined);
    this.state = St.TUNNEL;
    this.reqPump?.stop();
    this.reqPump = null;
    const c = this.client;
    c.setTimeout(this.ctx.tunnelIdleMs ?? TUNNEL_IDLE_MS);
    c.cork();
    c.write(rewriteHead(head, HeaderFlag.HOP, undefined, head.statusCode === 101 ? 'Connection: upgrade\r\n' : ''));
    if (rest.length > 0) c.write(rest);
    c.uncork();
    const p = this.pending;
    this.pending = null;
    if (p !== null) up.socket.write(p);
    if (this.clientEnded) up.socket.end();
    c.resume();
    up.socket.resume();
  }

  /** Raw forwarding with backpressure (tunnel mode). */
  private relay(chunk: Buffer, to: Socket, from: Socket): void {
    if (!to.write(chunk) && !from.isPaused()) {
      from.pause();
      to.once('drain', () => from.resume());
    }
  }

  // ---- proxy-made responses ----

  /** Answer with an error of the proxy's own; `close` forces the client connection closed after it. */
  private proxyError(status: number, error: string, message: string, close = false): void {
    this.clearTimer();
    this.clearBodyTimer();
    const responded = this.h2Framing !== null;
    this.h2Framing = null;
    this.dropH2();
    dropUpstream(this.up);
    this.up = null;
    this.reqPump?.stop();
    this.reqPump = null;
    if (this.res !== null || responded) return this.abort(message); // too late for a response
    this.recordResponse(status, error);
    // The request's body was not (all) read: where the next request starts is unknown.
    const closeAfter = close || !this.keepClient || !this.reqDone || this.clientEnded;
    const v0 = this.req !== null && this.req.versionMinor === 0;
    const conn = closeAfter ? 'connection: close\r\n' : v0 ? 'connection: keep-alive\r\n' : '';
    this.client.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nl5d-proxy-error: ${headerSafe(message)}\r\ncontent-length: 0\r\n${conn}\r\n`,
      'latin1',
    );
    this.req = null;
    if (closeAfter) return this.closeClient();
    this.nextExchange();
  }

  private recordResponse(statusCode: number, error: string | undefined): void {
    const latencyMs = performance.now() - this.t0;
    const r =
      error === undefined
        ? { statusCode, classification: classify(statusCode), latencyMs }
        : { statusCode, classification: classify(statusCode), latencyMs, error };
    this.ctx.metrics.response(this.labels, r);
    if (this.tapx !== null) {
      this.tapx.response(statusCode);
      if (error !== undefined) this.tapEnd(0); // the proxy's own answer has no body
    }
    // A request the client got wrong says nothing about the endpoint.
    const clientFault = error === 'malformed_request' || error === 'headers_too_large';
    this.settleLease(clientFault ? undefined : { latencyMs, failed: error !== undefined });
  }

  /** The tapped request's end (once): response body bytes; an HTTP/1 failure carries no end code. */
  private tapEnd(bytes: number): void {
    const x = this.tapx;
    if (x === null) return;
    this.tapx = null;
    x.end({}, bytes);
  }

  /** Ends the request's lease, with a latency sample when there is one. */
  private settleLease(sample: { latencyMs: number; failed: boolean } | undefined): void {
    const lease = this.lease;
    if (lease === null) return;
    this.lease = null;
    if (sample !== undefined) lease.observe(sample.latencyMs, sample.failed);
    lease.end();
  }

  // ---- timers and byte counters ----

  private armBodyTimer(): void {
    const ms = this.ctx.bodyTimeoutMs ?? BODY_TIMEOUT_MS;
    if (ms <= 0 || this.bodyTimer !== null) return;
    this.bodyTimer = setTimeout(() => {
      const t = this.bodyTimer;
      if (t === null) return;
      // Paused by the proxy (the upstream is slow to read): not the client's stall.
      if (this.client.isPaused()) return void t.refresh();
      this.bodyTimer = null;
      if (this.reqDone || this.state === St.HEAD || this.state === St.CLOSED || this.state === St.TUNNEL) return;
      this.proxyError(408, 'request_body_timeout', `no request body byte for ${ms} ms`, true);
    }, ms);
    this.bodyTimer.unref();
  }

  private clearBodyTimer(): void {
    if (this.bodyTimer !== null) {
      clearTimeout(this.bodyTimer);
      this.bodyTimer = null;
    }
  }

  /**
   * Awaits the response head within responseTimeoutMs. Keep-alive requests
   * arm and disarm this once each, so it is a deadline, not a timer per
   * request: one timer per connection stays pending while requests come and
   * go, and when it fires early (the deadline moved) it re-arms for what is
   * left. A setTimeout/clearTimeout pair per request cost more than the
   * deadline check (profiled).
   */
  private startTimer(): void {
    const ms = this.ctx.responseTimeoutMs;
    if (ms === undefined || ms <= 0 || this.responseDeadline !== 0) return;
    this.responseDeadline = performance.now() + ms;
    if (this.timer === null) this.timer = setTimeout(this.onResponseTimer, ms).unref();
  }

  /** Disarms the deadline; the timer, if pending, finds nothing to do. */
  private clearTimer(): void {
    this.responseDeadline = 0;
  }

  /** The connection is done: the pending timer goes too (it holds this object). */
  private dropTimer(): void {
    this.responseDeadline = 0;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private readonly onResponseTimer = (): void => {
    this.timer = null;
    const due = this.responseDeadline;
    if (due === 0) return;
    const left = due - performance.now();
    if (left >= 1) {
      this.timer = setTimeout(this.onResponseTimer, left).unref();
      return;
    }
    this.responseDeadline = 0;
    if (this.state === St.H2 ? this.h2Framing !== null : this.state !== St.EXCHANGE || this.res !== null) return;
    this.proxyError(504, 'response_timeout', `response timed out after ${this.ctx.responseTimeoutMs} ms`);
  };

  /** Report bytes moved since the last report, at most once per FLUSH_MS unless the client closed (up null). */
  private flushBytes(up: UpstreamConn | null): void {
    const now = performance.now();
    const closing = this.state === St.CLOSED;
    if (!closing && now - this.lastFlush < FLUSH_MS) return;
    this.lastFlush = now;
    const { metrics } = this.ctx;
    const labels = this.ctx.labels;
    const c = this.client;
    const r = c.bytesRead - this.srcRead;
    const w = c.bytesWritten - this.srcWritten;
    this.srcRead += r;
    this.srcWritten += w;
    if (r > 0) metrics.tcpRead(labels, 'src', r);
    if (w > 0) metrics.tcpWrite(labels, 'src', w);
    if (up !== null) {
      const s = up.socket;
      const ur = s.bytesRead - up.reportedRead;
      const uw = s.bytesWritten - up.reportedWritten;
      up.reportedRead += ur;
      up.reportedWritten += uw;
      if (ur > 0) metrics.tcpRead(this.labels, 'dst', ur);
      if (uw > 0) metrics.tcpWrite(this.labels, 'dst', uw);
    }
  }
}
