// Test rig for the HTTP/2 forwarder: a proxy (net.Server that reads the
// preface and calls serveH2), a recording ProxyMetrics, a Connector over
// net.connect, an upstream node:http2 server, and a curl runner.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import net, { type AddressInfo, type Socket } from 'node:net';
import pino from 'pino';
import { BpfmeshError } from '../../src/errors.js';
import { serveH2, type H2Connection, type H2Context } from '../../src/proxy/h2/index.js';
import type { Addr, ConnLabels, Connector, Peer, ProxyMetrics } from '../../src/proxy/types.js';

export const silentLog = pino({ level: 'silent' });

export type ResponseRecord = Parameters<ProxyMetrics['response']>[1] & { labels: ConnLabels };

/** A ProxyMetrics that remembers what it was told. */
export class RecordingMetrics implements ProxyMetrics {
  readonly requests: ConnLabels[] = [];
  readonly responses: ResponseRecord[] = [];
  tcpOpen(_l: ConnLabels, _p: Peer): void {}
  tcpClose(_l: ConnLabels, _p: Peer, _errno?: string): void {}
  tcpRead(_l: ConnLabels, _p: Peer, _n: number): void {}
  tcpWrite(_l: ConnLabels, _p: Peer, _n: number): void {}
  request(l: ConnLabels): void {
    this.requests.push(l);
  }
  response(l: ConnLabels, r: Parameters<ProxyMetrics['response']>[1]): void {
    this.responses.push({ ...r, labels: l });
  }
}

/** A Connector over net.connect, with the codes the real one uses. */
export function netConnector(timeoutMs = 1000): Connector {
  return (to: Addr) =>
    new Promise<Socket>((resolve, reject) => {
      const sock = net.connect({ host: to.host, port: to.port });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new BpfmeshError('BPFMESH_E_CONNECT_TIMEOUT', `connect to ${to.host}:${to.port} timed out`));
      }, timeoutMs);
      const onError = (err: Error): void => {
        clearTimeout(timer);
        reject(new BpfmeshError('BPFMESH_E_CONNECT', `connect to ${to.host}:${to.port}: ${err.message}`, { cause: err }));
      };
      sock.once('error', onError);
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeListener('error', onError);
        resolve(sock);
      });
    });
}

/** Reads until the 24-byte HTTP/2 preface is in, the way detection hands a socket over. */
export function readPreface(sock: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 24) return;
      sock.removeListener('data', onData);
      sock.removeListener('error', reject);
      sock.pause();
      resolve(buf);
    };
    sock.on('data', onData);
    sock.once('error', reject);
  });
}

export const LABELS: ConnLabels = { direction: 'outbound', target_addr: '127.0.0.1:1', tls: 'no_identity' };

export interface TestProxy {
  port: number;
  url: string;
  metrics: RecordingMetrics;
  conns: H2Connection[];
  /** The connections being served, as drainH2 takes them. */
  live: Set<H2Connection>;
  close(): Promise<void>;
}

