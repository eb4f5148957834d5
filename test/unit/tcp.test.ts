import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { spawn, type ChildProcess } from 'node:child_process';
import { connectTo, errnoOf, forwardOpaque } from '../../src/proxy/tcp.js';
import type { ConnLabels, Peer, ProxyMetrics } from '../../src/proxy/types.js';

const MiB = 1024 * 1024;
const labels: ConnLabels = { direction: 'outbound', target_addr: '127.0.0.1:0', tls: 'no_identity' };

interface Recorded {
  opens: Peer[];
  closes: Array<[Peer, string | undefined]>;
  read: Record<Peer, number>;
  written: Record<Peer, number>;
}

function recorder(): ProxyMetrics & { rec: Recorded } {
  const rec: Recorded = { opens: [], closes: [], read: { src: 0, dst: 0 }, written: { src: 0, dst: 0 } };
  return {
    rec,
    tcpOpen: (_l, peer) => void rec.opens.push(peer),
    tcpClose: (_l, peer, errno) => void rec.closes.push([peer, errno]),
    tcpRead: (_l, peer, n) => void (rec.read[peer] += n),
    tcpWrite: (_l, peer, n) => void (rec.written[peer] += n),
    request: () => {},
    response: () => {},
  };
}

const servers: Server[] = [];
const sockets: Socket[] = [];
after(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
});

interface Listener {
  port: number;
  /** The next accepted socket, in accept order. */
  next(): Promise<Socket>;
}

async function listen(): Promise<Listener> {
  const accepted: Socket[] = [];
  const waiting: Array<(s: Socket) => void> = [];
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.push(s);
    const w = waiting.shift();
    if (w) w(s);
    else accepted.push(s);
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as { port: number }).port,
    next: () => {
      const s = accepted.shift();
      return s ? Promise.resolve(s) : new Promise((resolve) => waiting.push(resolve));
    },
  };
}

interface Relay {
  client: Socket;
  upstream: Socket;
  done: Promise<void>;
}

/** A proxy in front of `upstreamPort`; like the real one, accepted sockets start paused (detection). */
async function startProxy(upstreamPort: number, metrics: ProxyMetrics, replay = Buffer.alloc(0)): Promise<{ port: number; relays: Promise<Relay>[] }> {
  const relays: Promise<Relay>[] = [];
  // No allowHalfOpen here: forwardOpaque must allow half-open connections itself.
  const server = createServer({ pauseOnConnect: true }, (client) => {
    sockets.push(client);
    const relay = connectTo({ host: '127.0.0.1', port: upstreamPort }, 2000).then((upstream) => {
      sockets.push(upstream);
      return { client, upstream, done: forwardOpaque(client, replay, upstream, labels, metrics) };
    });
    relay.catch(() => client.destroy()); // tests that care await it
    relays.push(relay);
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as { port: number }).port, relays };
}

async function dial(port: number): Promise<Socket> {
  const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  sockets.push(s);
  await once(s, 'connect');
  return s;
}

/** Writes `total` random bytes with backpressure, then ends; resolves to their sha256. */
async function sendRandom(s: Socket, total: number): Promise<string> {
  const h = createHash('sha256');
  for (let sent = 0; sent < total; ) {
    const chunk = randomBytes(Math.min(MiB, total - sent));
    h.update(chunk);
    sent += chunk.length;
    if (!s.write(chunk)) await once(s, 'drain');
  }
  s.end();
  return h.digest('hex');
}

/** Reads until end; resolves to the sha256 and length of what arrived. */
function receiveHash(s: Socket): Promise<{ hash: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  s.on('data', (c: Buffer) => {
    h.update(c);
    bytes += c.length;
  });
  return once(s, 'end').then(() => ({ hash: h.digest('hex'), bytes }));
}

/** Resolves on 'close' whatever came before (events.once would reject on 'error'). */
const closed = (s: Socket): Promise<void> => new Promise((resolve) => s.once('close', () => resolve()));

function collect(s: Socket): Promise<string> {
  let text = '';
  s.setEncoding('latin1');
  s.on('data', (c: string) => (text += c));
  return once(s, 'end').then(() => text);
}

