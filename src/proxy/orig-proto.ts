// HTTP/1 carried over HTTP/2 between proxies, Linkerd's `l5d-orig-proto`.
//
// Outbound (upgrade): an HTTP/1 request to an endpoint that discovery hints
// as h2, reached over mTLS (a meshed peer proxy), goes as an HTTP/2 stream on
// the endpoint's shared session with `l5d-orig-proto: HTTP/1.1` (or
// `HTTP/1.0`; `; absolute-form` appended when the request target was an
// absolute URI). Hop-by-hop fields and the chunked framing stay behind: HTTP/2
// frames the body itself. Upgrade and CONNECT requests are never carried
// this way (they need the HTTP/1 connection itself). The response's
// `l5d-orig-proto` (the version the app answered with) is removed before the
// client sees it. When the peer turns out not to speak HTTP/2 (see
// h2/pool.ts PEER_NOT_H2) nothing was sent: the request goes over HTTP/1,
// the endpoint is remembered as HTTP/1-only for a while, and it is counted
// (bpfmesh_orig_proto_requests_total{event="fallback_http1"}).
//
// Inbound (downgrade): an HTTP/2 request that carries `l5d-orig-proto` is
// sent to the app as the HTTP/1 request it was (Host from :authority,
// Content-Length kept or chunked framing added, the header removed); the
// response goes back as HTTP/2 with `l5d-orig-proto` set to the app's
// HTTP/1 version, as linkerd2-proxy's Downgrade does.
//
// The conversion functions here are pure; the upgrade's byte pumping lives
// in http1/proxy-http1.ts (it owns the client connection), the downgrade's in
// the Downgrade class below (it owns the upstream HTTP/1 connection).
import { STATUS_CODES } from 'node:http';
import { constants as h2c, type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { BpfmeshError, errorCode } from '../errors.js';
import { BodyPump, writeChunk } from './http1/body.js';
import { HeadReader, HeaderFlag, HttpErrorCodes, type RequestHead, type ResponseHead } from './http1/head-parser.js';
import type { Http1Pool, UpstreamConn } from './http1/pool.js';
import { dialFor, dropUpstream, feedResponseBody, mayReplay, openUpstream, readResponseHead, settleUpstream, type ConnectFailure, type UpstreamTarget, type UpstreamWaiter } from './http1/upstream-exchange.js';
import { H2UpstreamPool, PEER_NOT_H2 } from './h2/pool.js';
import { endpointKey, type Connector, type Endpoint } from './types.js';

export const L5D_ORIG_PROTO = 'l5d-orig-proto';

/** Fields that belong to one HTTP/1 connection (RFC 9110 §7.6.1) and never cross into HTTP/2. */
const CONNECTION_FIELDS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'http2-settings', 'host']);

/** Whether a request may be carried over HTTP/2: not an Upgrade (WebSocket, h2c) and not CONNECT. */
export function upgradable(req: Pick<RequestHead, 'method' | 'upgrade' | 'headers'>): boolean {
  if (req.upgrade || req.method === 'CONNECT') return false;
  // An Upgrade field without "Connection: upgrade" is not an upgrade, but a
  // client that sends one still expects HTTP/1 semantics from the server.
  for (let i = 0; i < req.headers.length; i += 2) if (req.headers[i]!.toLowerCase() === 'upgrade') return false;
  return true;
}

/** The l5d-orig-proto value for an HTTP/1 request (Linkerd's four values). */
export function origProtoValue(versionMinor: number, absoluteForm: boolean): string {
  return `HTTP/1.${versionMinor === 0 ? 0 : 1}${absoluteForm ? '; absolute-form' : ''}`;
}

/** A parsed l5d-orig-proto request value, or null when it is not one of Linkerd's. */
export function parseOrigProto(v: string): { versionMinor: 0 | 1; absoluteForm: boolean } | null {
  const m = /^HTTP\/1\.([01])(; absolute-form)?$/.exec(v.trim());
  return m === null ? null : { versionMinor: m[1] === '0' ? 0 : 1, absoluteForm: m[2] !== undefined };
}

