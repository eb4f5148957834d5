import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, request } from 'node:http';
import { networkInterfaces } from 'node:os';
import pino from 'pino';
import { Counter, Registry } from 'prom-client';
import { isLoopback, startAdminServer, type AdminServer } from '../../src/admin/server.js';

interface Reply {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

function call(port: number, method: string, path: string, host = '127.0.0.1', agent: Agent | false = false): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, method, path, localAddress: host, agent, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), headers: res.headers }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

const log = pino({ level: 'silent' });
const registry = new Registry();
new Counter({ name: 'admin_test_total', help: 'h', registers: [registry] }).inc(4);
let isReady = false;
let shutdowns = 0;
let enabled: AdminServer;
let disabled: AdminServer;
let wildcard: AdminServer;

before(async () => {
  const common = { registry, ready: () => isReady, log, onShutdown: () => void shutdowns++ };
  enabled = await startAdminServer({ ...common, host: '127.0.0.1', port: 0, shutdownEnabled: true });
  disabled = await startAdminServer({ ...common, host: '127.0.0.1', port: 0, shutdownEnabled: false });
  wildcard = await startAdminServer({ ...common, host: '0.0.0.0', port: 0, shutdownEnabled: true });
});

after(async () => {
  await Promise.all([enabled.close(), disabled.close(), wildcard.close()]);
});

test('GET /metrics serves the registry with its content type', async () => {
  const r = await call(enabled.address.port, 'GET', '/metrics');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], registry.contentType);
  assert.match(r.body, /^admin_test_total 4$/m);
});

test('/live and /ready', async () => {
  assert.deepEqual(await call(enabled.address.port, 'GET', '/live').then((r) => [r.status, r.body]), [200, 'live\n']);
  isReady = false;
  assert.deepEqual(await call(enabled.address.port, 'GET', '/ready').then((r) => [r.status, r.body]), [503, 'not ready\n']);
  isReady = true;
  assert.deepEqual(await call(enabled.address.port, 'GET', '/ready?verbose').then((r) => [r.status, r.body]), [200, 'ready\n']);
});

test('unknown paths are 404, wrong methods 405', async () => {
  assert.equal((await call(enabled.address.port, 'GET', '/nope')).status, 404);
  assert.equal((await call(enabled.address.port, 'GET', '/constructor')).status, 404);
  const r = await call(enabled.address.port, 'POST', '/metrics');
  assert.equal(r.status, 405);
  assert.equal(r.headers['allow'], 'GET, HEAD');
  assert.equal((await call(enabled.address.port, 'GET', '/shutdown')).status, 405);
});

test('POST /shutdown from loopback, when enabled', async () => {
  const before = shutdowns;
  assert.equal((await call(disabled.address.port, 'POST', '/shutdown')).status, 404);
  assert.equal(shutdowns, before, 'disabled: not called');
  const r = await call(enabled.address.port, 'POST', '/shutdown');
  assert.deepEqual([r.status, r.body], [200, 'shutdown\n']);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(shutdowns, before + 1);
});

test('POST /shutdown from a non-loopback address is refused', async (t) => {
  const ip = Object.values(networkInterfaces())
    .flat()
    .find((i) => i !== undefined && i.family === 'IPv4' && !i.internal)?.address;
  if (ip === undefined) return t.skip('this host has no non-loopback IPv4 address');
  const before = shutdowns;
  const r = await call(wildcard.address.port, 'POST', '/shutdown', ip);
  assert.equal(r.status, 403);
  assert.equal(shutdowns, before);
  assert.equal((await call(wildcard.address.port, 'GET', '/live', ip)).status, 200, 'the rest stays reachable');
});

test('loopback addresses', () => {
  for (const a of ['127.0.0.1', '127.3.4.5', '::1', '::ffff:127.0.0.1']) assert.equal(isLoopback(a), true, a);
  for (const a of ['10.0.0.1', '::ffff:10.0.0.1', '::', '0.0.0.0', '1270::1', undefined]) assert.equal(isLoopback(a), false, String(a));
});

test('a taken port is a BPFMESH_E_LISTEN error; close is idempotent', async () => {
  await assert.rejects(
    startAdminServer({ host: '127.0.0.1', port: enabled.address.port, registry, ready: () => true, shutdownEnabled: false, onShutdown: () => {}, log }),
    { code: 'BPFMESH_E_LISTEN', syscall: 'listen' },
  );
  const s = await startAdminServer({ host: '127.0.0.1', port: 0, registry, ready: () => true, shutdownEnabled: false, onShutdown: () => {}, log });
  // An idle keep-alive connection must not hold close() up.
  const agent = new Agent({ keepAlive: true });
  assert.equal((await call(s.address.port, 'GET', '/live', '127.0.0.1', agent)).status, 200);
  assert.equal(Object.values(agent.freeSockets).flat().length, 1, 'the connection stays open');
  await Promise.all([s.close(), s.close()]);
  agent.destroy();
  await assert.rejects(call(s.address.port, 'GET', '/live'), { code: 'ECONNREFUSED' });
});
