// The proxy's admin server, Linkerd's endpoints: GET /metrics, /live, /ready
// and POST /shutdown (loopback callers only, and only when enabled).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { stripMapped, type Addr } from '../util/addr.js';

export interface AdminServerOptions {
  host: string;
  port: number;
  registry: Registry;
  /** /ready answers 200 while this is true (Linkerd: once the first certificate is installed). */
  ready: () => boolean;
  shutdownEnabled: boolean;
  /** Called once per accepted POST /shutdown, after the response is sent. */
  onShutdown: () => void;
  log: Logger;
}

export interface AdminServer {
  address: Addr;
  close(): Promise<void>;
}

/** 127.0.0.0/8, ::1, and 127.x written as IPv4-mapped IPv6. */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  const v4 = stripMapped(address);
  if (isIP(v4) === 4) return v4.startsWith('127.');
  return address === '::1';
}

function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

type Route = { methods: readonly string[]; handle: (req: IncomingMessage, res: ServerResponse) => void | Promise<void> };

export async function startAdminServer(opts: AdminServerOptions): Promise<AdminServer> {
  const { registry, log } = opts;
  const routes: Record<string, Route> = {
    '/metrics': {
      methods: ['GET', 'HEAD'],
      handle: async (_req, res) => {
        const body = await registry.metrics();
        send(res, 200, body, { 'content-type': registry.contentType });
      },
    },
    '/live': { methods: ['GET', 'HEAD'], handle: (_req, res) => send(res, 200, 'live\n') },
    '/ready': {
      methods: ['GET', 'HEAD'],
      handle: (_req, res) => (opts.ready() ? send(res, 200, 'ready\n') : send(res, 503, 'not ready\n')),
    },
    '/shutdown': {
      methods: ['POST'],
      handle: (req, res) => {
        // Not enabled: as if there were no such endpoint.
        if (!opts.shutdownEnabled) return send(res, 404, 'not found\n');
        if (!isLoopback(req.socket.remoteAddress)) {
          log.warn({ remote: req.socket.remoteAddress }, 'shutdown refused: not a loopback caller');
          return send(res, 403, 'shutdown is only accepted from localhost\n');
        }
        log.info('shutdown requested on the admin endpoint');
        res.on('finish', () => opts.onShutdown());
        send(res, 200, 'shutdown\n');
      },
    },
  };

  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    if (route === undefined) return send(res, 404, 'not found\n');
    if (!route.methods.includes(req.method ?? '')) return send(res, 405, 'method not allowed\n', { allow: route.methods.join(', ') });
    Promise.resolve()
      .then(() => route.handle(req, res))
      .catch((err: unknown) => {
        log.error({ err, path }, 'admin request failed');
        if (!res.headersSent) send(res, 500, 'internal error\n');
        else res.destroy();
      });
  });
  // Scrapers and probes keep connections open; do not let one hold the server.
  server.keepAliveTimeout = 5_000;

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(
        new BpfmeshError(ErrorCodes.LISTEN, `admin server: cannot listen on ${opts.host}:${opts.port}: ${err.code ?? err.message}`, {
          errno: typeof err.errno === 'number' ? Math.abs(err.errno) : 0,
          syscall: err.syscall ?? 'listen',
          cause: err,
        }),
      );
    };
    server.once('error', onError);
    server.listen(opts.port, opts.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ err }, 'admin server error'));
  const a = server.address() as AddressInfo;
  log.debug({ host: a.address, port: a.port }, 'admin server listening');

  let closing: Promise<void> | undefined;
  return {
    address: { host: a.address, port: a.port },
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      })),
  };
}
