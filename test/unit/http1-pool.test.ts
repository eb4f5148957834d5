import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type Socket } from 'node:net';
import { Http1Pool, UpstreamConn, type UpstreamOwner } from '../../src/proxy/http1/pool.js';
import { listen, closeServer, waitFor } from '../helpers/http1.js';

// The upstream: keeps its sockets so a test can close them from the server side.
const serverSockets: Socket[] = [];
const server = createServer((s) => {
  serverSockets.push(s);
  s.on('error', () => {});
});
const portP = listen(server);
after(async () => {
  for (const s of serverSockets) s.destroy();
  await closeServer(server);
});

const owner: UpstreamOwner = { onUpstreamData: () => {}, onUpstreamEnd: () => {}, onUpstreamClose: () => {} };

async function conn(key = 'k'): Promise<UpstreamConn> {
  const port = await portP;
  const before = serverSockets.length;
  const s = connect({ port, host: '127.0.0.1' });
  await new Promise((r) => s.once('connect', r));
  await waitFor(() => serverSockets.length > before);
  const up = new UpstreamConn(s, key);
  up.owner = owner;
  return up;
}

test('a released connection is reused, most recent first', async () => {
  const pool = new Http1Pool({ idleMs: 1000 });
  const a = await conn();
  const b = await conn();
  assert.equal(pool.release(a), true);
  assert.equal(pool.release(b), true);
  assert.equal(pool.idleCount('k'), 2);
  assert.equal(pool.acquire('k', owner), b);
  assert.equal(b.owner, owner);
  assert.equal(pool.acquire('k', owner), a);
  assert.equal(pool.acquire('k', owner), undefined);
  assert.equal(a.uses, 1);
  a.destroy();
  b.destroy();
  pool.close();
});

test('idle connections expire after idleMs', async () => {
  const pool = new Http1Pool({ idleMs: 100 });
  const a = await conn();
  pool.release(a);
  await new Promise((r) => setTimeout(r, 60));
  const b = await conn();
  pool.release(b);
  await waitFor(() => a.socket.destroyed, 1000);
  assert.equal(b.socket.destroyed, false, 'b has not been idle long enough');
  assert.equal(pool.idleCount(), 1);
  await waitFor(() => b.socket.destroyed, 1000);
  assert.equal(pool.idleCount(), 0);
  pool.close();
});

test('at most maxIdlePerKey are kept; the rest are closed on release', async () => {
  const pool = new Http1Pool({ maxIdlePerKey: 1 });
  const a = await conn();
  const b = await conn();
  assert.equal(pool.release(a), true);
  assert.equal(pool.release(b), false);
  assert.ok(b.socket.destroyed);
  pool.close();
  assert.ok(a.socket.destroyed, 'close() closes the idle connections');
});

test('a connection the server closes while idle is dropped, never handed out', async () => {
  const pool = new Http1Pool();
  const a = await conn('dead');
  pool.release(a);
  serverSockets[serverSockets.length - 1]!.end();
  await waitFor(() => pool.idleCount('dead') === 0);
  assert.equal(pool.acquire('dead', owner), undefined);
  // One that is not reusable any more is not taken back.
  const b = await conn('dead');
  b.dead = true;
  assert.equal(pool.release(b), false);
  // A stray byte from the server while idle ends the connection too.
  const c = await conn('stray');
  pool.release(c);
  serverSockets[serverSockets.length - 1]!.write('x');
  await waitFor(() => c.socket.destroyed);
  assert.equal(pool.acquire('stray', owner), undefined);
  pool.close();
});
