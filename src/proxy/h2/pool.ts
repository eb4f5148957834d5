// One HTTP/2 client session per upstream endpoint, shared by every stream
// to it (multiplexing). Sessions are keyed by address, expected identity and
// protocol (types.ts endpointKey), so one address under two identities never
// shares a session. A session that closes, errors or receives GOAWAY
// leaves the pool at once, so the next stream opens a fresh one while the
// old one finishes what it carries.
import http2, { constants as h2, type ClientHttp2Session, type ClientHttp2Stream, type ClientSessionRequestOptions, type OutgoingHttpHeaders } from 'node:http2';
import type { Socket } from 'node:net';
import { BpfmeshError, ErrorCodes } from '../../errors.js';
import { asEndpoint, endpointKey, formatAddr, type Connector, type Endpoint, type RouteTarget } from '../types.js';
import { H2ErrorCodes, resetName } from './codes.js';
import { resolveSettings, type H2Log, type H2Settings, type ResolvedH2Settings } from './settings.js';

interface Entry {
  readonly key: string;
  session: Promise<ClientHttp2Session>;
  /** Set once connected; undefined while connecting. */
  live: ClientHttp2Session | undefined;
  active: number;
  idle: NodeJS.Timeout | undefined;
  /** Why the session failed, for the status of the streams it took down. */
  failure: Error | undefined;
  /** Resolves at the peer's first SETTINGS: it speaks HTTP/2. Rejects (BPFMESH_E_PEER_NOT_H2 among others) when the session ends first. */
  ready: Promise<ClientHttp2Session>;
  settled: boolean;
  resolveReady: (s: ClientHttp2Session) => void;
  rejectReady: (err: Error) => void;
}

/**
 * The peer answered the HTTP/2 preface with something that is not HTTP/2
 * (an HTTP/1 server's 400, garbage), or refused with HTTP_1_1_REQUIRED,
 * before its first SETTINGS. Nothing was processed: the request may go
 * again over HTTP/1. Never reaches a client (the caller falls back).
 */
export const PEER_NOT_H2 = ErrorCodes.PEER_NOT_H2;

/** A stream opened on a pooled session. */
export interface UpstreamStream {
  readonly stream: ClientHttp2Stream;
  /** The error that ended the stream's session, if one did (e.g. a handshake timeout). */
  failure(): Error | undefined;
}

export class H2UpstreamPool {
  private readonly entries = new Map<string, Entry>();
  private readonly all = new Set<ClientHttp2Session>();
  private readonly settings: ResolvedH2Settings;
  private readonly log: H2Log;
  private closing = false;
  private opened = 0;

  constructor(opts: { log: H2Log; settings?: H2Settings }) {
    this.log = opts.log;
    this.settings = resolveSettings(opts.settings);
  }

  /** Sessions opened since the pool was made (each one a TCP connection). */
  get sessionsOpened(): number {
    return this.opened;
  }

  /** Sessions open now. */
  get size(): number {
    return this.all.size;
  }

  /**
   * Opens a stream to `to`, on the endpoint's shared session, connecting
   * first if there is none. `cancelled` is asked once the session is ready,
   * so a request the client gave up on while the proxy connected is never
   * sent (returns undefined). Rejects with the connector's error.
   */
  async request(
    target: RouteTarget,
    connect: Connector,
    headers: OutgoingHttpHeaders,
    options: ClientSessionRequestOptions,
    cancelled: () => boolean,
  ): Promise<UpstreamStream | undefined> {
    const to = asEndpoint(target);
    for (let attempt = 0; ; attempt++) {
      if (this.closing) throw new BpfmeshError(ErrorCodes.CLOSED, 'the HTTP/2 upstream pool is closed');
      const entry = this.entries.get(endpointKey(to, 'h2')) ?? this.open(to, connect);
      const session = await entry.session;
      if (cancelled()) return undefined;
      // A session that began closing (GOAWAY, or closed here) takes no new
      // stream: nothing was sent, so one more try on a fresh session is safe.
      // Checked first: Node 24's request() no longer throws for it, it hands
      // back a stream that errors later (ERR_HTTP2_GOAWAY_SESSION).
      if (session.closed || session.destroyed) {
        this.evict(entry);
        if (attempt > 0) throw new BpfmeshError(ErrorCodes.CLOSED, `the HTTP/2 session to ${entry.key} closed before the request could start`);
        continue;
      }
      try {
        const stream = session.request(headers, options);
        this.track(entry, stream);
        return { stream, failure: () => entry.failure };
      } catch (err) {
        // Node 22 and older throw for a closing session (handled above); what
        // is left (a header node:http2 refuses) is the request's fault.
        if (!(session.closed || session.destroyed) || attempt > 0) throw err;
        this.evict(entry);
      }
    }
  }

  /**
   * The endpoint's session once the peer has sent its SETTINGS (so it speaks
   * HTTP/2), connecting first if needed. Rejects with the connector's error,
   * BPFMESH_E_PEER_NOT_H2 (see PEER_NOT_H2), or the session's failure.
   */
  async ready(to: Endpoint, connect: Connector): Promise<ClientHttp2Session> {
    if (this.closing) throw new BpfmeshError(ErrorCodes.CLOSED, 'the HTTP/2 upstream pool is closed');
    const entry = this.entries.get(endpointKey(to, 'h2')) ?? this.open(to, connect);
    await entry.session;
    return entry.ready;
  }