/** A listener in a child process that never accepts: once its queue is full, SYNs go unanswered. */
async function unresponsiveListener(): Promise<{ port: number; child: ChildProcess }> {
  const code = `const s = require('net').createServer();
s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
  process.stdout.write(s.address().port + '\\n');
  setTimeout(() => {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30000);
    process.exit(0); // in case nobody killed it
  }, 20);
});`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(child.stdout, 'data')) as [Buffer];
  await new Promise((resolve) => setTimeout(resolve, 100)); // let it block
  return { port: Number(line.toString().trim()), child };
}

test('connectTo: refused and timed-out connects have stable codes', { timeout: 30_000 }, async () => {
  const tmp = createServer().listen(0, '127.0.0.1');
  await once(tmp, 'listening');
  const port = (tmp.address() as { port: number }).port;
  await new Promise((resolve) => tmp.close(resolve)); // nobody listens there any more
  await assert.rejects(connectTo({ host: '127.0.0.1', port }, 1000), (err: Error & { code?: string; errno?: number; syscall?: string }) => {
    assert.equal(err.code, 'BPFMESH_E_CONNECT');
    assert.equal(err.syscall, 'connect');
    assert.ok((err.errno ?? 0) > 0);
    assert.match(err.message, /ECONNREFUSED/);
    assert.equal(errnoOf(err), 'ECONNREFUSED', 'the errno label of a failed connect');
    return true;
  });

  const { port: stuck, child } = await unresponsiveListener();
  const fillers: Socket[] = [];
  try {
    let timedOutAfter = -1;
    for (let i = 0; i < 8 && timedOutAfter < 0; i++) {
      const t0 = Date.now();
      try {
        fillers.push(await connectTo({ host: '127.0.0.1', port: stuck }, 300));
      } catch (err) {
        assert.equal((err as { code?: string }).code, 'BPFMESH_E_CONNECT_TIMEOUT');
        assert.equal(errnoOf(err), 'ETIMEDOUT');
        timedOutAfter = Date.now() - t0;
      }
    }
    assert.ok(timedOutAfter >= 250 && timedOutAfter < 2000, `timed out after ${timedOutAfter} ms`);
  } finally {
    for (const s of fillers) s.destroy();
    child.kill('SIGKILL');
  }

  const up = await listen();
  const s = await connectTo({ host: '127.0.0.1', port: up.port }, 1000);
  assert.equal(s.allowHalfOpen, true);
  s.destroy();
});

test('100 MiB each way arrive byte-identical and are counted per peer', { timeout: 120_000 }, async () => {
  const size = 100 * MiB;
  const m = recorder();
  const up = await listen();
  const proxy = await startProxy(up.port, m);
  const client = await dial(proxy.port);
  const server = await up.next();
  const atServer = receiveHash(server);
  const atClient = receiveHash(client);
  const [clientSent, serverSent] = await Promise.all([sendRandom(client, size), sendRandom(server, size)]);
  const [gotServer, gotClient] = await Promise.all([atServer, atClient]);
  assert.equal(gotServer.bytes, size);
  assert.equal(gotServer.hash, clientSent);
  assert.equal(gotClient.bytes, size);
  assert.equal(gotClient.hash, serverSent);
  await (await proxy.relays[0]!).done;
  assert.deepEqual(m.rec.read, { src: size, dst: size });
  assert.deepEqual(m.rec.written, { src: size, dst: size });
  assert.deepEqual(m.rec.opens.sort(), ['dst', 'src']);
  assert.deepEqual(m.rec.closes.sort(), [['dst', undefined], ['src', undefined]]);
});

test('half-close from the client: the response still flows back', { timeout: 10_000 }, async () => {
  const m = recorder();
  const up = await listen();
  const proxy = await startProxy(up.port, m);
  const client = await dial(proxy.port);
  const reply = collect(client);
  client.end('request');
  const server = await up.next();
  const req = await collect(server);
  assert.equal(server.writable, true, 'the upstream can still write after the FIN');
  server.end(`got ${req.length} bytes: ${req}`);
  assert.equal(await reply, 'got 7 bytes: request');
  await (await proxy.relays[0]!).done;
  assert.deepEqual(m.rec.closes.sort(), [['dst', undefined], ['src', undefined]]);
});

