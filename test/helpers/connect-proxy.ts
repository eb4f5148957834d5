// A small real HTTP CONNECT proxy on 127.0.0.1 for tests of proxy-url: it
// opens a TCP connection to the asked target and splices the two sockets.
// Records each CONNECT (target, Proxy-Authorization); can require a
// password (407 otherwise) or refuse every tunnel (403).
import { createServer, type IncomingMessage } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';

export interface ConnectProxy {
  url: string;
  port: number;
  readonly tunnels: Array<{ target: string; auth: string | undefined }>;
  refuse: boolean;
  close(): Promise<void>;
}

export async function startConnectProxy(opts: { basicAuth?: string } = {}): Promise<ConnectProxy> {
  const sockets = new Set<Socket>();
  const track = (s: Socket): void => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  };
  const state: Pick<ConnectProxy, 'tunnels' | 'refuse'> = { tunnels: [], refuse: false };
  const server = createServer((_req, res) => res.writeHead(405).end('CONNECT only\n'));
  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    track(client);
    const auth = req.headers['proxy-authorization'];
    state.tunnels.push({ target: req.url ?? '', auth });
    if (opts.basicAuth !== undefined && auth !== `Basic ${Buffer.from(opts.basicAuth).toString('base64')}`) {
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\n\r\n');
      return;
    }
    if (state.refuse) {
      client.end('HTTP/1.1 403 Forbidden\r\n\r\n');
      return;
    }
    const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(req.url ?? '');
    if (!m) {
      client.end('HTTP/1.1 400 Bad Request\r\n\r\n');
      return;
    }
    const upstream = connect({ host: m[1]!, port: Number(m[2]) });
    track(upstream);
    upstream.once('connect', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.once('error', () => client.destroy());
    client.once('error', () => upstream.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return Object.assign(state, {
    url: `http://127.0.0.1:${port}`,
    port,
    async close() {
      for (const s of sockets) s.destroy();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  });
}