  /** Closes every session gracefully (their streams finish); resolves when all are closed. */
  async close(): Promise<void> {
    this.closing = true;
    const entries = [...this.entries.values()];
    for (const e of entries) this.evict(e);
    await Promise.all(
      [...this.all].map((s) => new Promise<void>((resolve) => (s.closed ? resolve() : (s.once('close', () => resolve()), s.close())))),
    );
  }

  private open(to: Endpoint, connect: Connector): Entry {
    const key = endpointKey(to, 'h2');
    const entry = { key, live: undefined, active: 0, idle: undefined, failure: undefined, settled: false } as unknown as Entry;
    entry.ready = new Promise<ClientHttp2Session>((resolve, reject) => {
      entry.resolveReady = (s) => {
        entry.settled = true;
        resolve(s);
      };
      entry.rejectReady = (e) => {
        entry.settled = true;
        reject(e);
      };
    });
    entry.ready.catch(() => {});
    entry.session = connect(to.addr, to).then((sock) => this.handshake(entry, to, sock));
    // A failed connect leaves the pool so the next request tries again; the
    // waiting requests get the rejection (and this catch keeps it handled).
    entry.session.catch((err: Error) => {
      entry.rejectReady(err);
      this.evict(entry);
    });
    this.entries.set(key, entry);
    return entry;
  }

  private handshake(entry: Entry, to: Endpoint, sock: Socket): ClientHttp2Session {
    if (this.closing) {
      sock.destroy();
      throw new BpfmeshError(ErrorCodes.CLOSED, 'the HTTP/2 upstream pool is closed');
    }
    const s = this.settings;
    sock.on('error', (err) => this.log.debug({ err, upstream: entry.key }, 'h2 upstream socket error'));
    const session = http2.connect(`http://${formatAddr(to.addr)}`, {
      createConnection: () => sock,
      settings: { enablePush: false, initialWindowSize: s.streamWindowBytes, maxHeaderListSize: s.maxHeaderListBytes },
      maxSessionMemory: s.maxSessionMemoryMb,
      maxHeaderListPairs: s.maxHeaderListPairs,
    });
    this.opened++;
    this.all.add(session);
    entry.live = session;
    // Until the upstream's SETTINGS arrive, streams queue in the session; an
    // endpoint that accepts TCP but does not speak HTTP/2 must not hold them forever.
    const handshake = setTimeout(() => {
      entry.failure ??= new BpfmeshError(H2ErrorCodes.CONNECT_TIMEOUT, `no HTTP/2 SETTINGS from ${entry.key} within ${s.upstreamHandshakeMs} ms`);
      session.destroy();
    }, s.upstreamHandshakeMs);
    // 'connect' only means the socket is ready; the peer speaking HTTP/2 is its first SETTINGS.
    session.once('remoteSettings', () => {
      clearTimeout(handshake);
      entry.resolveReady(session);
    });
    session.once('connect', () => session.setLocalWindowSize(s.connectionWindowBytes));
    session.on('error', (err: Error & { code?: string }) => {
      // nghttp2 could not parse what came back before any SETTINGS: not an HTTP/2 peer.
      if (!entry.settled && err.code === 'ERR_HTTP2_ERROR') entry.failure ??= notH2(entry.key, err.message);
      entry.failure ??= err;
      this.log.debug({ err, upstream: entry.key }, 'h2 upstream session error');
    });
    session.on('goaway', (code: number) => {
      if (code === h2.NGHTTP2_HTTP_1_1_REQUIRED && !entry.settled) entry.failure ??= notH2(entry.key, 'GOAWAY HTTP_1_1_REQUIRED');
      if (code !== h2.NGHTTP2_NO_ERROR) entry.failure ??= new Error(`upstream ${entry.key} sent GOAWAY (${resetName(code)})`);
      this.evict(entry);
    });
    session.once('close', () => {
      clearTimeout(handshake);
      if (!entry.settled) entry.rejectReady(entry.failure ?? new BpfmeshError(H2ErrorCodes.CONNECT, `HTTP/2 session to ${entry.key} closed before its SETTINGS`));
      this.all.delete(session);
      this.evict(entry);
    });
    return session;
  }

  private track(entry: Entry, stream: ClientHttp2Stream): void {
    entry.active++;
    if (entry.idle !== undefined) clearTimeout(entry.idle);
    entry.idle = undefined;
    stream.once('close', () => {
      entry.active--;
      if (entry.active > 0 || this.entries.get(entry.key) !== entry) return;
      entry.idle = setTimeout(() => {
        if (entry.active === 0) this.evict(entry);
      }, this.settings.upstreamIdleMs);
      // An idle upstream connection alone must not keep the process up.
      entry.idle.unref();
    });
  }

  /** Takes the entry out of the pool; its session closes once its streams are done. */
  private evict(entry: Entry): void {
    if (this.entries.get(entry.key) === entry) this.entries.delete(entry.key);
    if (entry.idle !== undefined) clearTimeout(entry.idle);
    entry.idle = undefined;
    const s = entry.live;
    if (s !== undefined && !s.closed && !s.destroyed) s.close();
  }
}

function notH2(key: string, why: string): BpfmeshError {
  return new BpfmeshError(PEER_NOT_H2, `${key} does not speak HTTP/2 (${why})`);
}