test('half-close from the upstream: the client can still send', { timeout: 10_000 }, async () => {
  const m = recorder();
  const up = await listen();
  const proxy = await startProxy(up.port, m);
  const client = await dial(proxy.port);
  const server = await up.next();
  const received = collect(server);
  server.end('greeting');
  assert.equal(await collect(client), 'greeting');
  // The upstream's FIN arrived at the client; the client's direction is still open.
  client.end('after the fin');
  assert.equal(await received, 'after the fin');
  await (await proxy.relays[0]!).done;
  assert.deepEqual(m.rec.closes.sort(), [['dst', undefined], ['src', undefined]]);
});

test('a reset from the upstream resets the client and is counted with its errno', { timeout: 10_000 }, async () => {
  const m = recorder();
  const up = await listen();
  const proxy = await startProxy(up.port, m);
  const client = await dial(proxy.port);
  let clientError: string | undefined;
  client.on('error', (e: NodeJS.ErrnoException) => (clientError = e.code));
  const clientClosed = closed(client);
  client.write('hello');
  const server = await up.next();
  await once(server, 'data');
  server.resetAndDestroy();
  await clientClosed;
  await (await proxy.relays[0]!).done;
  assert.equal(clientError, 'ECONNRESET', 'the client sees a reset, not a clean end');
  assert.deepEqual(m.rec.closes.sort(), [['dst', 'ECONNRESET'], ['src', undefined]]);
});

test('a reset from the client closes the upstream and is counted with its errno', { timeout: 10_000 }, async () => {
  const m = recorder();
  const up = await listen();
  const proxy = await startProxy(up.port, m);
  const client = await dial(proxy.port);
  client.write('hello');
  const server = await up.next();
  server.on('error', () => {});
  const serverClosed = closed(server);
  await once(server, 'data');
  client.resetAndDestroy();
  const relay = await proxy.relays[0]!;
  await relay.done;
  await serverClosed;
  assert.equal(relay.upstream.destroyed, true);
  assert.deepEqual(m.rec.closes.sort(), [['dst', undefined], ['src', 'ECONNRESET']]);
});

test('replayed bytes reach the upstream first and count as read from src', { timeout: 10_000 }, async () => {
  const m = recorder();
  const up = await listen();
  const replay = Buffer.from('GET / HTTP/1.1\r\n');
  const proxy = await startProxy(up.port, m, replay);
  const client = await dial(proxy.port);
  client.end('rest of the stream');
  const server = await up.next();
  assert.equal(await collect(server), 'GET / HTTP/1.1\r\nrest of the stream');
  server.end();
  await (await proxy.relays[0]!).done;
  assert.equal(m.rec.read.src, replay.length + 18);
  assert.equal(m.rec.written.dst, replay.length + 18);
});

test('backpressure: a slow reader keeps the proxy buffers bounded', { timeout: 120_000 }, async () => {
  const total = 200 * MiB;
  const m = recorder();
  const up = await listen();
  const proxy = await startProxy(up.port, m);
  const client = await dial(proxy.port);
  const block = randomBytes(MiB);
  let senderBlocked = 0;
  const sending = (async () => {
    for (let sent = 0; sent < total; sent += MiB) {
      if (!client.write(block)) {
        senderBlocked++;
        await once(client, 'drain');
      }
    }
    client.end();
  })();
  const server = await up.next();
  // Reads about 128 KiB per millisecond at most: far slower than the sender.
  let received = 0;
  let budget = 128 * 1024;
  server.on('data', (c: Buffer) => {
    received += c.length;
    budget -= c.length;
    if (budget <= 0) {
      server.pause();
      setTimeout(() => {
        budget = 128 * 1024;
        server.resume();
      }, 1);
    }
  });
  const relay = await proxy.relays[0]!;
  let maxBuffered = 0;
  const sampler = setInterval(() => {
    maxBuffered = Math.max(maxBuffered, relay.upstream.writableLength + relay.client.readableLength);
  }, 2);
  try {
    await sending;
    await once(server, 'end');
  } finally {
    clearInterval(sampler);
  }
  server.end();
  await relay.done;
  assert.equal(received, total);
  assert.ok(senderBlocked > 10, `the sender was held back ${senderBlocked} times`);
  assert.ok(maxBuffered < 1 * MiB, `the proxy buffered up to ${maxBuffered} bytes`);
  assert.equal(m.rec.read.src, total);
  assert.equal(m.rec.written.dst, total);
});
