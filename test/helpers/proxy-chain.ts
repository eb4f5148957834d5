// Two proxies on loopback, as the lab has them in two pods: a client's bytes
// go to the outbound listener (or straight to the inbound one, as a peer
// outside the mesh would), the outbound side forwards to the inbound
// listener, and the inbound side to a recording node:http app. The real
// Proxy class with its config from parseProxyEnv; only the original
// destination, which the kernel path answers in a pod, comes from here
// (ProxyOptions.originalDst).
import http, { type IncomingMessage } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { parseProxyEnv } from '../../src/config/proxy-env.js';
import { createLogger } from '../../src/log/logger.js';
import { Proxy } from '../../src/proxy/proxy.js';
import type { Addr } from '../../src/proxy/types.js';

/** What the app's node:http server saw of one request. */
export interface SeenRequest {
  method: string;
  url: string;
  version: string;
  rawHeaders: string[];
  rawTrailers: string[];
  body: string;
}

/** A node:http server that records every request (and parse error) it gets. */
export class RecordingApp {
  readonly seen: SeenRequest[] = [];
  readonly errors: string[] = [];
  readonly server: http.Server;
  constructor(handler?: (req: IncomingMessage, res: http.ServerResponse, body: Buffer) => void) {
    this.server = http.createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (c: Buffer) => parts.push(c));
      req.on('end', () => {
        const body = Buffer.concat(parts);
        this.seen.push({ method: req.method ?? '', url: req.url ?? '', version: req.httpVersion, rawHeaders: req.rawHeaders, rawTrailers: req.rawTrailers, body: body.toString('latin1') });
        if (handler !== undefined) handler(req, res, body);
        else res.end('ok');
      });
    });
    this.server.on('clientError', (err: Error & { code?: string }, sock) => {
      this.errors.push(err.code ?? err.message);
      sock.destroy();
    });
  }
  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return (this.server.address() as AddressInfo).port;
  }
  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** What the inbound side forwards to: anything that listens on loopback. */
export interface AppLike {
  listen(): Promise<number>;
  close(): Promise<void>;
}

export interface Chain<A extends AppLike = RecordingApp> {
  app: A;
  appPort: number;
  proxy: Proxy;
  registry: Registry;
  outboundPort: number;
  inboundPort: number;
  metrics(): Promise<string>;
  close(): Promise<void>;
}

/**
 * The proxy (both directions) in this process, configured by `env`
 * (LINKERD2_PROXY_* / BPFMESH_PROXY_*); `logFd`: where its JSON log goes
 * (at warn), default nowhere.
 */
export async function startChain<A extends AppLike = RecordingApp>(env: NodeJS.ProcessEnv = {}, app?: A, logFd?: number): Promise<Chain<A>> {
  const theApp = (app ?? new RecordingApp()) as A;
  const appPort = await theApp.listen();
  const config = parseProxyEnv({
    LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR: '127.0.0.1:0',
    LINKERD2_PROXY_INBOUND_LISTEN_ADDR: '127.0.0.1:0',
    LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION: '',
    ...env,
  });
  const registry = new Registry();
  const log = logFd === undefined ? createLogger({ logFormat: 'json', logLevel: 'silent' }) : createLogger({ logFormat: 'json', logLevel: 'warn' }, logFd);
  let inbound: Addr = { host: '127.0.0.1', port: 0 };
  const proxy = new Proxy({
    config,
    registry,
    log,
    originalDst: (_s, direction) => (direction === 'outbound' ? inbound : { host: '127.0.0.1', port: appPort }),
  });
  await proxy.start();
  inbound = proxy.listening.inbound.find((a) => a.host === '127.0.0.1')!;
  const outbound = proxy.listening.outbound.find((a) => a.host === '127.0.0.1')!;
  return {
    app: theApp,
    appPort,
    proxy,
    registry,
    outboundPort: outbound.port,
    inboundPort: inbound.port,
    metrics: () => registry.metrics(),
    close: async () => {
      await proxy.shutdown(0);
      await theApp.close();
    },
  };
}

/**
 * Send `parts` (with `gapMs` between them) and read until the server closes
 * the connection or `untilMs` passes; the response bytes and whether it closed.
 */
export function exchange(port: number, parts: Buffer[], opts: { gapMs?: number; untilMs?: number; end?: boolean } = {}): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const got: Buffer[] = [];
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ text: Buffer.concat(got).toString('latin1'), closed });
    };
    const timer = setTimeout(() => finish(false), opts.untilMs ?? 2000);
    s.on('data', (b: Buffer) => got.push(b));
    s.on('error', () => finish(true));
    s.on('end', () => finish(true));
    s.on('close', () => finish(true));
    void (async () => {
      for (const [i, p] of parts.entries()) {
        if (i > 0 && (opts.gapMs ?? 0) > 0) await new Promise((r) => setTimeout(r, opts.gapMs));
        if (s.destroyed) return;
        s.write(p);
      }
      if (opts.end === true && !s.destroyed) s.end();
    })();
  });
}

/** Sums the samples named `name` whose labels include `labels`. */
export function sampleOf(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}