/**
 * HTTP/2 request headers for an HTTP/1 request head: pseudo-headers from the
 * request line and Host (or from an absolute-form target), names lower
 * case, connection fields dropped (TE kept only as "trailers"), and
 * l5d-orig-proto added.
 */
export function h1RequestToH2(req: RequestHead): OutgoingHttpHeaders {
  let path = req.target;
  let authority = req.host;
  let scheme = 'http';
  let absolute = false;
  const abs = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/([^/?#]*)([^#]*)/.exec(req.target);
  if (abs !== null) {
    absolute = true;
    scheme = abs[1]!.toLowerCase();
    authority = abs[2]!;
    path = abs[3] === '' ? '/' : abs[3]!;
  } else if (req.method === 'OPTIONS' && req.target === '*') {
    path = '*';
  }
  const out: OutgoingHttpHeaders = { ':method': req.method, ':scheme': scheme, ':path': path };
  if (authority !== undefined && authority !== '') out[':authority'] = authority;
  const h = req.headers;
  for (let i = 0; i < h.length; i += 2) {
    if ((req.flags[i / 2]! & HeaderFlag.HOP) !== 0) continue; // Connection, Keep-Alive, TE, Trailer, fields named in Connection
    const name = h[i]!.toLowerCase();
    const value = h[i + 1]!;
    if (CONNECTION_FIELDS.has(name) || name === L5D_ORIG_PROTO) continue;
    append(out, name, value);
  }
  for (let i = 0; i < h.length; i += 2) {
    if (h[i]!.toLowerCase() === 'te' && /(^|,)\s*trailers\s*(;|,|$)/i.test(h[i + 1]!)) out['te'] = 'trailers';
  }
  out[L5D_ORIG_PROTO] = origProtoValue(req.versionMinor, absolute);
  return out;
}

function append(out: OutgoingHttpHeaders, name: string, value: string): void {
  const prev = out[name];
  if (prev === undefined) out[name] = value;
  else if (Array.isArray(prev)) prev.push(value);
  else out[name] = [String(prev), value];
}

/** How an HTTP/2 response is framed towards an HTTP/1 client. */
export type H1ResponseFraming = 'none' | 'length' | 'chunked' | 'close';

/**
 * The HTTP/1 response head for an HTTP/2 response: status line (always
 * HTTP/1.1: the proxy speaks its own version, RFC 9110 §6.2), fields without
 * pseudo-headers, connection fields and l5d-orig-proto, and the framing
 * HTTP/1 needs: Content-Length as given, else chunked for a 1.1 client or
 * close-delimited for a 1.0 one; none for HEAD, 1xx, 204, 304.
 */
export function h2ResponseToH1(
  h: IncomingHttpHeaders,
  opts: { clientMinor: number; head: boolean; endStream: boolean; keepAlive: boolean },
): { head: string; framing: H1ResponseFraming; keepAlive: boolean; status: number } {
  const status = Number(h[':status'] ?? 502);
  let lines = '';
  let contentLength: string | undefined;
  for (const [name, value] of Object.entries(h)) {
    if (name.startsWith(':') || value === undefined || CONNECTION_FIELDS.has(name) || name === L5D_ORIG_PROTO) continue;
    if (name === 'content-length') contentLength = String(value);
    for (const v of Array.isArray(value) ? value : [value]) lines += `${name}: ${String(v)}\r\n`;
  }
  const noBody = opts.head || status < 200 || status === 204 || status === 304;
  let framing: H1ResponseFraming;
  let keepAlive = opts.keepAlive;
  if (noBody) framing = 'none';
  else if (contentLength !== undefined) framing = contentLength === '0' ? 'none' : 'length';
  else if (opts.endStream) {
    framing = 'none';
    lines += 'content-length: 0\r\n';
  } else if (opts.clientMinor >= 1) {
    framing = 'chunked';
    lines += 'transfer-encoding: chunked\r\n';
  } else {
    framing = 'close';
    keepAlive = false;
  }
  if (!keepAlive) lines += 'connection: close\r\n';
  else if (opts.clientMinor === 0) lines += 'connection: keep-alive\r\n';
  return { head: `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n${lines}\r\n`, framing, keepAlive, status };
}

/** Trailers as the end of a chunked body ("0\r\n" + fields + "\r\n"); `stripL5d`: without l5d-* fields (inbound). */
export function lastChunk(trailers: IncomingHttpHeaders | undefined, stripL5d = false): string {
  let out = '0\r\n';
  if (trailers !== undefined) {
    for (const [name, value] of Object.entries(trailers)) {
      if (name.startsWith(':') || value === undefined || CONNECTION_FIELDS.has(name) || name === 'content-length' || (stripL5d && name.startsWith('l5d-'))) continue;
      for (const v of Array.isArray(value) ? value : [value]) out += `${name}: ${String(v)}\r\n`;
    }
  }
  return `${out}\r\n`;
}

// ---- outbound: which requests go over HTTP/2 ----

export interface OrigProtoUpgraderOptions {
  pool: H2UpstreamPool;
  /** Whether an endpoint is a meshed peer proxy reached over mTLS with protocol_hint h2. */
  eligible: (ep: Endpoint) => boolean;
  /** How long an endpoint that did not speak HTTP/2 is sent HTTP/1 before trying again. Default 60 s. */
  rememberMs?: number;
  /** Endpoints remembered at most (oldest forgotten first). Default 1024. */
  maxRemembered?: number;
  now?: () => number;
}

export class OrigProtoUpgrader {
  readonly pool: H2UpstreamPool;
  readonly #eligible: (ep: Endpoint) => boolean;
  readonly #rememberMs: number;
  readonly #max: number;
  readonly #now: () => number;
  /** endpointKey(h2) -> until when the endpoint is sent HTTP/1. */
  readonly #http1Only = new Map<string, number>();

  constructor(opts: OrigProtoUpgraderOptions) {
    this.pool = opts.pool;
    this.#eligible = opts.eligible;
    this.#rememberMs = opts.rememberMs ?? 60_000;
    this.#max = opts.maxRemembered ?? 1024;
    this.#now = opts.now ?? Date.now;
  }

  /** 'h2': carry it over HTTP/2; 'fallback': it would be, but the peer did not speak HTTP/2 lately; 'http1': not eligible. */
  decide(ep: Endpoint, req: RequestHead): 'h2' | 'fallback' | 'http1' {
    if (!upgradable(req) || !this.#eligible(ep)) return 'http1';
    const key = endpointKey(ep, 'h2');
    const until = this.#http1Only.get(key);
    if (until === undefined) return 'h2';
    if (this.#now() < until) return 'fallback';
    this.#http1Only.delete(key);
    return 'h2';
  }

  /** The endpoint's HTTP/2 session once its SETTINGS came; a PEER_NOT_H2 rejection marks it HTTP/1-only. */
  async session(ep: Endpoint, connect: Connector): Promise<ClientHttp2Session> {
    try {
      return await this.pool.ready(ep, connect);
    } catch (err) {
      if (isPeerNotH2(err)) {
        const key = endpointKey(ep, 'h2');
        this.#http1Only.delete(key);
        if (this.#http1Only.size >= this.#max) this.#http1Only.delete(this.#http1Only.keys().next().value!);
        this.#http1Only.set(key, this.#now() + this.#rememberMs);
      }
      throw err;
    }
  }
}

export const isPeerNotH2 = (err: unknown): boolean => errorCode(err) === PEER_NOT_H2;

// ---- inbound: an upgraded HTTP/2 request back to HTTP/1 ----

/** What the HTTP/2 forwarder hands the downgrade, and hears back from it. */
export interface DowngradeContext extends Omit<UpstreamTarget, 'ep'> {
  pool: Http1Pool;
  /** The verified client identity for l5d-client-id, or null; a client-sent value is always dropped. */
  clientId: string | null | undefined;
  log: { debug(obj: object, msg?: string): void };
  /** An app that does not start its response within this is answered 504 (BPFMESH_PROXY_RESPONSE_HEAD_TIMEOUT); none when absent. */
  responseTimeoutMs?: number;
}

export interface DowngradeSink {
  /** Response headers went to the client stream. */
  responded(status: number): void;
  /** The response is complete (END_STREAM sent). */
  ended(): void;
  /** Before any response: answer with a proxy error (400 bad l5d-orig-proto, 502, 504). */
  failed(status: 400 | 502 | 504, err: unknown): void;
  /** After the response started: the client stream is reset. */
  reset(error: string): void;
}

const HOP_REQ = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'http2-settings', 'host', L5D_ORIG_PROTO, 'l5d-client-id']);
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);

/**
 * The HTTP/1 request head for an upgraded HTTP/2 request, and its framing.
 * Throws BPFMESH_E_HTTP_MALFORMED for an l5d-orig-proto value that is not
 * Linkerd's (answered 400).
 */
export function h2RequestToH1(
  h: IncomingHttpHeaders,
  endStream: boolean,
  clientId: string | null | undefined,
): { head: string; chunked: boolean; method: string } {
  const raw = h[L5D_ORIG_PROTO];
  const value = Array.isArray(raw) ? raw[0] : raw;
  const orig = value === undefined ? null : parseOrigProto(value);
  if (orig === null) throw new BpfmeshError(HttpErrorCodes.MALFORMED, `${HttpErrorCodes.MALFORMED}: bad ${L5D_ORIG_PROTO} value ${JSON.stringify(String(value).slice(0, 60))}: expected HTTP/1.1 or HTTP/1.0, optionally "; absolute-form"`);
  const method = String(h[':method'] ?? 'GET');
  const authority = String(h[':authority'] ?? h.host ?? '');
  const path = String(h[':path'] ?? '/');
  const target = orig.absoluteForm ? `${String(h[':scheme'] ?? 'http')}://${authority}${path}` : path;
  let lines = authority === '' ? '' : `host: ${authority}\r\n`;
  let hasLength = false;
  for (const [name, v] of Object.entries(h)) {
    // l5d-*: the inbound proxy is the only one that sets them for the app.
    if (name.startsWith(':') || v === undefined || HOP_REQ.has(name) || name.startsWith('l5d-')) continue;
    if (name === 'content-length') hasLength = true;
    // HTTP/2 may split cookies into crumbs; HTTP/1 wants one field (RFC 9113 §8.2.3).
    if (name === 'cookie' && Array.isArray(v)) lines += `cookie: ${v.join('; ')}\r\n`;
    else for (const x of Array.isArray(v) ? v : [v]) lines += `${name}: ${String(x)}\r\n`;
  }
  if (typeof clientId === 'string') lines += `l5d-client-id: ${clientId}\r\n`;
  let chunked = false;
  let minor = orig.versionMinor;
  if (!hasLength) {
    if (endStream) {
      if (BODY_METHODS.has(method)) lines += 'content-length: 0\r\n';
    } else {
      // A body without a length: chunked, which needs HTTP/1.1.
      chunked = true;
      minor = 1;
      lines += 'transfer-encoding: chunked\r\n';
    }
  }
  return { head: `${method} ${target} HTTP/1.${minor}\r\n${lines}\r\n`, chunked, method };
}

/** HTTP/2 response headers for the app's HTTP/1 response, with l5d-orig-proto = its version. */
export function h1ResponseToH2(res: ResponseHead): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = { ':status': res.statusCode };
  const h = res.headers;
  for (let i = 0; i < h.length; i += 2) {
    if ((res.flags[i / 2]! & (HeaderFlag.HOP | HeaderFlag.UPGRADE)) !== 0) continue;
    const name = h[i]!.toLowerCase();
    if (CONNECTION_FIELDS.has(name) || name === L5D_ORIG_PROTO) continue;
    append(out, name, h[i + 1]!);
  }
  out[L5D_ORIG_PROTO] = `HTTP/1.${res.versionMinor === 0 ? 0 : 1}`;
  return out;
}

/**
 * One upgraded request sent to the app as HTTP/1 on a pooled keep-alive
 * connection (the HTTP/1 forwarder's pool, key (address, identity, http1)),
 * its response relayed back on the HTTP/2 stream with backpressure both ways.
 * Connecting, the response head, the replay and the pool hand-back are
 * http1/upstream-exchange.ts's, shared with the HTTP/1 forwarder; the
 * response body goes through its BodyPump, de-chunked (HTTP/2 frames it).
 */
export class Downgrade implements UpstreamWaiter {
  #up: UpstreamConn | null = null;
  #reused = false;
  #retried = false;
  #gotBytes = false;
  readonly #reader = new HeadReader();
  #res: ResponseHead | null = null;
  #resPump: BodyPump | null = null;
  #reqDone = false;
  #resDone = false;
  #done = false;
  #head = '';
  #chunked = false;
  #method = 'GET';
  #trailers: IncomingHttpHeaders | undefined;
  #responseTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly down: ServerHttp2Stream,
    private readonly headers: IncomingHttpHeaders,
    private readonly endStream: boolean,
    private readonly ep: Endpoint,
    private readonly ctx: DowngradeContext,
    private readonly sink: DowngradeSink,
  ) {}

  start(): void {
    let req: ReturnType<typeof h2RequestToH1>;
    try {
      req = h2RequestToH1(this.headers, this.endStream, this.ctx.clientId);
    } catch (err) {
      return this.sink.failed(400, err);
    }
    this.#head = req.head;
    this.#chunked = req.chunked;
    this.#method = req.method;
    this.#reqDone = this.endStream;
    this.ctx.metrics.origProto?.('downgraded');
    this.down.once('close', () => this.#teardown());
    openUpstream(this.ctx.pool, this.ep, this);
  }

  upstreamTarget(): UpstreamTarget {
    return { ep: this.ep, connect: this.ctx.connect, metrics: this.ctx.metrics, labels: this.ctx.labels };
  }

  wantsUpstream(): boolean {
    return !this.#done;
  }

  connectFailed(f: ConnectFailure, err: unknown): void {
    this.#finish();
    this.sink.failed(f.status, err);
  }

  attach(up: UpstreamConn, reused: boolean): void {
    this.#up = up;
    this.#reused = reused;
    this.#gotBytes = false;
    const sock = up.socket;
    sock.write(this.#head, 'latin1');
    // Counted from the end of the request, as on the HTTP/1 path.
    if (this.#reqDone) this.#armResponseTimer();
    if (!this.#reqDone && !this.#retried) this.#pumpRequest(sock);
    sock.resume();
  }

  #pumpRequest(sock: UpstreamConn['socket']): void {
    const down = this.down;
    down.on('data', (chunk: Buffer) => {
      if (this.#up === null || this.#up.socket !== sock) return;
      const ok = this.#chunked ? writeChunk(sock, chunk) : sock.write(chunk);
      if (!ok && !down.isPaused()) {
        down.pause();
        sock.once('drain', () => down.resume());
      }
    });
    down.on('trailers', (t: IncomingHttpHeaders) => (this.#trailers = t));
    down.once('end', () => {
      if ((down.rstCode ?? h2c.NGHTTP2_NO_ERROR) !== h2c.NGHTTP2_NO_ERROR) return;
      if (this.#up === null || this.#up.socket !== sock) return;
      if (this.#chunked) sock.write(lastChunk(this.#trailers, true));
      this.#reqDone = true;
      if (this.#res === null) this.#armResponseTimer();
      if (this.#resDone) this.#exchangeDone();
    });
  }

  onUpstreamData(up: UpstreamConn, chunk: Buffer): void {
    if (up !== this.#up) return;
    this.#gotBytes = true;
    if (this.#res === null) return this.#responseHead(up, chunk);
    this.#body(up, chunk);
  }

  #responseHead(up: UpstreamConn, chunk: Buffer): void {
    let res: ResponseHead | null;
    try {
      res = readResponseHead(this.#reader, chunk, this.#method === 'HEAD', this.#onInterim);
    } catch (err) {
      this.#finish();
      return this.sink.failed(502, err);
    }
    if (res === null) return;
    const rest = this.#reader.rest;
    // 101 cannot happen (no upgrade was asked) and is refused.
    if (res.statusCode === 101) {
      this.#finish();
      return this.sink.failed(502, new Error('the app switched protocols on a request that asked for no upgrade'));
    }
    this.#res = res;
    if (this.#responseTimer !== null) clearTimeout(this.#responseTimer);
    this.#responseTimer = null;
    const endStream = res.framing === 'none';
    try {
      this.down.respond(h1ResponseToH2(res), { endStream });
    } catch (err) {
      this.#finish();
      return this.sink.failed(502, err);
    }
    this.sink.responded(res.statusCode);
    if (endStream) return this.#responseDone(rest.length > 0);
    this.#resPump = new BodyPump(up.socket, this.down, res.framing, res.contentLength, true);
    if (rest.length > 0) this.#body(up, rest);
  }

  /** 100 Continue, 103 Early Hints pass on (before the response's own headers). */
  readonly #onInterim = (head: ResponseHead): void => {
    if (!this.down.headersSent) this.down.additionalHeaders({ ':status': head.statusCode });
  };

  #body(up: UpstreamConn, chunk: Buffer): void {
    let complete: boolean;
    try {
      complete = feedResponseBody(up, this.#resPump, chunk);
    } catch (err) {
      this.#finish();
      return this.sink.reset(`malformed response body: ${(err as Error).message}`);
    }
    if (complete) this.#responseDone(false);
  }

  #responseDone(extra: boolean): void {
    const up = this.#up!;
    if (extra) up.dead = true;
    this.#resDone = true;
    this.#resPump = null;
    if (!this.down.writableEnded) this.down.end();
    this.sink.ended();
    if (this.#reqDone) this.#exchangeDone();
    else {
      // The app answered before the whole request came: the connection is mid-request.
      this.#finish();
      this.down.resume();
    }
  }

  #exchangeDone(): void {
    const up = this.#up;
    this.#up = null;
    this.#done = true;
    if (up !== null) settleUpstream(this.ctx.pool, up, this.#res!.keepAlive);
  }

  onUpstreamEnd(up: UpstreamConn): void {
    this.#gone(up, undefined);
  }

  onUpstreamClose(up: UpstreamConn, err: Error | undefined): void {
    this.#gone(up, err);
  }

  #gone(up: UpstreamConn, err: Error | undefined): void {
    if (up !== this.#up || this.#done) return;
    if (this.#res !== null) {
      if (this.#resDone) return;
      // A close-delimited body ends with a FIN; a reset cuts it short.
      if (err === undefined && this.#resPump !== null && this.#resPump.eof()) return this.#responseDone(false);
      this.#finish();
      return this.sink.reset('upstream closed mid-response');
    }
    this.#up = null;
    dropUpstream(up);
    if (mayReplay(this.#reused, this.#gotBytes, this.#retried, this.endStream, this.#method)) {
      this.#retried = true;
      this.#reader.reset();
      return dialFor(this);
    }
    this.#finish();
    this.sink.failed(502, err ?? new Error('the app closed the connection before a response'));
  }

  /** The client stream went away: drop the upstream connection unless the exchange is complete. */
  #teardown(): void {
    if (this.#done) return;
    this.#finish();
  }

  /** From the end of the request, one timer per downgraded request (not the keep-alive hot path): an app that never answers must not hold the stream and its connection. */
  #armResponseTimer(): void {
    const ms = this.ctx.responseTimeoutMs;
    if (ms === undefined || ms <= 0 || this.#responseTimer !== null) return;
    this.#responseTimer = setTimeout(() => {
      this.#responseTimer = null;
      if (this.#res !== null || this.#done) return;
      this.#finish();
      this.sink.failed(504, new Error(`response timed out after ${ms} ms`));
    }, ms).unref();
  }

  #finish(): void {
    this.#done = true;
    if (this.#responseTimer !== null) clearTimeout(this.#responseTimer);
    this.#responseTimer = null;
    this.#resPump?.stop();
    this.#resPump = null;
    dropUpstream(this.#up);
    this.#up = null;
  }
}
