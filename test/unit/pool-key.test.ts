// Routes carry the chosen endpoint to the connector, and upstream pools key
// by (address, identity, protocol): one address under two identities never
// shares a connection. Real sockets, real node:http2, and a real control
// plane for the discovery part.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttp, Agent, request as httpRequest } from 'node:http';
import http2 from 'node:http2';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { Registry } from 'prom-client';
import { DestinationResolver } from '../../src/control/destination.js';
import { H2UpstreamPool } from '../../src/proxy/h2/index.js';
import { Http1Pool } from '../../src/proxy/http1/pool.js';
import { serveHttp1, type Drainable } from '../../src/proxy/http1/proxy-http1.js';
import { Router } from '../../src/proxy/router.js';
import { endpointKey, type Addr, type Connector, type Endpoint } from '../../src/proxy/types.js';
import { netConnector, RecordingMetrics, silentLog } from '../helpers/h2.js';
import { silent, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

const servers: Server[] = [];
let h1: Addr;
let h2: Addr;
let cp: TestControlPlane;

before(async () => {
  const s1 = createHttp((req, res) => res.end(`ok ${req.url}`));
  const s2 = http2.createServer((req, res) => res.end(`ok ${req.url}`));
  for (const s of [s1, s2]) {
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  }
  h1 = { host: '127.0.0.1', port: (s1.address() as AddressInfo).port };
  h2 = { host: '127.0.0.1', port: (s2.address() as AddressInfo).port };
  cp = await startTestControlPlane(`
trustDomain: cluster.local
services:
  - name: web.ns.svc.cluster.local:8080
    labels: { service: web, namespace: ns }
    endpoints:
      - { addr: 10.0.0.2:8080, identity: web.ns.serviceaccount.identity.linkerd.cluster.local, protocolHint: h2, labels: { pod: web-0 } }
`);
});

after(async () => {
  for (const s of servers) s.close();
  await cp.cleanup();
});

/** A connector that records which endpoint (identity) each connection was opened for. */
function recordingConnector(): { connect: Connector; opened: Array<string | undefined> } {
  const base = netConnector();
  const opened: Array<string | undefined> = [];
  return {
    opened,
    connect: (to, ep) => {
      opened.push(ep?.identity);
      return base(to, ep);
    },
  };
}

test('endpointKey: address, identity and protocol', () => {
  const a: Endpoint = { addr: { host: '10.0.0.1', port: 80 }, weight: 1, labels: {}, identity: 'a.id' };
  const b: Endpoint = { ...a, identity: 'b.id' };
  assert.notEqual(endpointKey(a, 'http1'), endpointKey(b, 'http1'));
  assert.notEqual(endpointKey(a, 'http1'), endpointKey(a, 'h2'));
  assert.equal(endpointKey(a, 'h2'), endpointKey({ ...a, labels: { pod: 'x' } }, 'h2'), 'labels do not split connections');
  assert.notEqual(endpointKey({ ...a, identity: undefined }, 'http1'), endpointKey(a, 'http1'));
});

test('HTTP/1: one address under two identities gets two pooled connections, each reused for its own identity', async () => {
  const { connect, opened } = recordingConnector();
  const pool = new Http1Pool();
  const eps: Endpoint[] = [
    { addr: h1, weight: 1, labels: {}, identity: 'x.id' },
    { addr: h1, weight: 1, labels: {}, identity: 'y.id' },
  ];
  let n = 0;
  const proxy = createServer({ allowHalfOpen: true }, (sock: Socket) => {
    sock.on('error', () => {});
    serveHttp1(sock, Buffer.alloc(0), {
      labels: { direction: 'outbound', target_addr: 'x', tls: 'true' },
      route: () => eps[n++ % 2]!,
      connect,
      metrics: new RecordingMetrics(),
      live: new Set<Drainable>(),
      pool,
      log: silentLog,
    });
  });
  servers.push(proxy);
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  const port = (proxy.address() as AddressInfo).port;
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  for (let i = 0; i < 6; i++) {
    const body = await new Promise<string>((resolve, reject) => {
      httpRequest({ host: '127.0.0.1', port, path: `/${i}`, agent }, (res) => {
        let b = '';
        res.on('data', (d: Buffer) => (b += d.toString()));
        res.on('end', () => resolve(b));
      })
        .on('error', reject)
        .end();
    });
    assert.equal(body, `ok /${i}`);
  }
  agent.destroy();
  assert.deepEqual(opened, ['x.id', 'y.id'], 'one connection per identity, opened with the endpoint the route chose');
  assert.equal(pool.idleCount(endpointKey(eps[0]!, 'http1')), 1);
  assert.equal(pool.idleCount(endpointKey(eps[1]!, 'http1')), 1);
  pool.close();
});

test('HTTP/2: one session per (address, identity)', async () => {
  const { connect, opened } = recordingConnector();
  const pool = new H2UpstreamPool({ log: silentLog });
  const x: Endpoint = { addr: h2, weight: 1, labels: {}, identity: 'x.id' };
  const y: Endpoint = { addr: h2, weight: 1, labels: {}, identity: 'y.id' };
  const get = async (ep: Endpoint): Promise<string> => {
    const up = await pool.request(ep, connect, { ':path': '/s', ':authority': 'h' }, { endStream: true }, () => false);
    const s = up!.stream;
    let b = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (b += d));
    await new Promise((r) => s.once('end', r));
    return b;
  };
  for (const ep of [x, y, x, y, x]) assert.equal(await get(ep), 'ok /s');
  assert.equal(pool.sessionsOpened, 2);
  assert.deepEqual(opened, ['x.id', 'y.id']);
  await pool.close();
});

test('discovery: Router.route answers the endpoint with identity, protocol hint and labels (real control plane)', async () => {
  const registry = new Registry();
  const r = new DestinationResolver({
    config: { addr: cp.cp.address, loopback: true, name: undefined, contextToken: '{"ns":"ns","nodeName":"n","pod":"p"}' },
    registry,
    log: silent,
  });
  try {
    const target = { host: '10.96.0.1', port: 8080 };
    await r.whenResolved(target, 'web.ns.svc.cluster.local:8080', 3000);
    const router = new Router({ resolve: (t) => r.resolve(t, 'web.ns.svc.cluster.local:8080') });
    const ep = router.route(target, undefined);
    assert.deepEqual(ep.addr, { host: '10.0.0.2', port: 8080 });
    assert.equal(ep.identity, 'web.ns.serviceaccount.identity.linkerd.cluster.local');
    assert.equal(ep.protocolHint, 'h2');
    assert.deepEqual(ep.labels, { service: 'web', namespace: 'ns', pod: 'web-0' });
    // Fallback: the original destination as an endpoint without identity or labels.
    const fb = new Router({ resolve: () => ({ kind: 'fallback' }) }).route(target, undefined);
    assert.deepEqual(fb, { addr: target, weight: 1, labels: {} });
  } finally {
    r.close();
  }
});
