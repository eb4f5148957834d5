// Test harness for the HTTP/1 layer: a recording ProxyMetrics, a Connector
// over net.connect, a proxy (detect + serveHttp1) on 127.0.0.1:0, a raw
// client and curl.
import { execFile } from 'node:child_process';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { BpfmeshError } from '../../src/errors.js';
import { detectProtocol } from '../../src/proxy/detect.js';
import type { RequestHead } from '../../src/proxy/http1/head-parser.js';
import { Http1Pool } from '../../src/proxy/http1/pool.js';
import { serveHttp1, type Drainable, type Http1Context, type Http1Log } from '../../src/proxy/http1/proxy-http1.js';
import type { Addr, Classification, ConnLabels, Connector, Peer, ProxyMetrics } from '../../src/proxy/types.js';

export type ResponseRecord = { statusCode: number; classification: Classification; grpcStatus?: number; error?: string; latencyMs: number };

/** A ProxyMetrics that records every call. */
export class RecordingMetrics implements ProxyMetrics {
  requests = 0;
  responses: ResponseRecord[] = [];
  opens: Peer[] = [];
  closes: { peer: Peer; errno: string | undefined }[] = [];
  read: Record<Peer, number> = { src: 0, dst: 0 };
  written: Record<Peer, number> = { src: 0, dst: 0 };

  tcpOpen(_l: ConnLabels, peer: Peer): void {
    this.opens.push(peer);
  }
  tcpClose(_l: ConnLabels, peer: Peer, errno?: string): void {
    this.closes.push({ peer, errno });
  }
  tcpRead(_l: ConnLabels, peer: Peer, bytes: number): void {
    this.read[peer] += bytes;
  }
  tcpWrite(_l: ConnLabels, peer: Peer, bytes: number): void {
    this.written[peer] += bytes;
  }
  request(): void {
    this.requests++;
  }
  response(_l: ConnLabels, r: ResponseRecord): void {
    this.responses.push(r);
  }
}

export const silentLog: Http1Log = { debug: () => {}, warn: () => {} };

/** A Connector over net.connect, with the codes the contract names. */
export function netConnector(timeoutMs = 1000): Connector {
  return (to: Addr) =>
    new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: to.host, port: to.port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new BpfmeshError('BPFMESH_E_CONNECT_TIMEOUT', `connect to ${to.host}:${to.port} timed out`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (err: Error & { code?: string }) => {
        clearTimeout(timer);
        reject(new BpfmeshError('BPFMESH_E_CONNECT', `connect to ${to.host}:${to.port}: ${err.message}`, { cause: err }));
      });
    });
}

export interface TestProxy {
  port: number;
  metrics: RecordingMetrics;
  pool: Http1Pool;
  /** The client connections being served, as drainHttp1 takes them. */
  live: Set<Drainable>;
  /** Protocols detected, in order of connections. */
  detected: string[];
  close(): Promise<void>;
}

export interface ProxyOptions {
  route: (head: RequestHead) => Addr | Promise<Addr>;
  responseTimeoutMs?: number;
  poolIdleMs?: number;
  connect?: Connector;
  /** Serve HTTP/1 even when detection says otherwise (to reach the parser's errors). */
  forceHttp1?: boolean;
  detectTimeoutMs?: number;
  clientIdleMs?: number;
  headTimeoutMs?: number;
  tunnelIdleMs?: number;
}

export async function startProxy(opts: ProxyOptions): Promise<TestProxy> {
  const metrics = new RecordingMetrics();
  const pool = new Http1Pool({ idleMs: opts.poolIdleMs ?? 3000 });
  const detected: string[] = [];
  const live = new Set<Drainable>();
  const sockets = new Set<Socket>();
  const labels: ConnLabels = { direction: 'outbound', target_addr: '127.0.0.1:0', tls: 'no_identity' };
  const ctx: Http1Context = {
    labels,
    route: opts.route,
    connect: opts.connect ?? netConnector(),
    metrics,
    live,
    pool,
    log: silentLog,
    ...(opts.responseTimeoutMs !== undefined ? { responseTimeoutMs: opts.responseTimeoutMs } : {}),
    ...(opts.clientIdleMs !== undefined ? { clientIdleMs: opts.clientIdleMs } : {}),
    ...(opts.headTimeoutMs !== undefined ? { headTimeoutMs: opts.headTimeoutMs } : {}),
    ...(opts.tunnelIdleMs !== undefined ? { tunnelIdleMs: opts.tunnelIdleMs } : {}),
  };
  const server: Server = createServer({ allowHalfOpen: true }, (sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    void detectProtocol(sock, { timeoutMs: opts.detectTimeoutMs ?? 2000 }).then((d) => {
      detected.push(d.protocol);
      if (d.protocol === 'http1' || opts.forceHttp1 === true) serveHttp1(sock, d.buffered, ctx);
      else sock.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    metrics,
    pool,
    live,
    detected,
    close: async () => {
      for (const s of sockets) s.destroy();
      pool.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Send raw bytes, collect everything until the server closes (or `untilMs`). */
export function rawExchange(port: number, data: string | Buffer | (string | Buffer)[], untilMs = 3000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1' });
    const parts: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ text: Buffer.concat(parts).toString('latin1'), closed: false });
    }, untilMs);
    s.on('data', (b: Buffer) => parts.push(b));
    s.on('error', reject);
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ text: Buffer.concat(parts).toString('latin1'), closed: true });
    });
    for (const d of Array.isArray(data) ? data : [data]) s.write(d);
  });
}

export function curl(args: string[], timeoutMs = 30000): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve) => {
    execFile('/usr/bin/curl', ['-sS', '--max-time', String(timeoutMs / 1000), ...args], { maxBuffer: 64 * 1024 * 1024, encoding: 'latin1' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1;
      resolve({ stdout, stderr, code });
    });
  });
}

/** An address where nothing listens. */
export async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

export async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

export async function closeServer(server: Server & { closeAllConnections?: () => void }): Promise<void> {
  server.closeAllConnections?.();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

export const waitFor = async (cond: () => boolean, ms = 2000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
};