export async function startProxy(ctx: Partial<H2Context> & Pick<H2Context, 'route'>): Promise<TestProxy> {
  const metrics = new RecordingMetrics();
  const conns: H2Connection[] = [];
  const full: H2Context = { labels: LABELS, connect: netConnector(), metrics, log: silentLog, live: new Set<H2Connection>(), ...ctx };
  const sockets = new Set<Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.once('close', () => sockets.delete(sock));
    readPreface(sock).then(
      (buf) => conns.push(serveH2(sock, buf, full)),
      () => sock.destroy(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    metrics: full.metrics as RecordingMetrics,
    conns,
    live: full.live,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.all(conns.map((c) => c.shutdown(100)));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

export interface Upstream {
  addr: Addr;
  server: http2.Http2Server;
  /** Sessions the upstream accepted (one per proxy connection to it). */
  sessions: number;
  /** Destroys the upstream's TCP connections, as a crash would. */
  dropConnections(): void;
  close(): Promise<void>;
}

export async function startUpstream(onStream: (stream: http2.ServerHttp2Stream, headers: IncomingHttpHeaders) => void): Promise<Upstream> {
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  const sockets = new Set<Socket>();
  // node:http2 forbids touching session.socket; the raw socket comes from 'connection'.
  server.on('connection', (sock: Socket) => {
    sockets.add(sock);
    sock.once('close', () => sockets.delete(sock));
  });
  const up: Upstream = {
    addr: { host: '127.0.0.1', port: 0 },
    server,
    sessions: 0,
    dropConnections: () => {
      for (const s of sockets) s.destroy();
    },
    close: async () => {
      for (const s of sessions) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  server.on('session', (s: http2.ServerHttp2Session) => {
    up.sessions++;
    sessions.add(s);
    s.once('close', () => sessions.delete(s));
  });
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    onStream(stream, headers);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  up.addr.port = (server.address() as AddressInfo).port;
  return up;
}

/** Writes one HTTP/2 frame. */
export type FrameWriter = (type: number, flags: number, streamId: number, payload?: Buffer) => void;

export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, GOAWAY: 7 } as const;
/** HPACK static table entry 8: ":status: 200". */
export const STATUS_200 = Buffer.from([0x88]);

/**
 * A hand-written HTTP/2 server speaking raw frames, for what node:http2 cannot
 * send (a RST_STREAM with any code while the response is open: its close()
 * sends END_STREAM first). Acknowledges SETTINGS, and calls `onRequest` with
 * the id of each HEADERS frame's stream.
 */
export async function startRawUpstream(onRequest: (streamId: number, send: FrameWriter) => void): Promise<{ addr: Addr; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.once('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    const send: FrameWriter = (type, flags, streamId, payload = Buffer.alloc(0)) => {
      const h = Buffer.alloc(9);
      h.writeUIntBE(payload.length, 0, 3);
      h[3] = type;
      h[4] = flags;
      h.writeUInt32BE(streamId, 5);
      sock.write(Buffer.concat([h, payload]));
    };
    send(FRAME.SETTINGS, 0, 0);
    let buf = Buffer.alloc(0);
    let preface = false;
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!preface) {
        if (buf.length < 24) return;
        buf = buf.subarray(24);
        preface = true;
      }
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) return;
        const type = buf[3];
        const flags = buf[4] ?? 0;
        const id = buf.readUInt32BE(5) & 0x7fffffff;
        buf = buf.subarray(9 + len);
        if (type === FRAME.SETTINGS && (flags & 1) === 0) send(FRAME.SETTINGS, 1, 0);
        if (type === FRAME.HEADERS) onRequest(id, send);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    addr: { host: '127.0.0.1', port: (server.address() as AddressInfo).port },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export function rstPayload(code: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(code);
  return b;
}

/** A port nothing listens on (bound, then closed). */
export async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

export interface Reply {
  headers: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders | undefined;
  body: Buffer;
  rstCode: number | undefined;
  /** 'end' came: END_STREAM, as far as node:http2 tells (see serve.ts on 'end' after a reset). */
  ended: boolean;
}

/** One request on a node:http2 client session; resolves when the stream closes. */
export function request(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body?: Buffer | string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = session.request(headers, { endStream: body === undefined });
    const chunks: Buffer[] = [];
    let resHeaders: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders | undefined;
    let ended = false;
    req.on('end', () => (ended = req.rstCode === undefined || req.rstCode === http2.constants.NGHTTP2_NO_ERROR));
    req.on('response', (h) => (resHeaders = h));
    req.on('trailers', (t: IncomingHttpHeaders) => (trailers = t));
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => {}); // the close event tells the outcome (rstCode)
    req.once('close', () => resolve({ headers: resHeaders, trailers, body: Buffer.concat(chunks), rstCode: req.rstCode, ended }));
    if (body !== undefined) req.end(body);
    req.once('frameError', reject);
  });
}

export function connectClient(url: string): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(url);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Deterministic bytes, different in every 64 KiB chunk, so a reordered or lost chunk changes the hash. */
export function chunk(i: number, size = 64 * 1024): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = (Math.imul(i + 1, 2654435761) >>> 0) || 1;
  for (let off = 0; off + 4 <= size; off += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, off);
  }
  return b;
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

export interface CurlResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function curl(args: string[], timeoutMs = 20_000): Promise<CurlResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('curl', ['--http2-prior-knowledge', '-sS', '--max-time', String(timeoutMs / 1000), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until `cond` holds, or fails after `ms`. */
export async function until(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}
