// The balancer's feedback, end to end over real sockets: a Router over a
// live endpoint set, its route() and track() handed to serveHttp1 and
// serveH2 as the proxy does, two upstreams (one slow), and clients on
// loopback. Plus the lease and routing rules on their own (no sockets):
// a joining endpoint's neutral start, the failure penalty, and waiting on
// an empty set between a Remove and an Add.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { ErrorCodes, errorCode } from '../../src/errors.js';
import { detectProtocol } from '../../src/proxy/detect.js';
import { serveHttp1, type Drainable } from '../../src/proxy/http1/proxy-http1.js';
import { Http1Pool } from '../../src/proxy/http1/pool.js';
import { serveH2, H2UpstreamPool, type H2Connection } from '../../src/proxy/h2/index.js';
import { P2cBalancer, type EndpointStats } from '../../src/proxy/balance/p2c.js';
import { FAILURE_PENALTY_MS } from '../../src/proxy/balance/peak-ewma.js';
import { StaticEndpointSet } from '../../src/control/static-set.js';
import { Router } from '../../src/proxy/router.js';
import { formatAddr, type ConnLabels, type Endpoint } from '../../src/proxy/types.js';
import { netConnector, RecordingMetrics, silentLog } from '../helpers/http1.js';

const SLOW_MS = 60;
const TARGET = { host: '10.0.0.1', port: 80 };
const ep = (port: number, weight = 10_000): Endpoint => ({ addr: { host: '127.0.0.1', port }, weight, labels: {} });
const listen = (s: Server | http.Server | http2.Http2Server): Promise<number> =>
  new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as AddressInfo).port)));
const close = (s: Server | http.Server | http2.Http2Server): Promise<void> => new Promise((resolve) => s.close(() => resolve()));

/** An upstream that names itself, `delayMs` late. */
const h1Upstream = (name: string, delayMs: number): http.Server =>
  http.createServer((_q, s) => void setTimeout(() => s.end(name), delayMs));
const h2Upstream = (name: string, delayMs: number): http2.Http2Server =>
  http2.createServer((_q, s) => void setTimeout(() => s.end(name), delayMs));

const servers: Array<Server | http.Server | http2.Http2Server> = [];
const sockets = new Set<Socket>();
let fast1 = 0;
let slow1 = 0;
let fast2 = 0;
let slow2 = 0;

before(async () => {
  const up = [h1Upstream('fast', 0), h1Upstream('slow', SLOW_MS), h2Upstream('fast', 0), h2Upstream('slow', SLOW_MS)];
  servers.push(...up);
  const ports = await Promise.all(up.map(listen));
  [fast1, slow1, fast2, slow2] = ports as [number, number, number, number];
});

after(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all(servers.map(close));
});

interface Front {
  port: number;
  router: Router;
  set: StaticEndpointSet;
}

/** The proxy's accept path in small: detection, then HTTP/1 or HTTP/2 with the router's route() and track(). */
async function front(endpoints: Endpoint[]): Promise<Front> {
  const set = new StaticEndpointSet(endpoints);
  const router = new Router({ resolve: () => ({ kind: 'endpoints', set }) });
  const labels: ConnLabels = { direction: 'outbound', target_addr: formatAddr(TARGET), tls: 'no_identity' };
  const common = {
    labels,
    route: () => router.routeWhenReady(TARGET, undefined, 1000),
    track: (e: Endpoint) => router.track(e),
    connect: netConnector(),
    metrics: new RecordingMetrics(),
    log: { ...silentLog, info: () => {} },
  };
  const h1pool = new Http1Pool({ idleMs: 3000 });
  const h2pool = new H2UpstreamPool({ log: common.log });
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    void detectProtocol(sock, { timeoutMs: 2000 }).then((d) => {
      if (d.protocol === 'http1') serveHttp1(sock, d.buffered, { ...common, pool: h1pool, live: new Set<Drainable>() });
      else if (d.protocol === 'h2') serveH2(sock, d.buffered, { ...common, pool: h2pool, live: new Set<H2Connection>() });
      else sock.destroy();
    });
  });
  servers.push(server);
  const port = await listen(server);
  after(async () => {
    h1pool.close();
    await h2pool.close();
  });
  return { port, router, set };
}

/** `total` requests, `concurrency` at a time; answers counted by body. */
async function load(total: number, concurrency: number, one: () => Promise<string>): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  let sent = 0;
  const worker = async (): Promise<void> => {
    while (sent < total) {
      sent++;
      const body = await one();
      counts.set(body, (counts.get(body) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return counts;
}

test('HTTP/1: the slow endpoint gets little traffic, and every lease ends', async () => {
  const f = await front([ep(fast1), ep(slow1)]);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const get = (): Promise<string> =>
    new Promise((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: f.port, path: '/', agent }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve(body));
        })
        .on('error', reject);
    });
  const counts = await load(300, 4, get);
  agent.destroy();
  const slow = counts.get('slow') ?? 0;
  assert.equal((counts.get('fast') ?? 0) + slow, 300, JSON.stringify([...counts]));
  // A blind split gives it 150; with feedback it wins a draw only while the fast one looks 60x busier.
  assert.ok(slow < 45, `the ${SLOW_MS} ms endpoint got ${slow} of 300`);
  const stats = balancerStats(f);
  assert.deepEqual(stats.map((s) => s.pending), [0, 0], 'no lease left open');
  const slowStats = stats.find((s) => s.addr === `127.0.0.1:${slow1}`)!;
  assert.ok(slowStats.rttMs >= SLOW_MS * 0.5, `the slow endpoint's estimate ${slowStats.rttMs} ms`);
});

test('HTTP/2: the slow endpoint gets little traffic, and every lease ends', async () => {
  const f = await front([ep(fast2), ep(slow2)]);
  const session = http2.connect(`http://127.0.0.1:${f.port}`);
  session.on('error', () => {});
  const get = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const s = session.request({ ':path': '/' });
      let body = '';
      s.setEncoding('utf8');
      s.on('data', (c: string) => (body += c));
      s.on('end', () => resolve(body));
      s.on('error', reject);
    });
  const counts = await load(300, 4, get);
  session.close();
  const slow = counts.get('slow') ?? 0;
  assert.equal((counts.get('fast') ?? 0) + slow, 300, JSON.stringify([...counts]));
  assert.ok(slow < 45, `the ${SLOW_MS} ms endpoint got ${slow} of 300`);
  assert.deepEqual(balancerStats(f).map((s) => s.pending), [0, 0], 'no lease left open');
});

test('HTTP/1: a connect error is observed with the failure penalty', async () => {
  // A port nobody listens on: the connect is refused in microseconds.
  const dead = createServer();
  const deadPort = await listen(dead);
  await close(dead);
  const f = await front([ep(deadPort)]);
  const status = await new Promise<number>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: f.port, path: '/' }, (res) => (res.resume(), resolve(res.statusCode ?? 0))).on('error', reject);
  });
  assert.equal(status, 502);
  const [s] = balancerStats(f);
  assert.equal(s?.pending, 0);
  assert.ok((s?.rttMs ?? 0) >= FAILURE_PENALTY_MS * 0.9, `estimate after a refused connect: ${s?.rttMs} ms`);
});

/** The stats of the front's balancer. */
function balancerStats(f: Front): EndpointStats[] {
  const stats = f.router.stats(TARGET, undefined);
  assert.ok(stats !== undefined, 'the router has a balancer for the target');
  return stats;
}

test('lease: pending from start to end, one sample, the failure penalty, safe after the endpoint left', () => {
  let now = 1000;
  const set = new StaticEndpointSet([ep(1), ep(2)]);
  const b = new P2cBalancer(set, { now: () => now });
  const a = set.endpoints[0]!;
  const l = b.lease(a);
  assert.equal(b.stats()[0]?.pending, 1);
  assert.equal(b.pending, 1);
  l.observe(5);
  l.observe(500); // ignored: one sample per lease
  l.end();
  l.end(); // ignored
  assert.equal(b.stats()[0]?.pending, 0);
  assert.equal(b.stats()[0]?.rttMs, 30, 'a faster sample at the same instant has no weight yet (peak-EWMA)');
  now += 10;
  const f = b.lease(set.endpoints[1]!);
  f.observe(0.1, true);
  assert.equal(b.stats()[1]?.rttMs, FAILURE_PENALTY_MS, 'a fast failure costs the penalty');
  set.replace([ep(1)]);
  f.end(); // its endpoint left: nothing to do, nothing thrown
  assert.equal(b.pending, 0);
});

test('a joining endpoint starts from the set mean, so it gets traffic at once', () => {
  let now = 1000;
  const set = new StaticEndpointSet([ep(1)]);
  const b = new P2cBalancer(set, { now: () => now, rng: Math.random });
  // The old endpoint measured 1 ms many times: its estimate is far below the 30 ms default.
  for (let i = 0; i < 200; i++) {
    now += 100;
    const l = b.lease(set.endpoints[0]!);
    l.observe(1);
    l.end();
  }
  assert.ok(b.stats()[0]!.rttMs < 5);
  set.replace([...set.endpoints, ep(2)]);
  const joined = b.stats()[1]!;
  assert.ok(Math.abs(joined.rttMs - b.stats()[0]!.rttMs) < 1e-9, `the newcomer starts at ${joined.rttMs} ms, the set's mean`);
  let picks = 0;
  for (let i = 0; i < 1000; i++) if (b.pick()?.addr.port === 2) picks++;
  assert.ok(picks > 350 && picks < 650, `the newcomer got ${picks} of 1000 idle picks`);
});

test('weights still apply with feedback: equal latencies, 3:1 weights', () => {
  let now = 1000;
  const set = new StaticEndpointSet([ep(1, 30_000), ep(2, 10_000)]);
  const b = new P2cBalancer(set, { now: () => now });
  const counts = [0, 0];
  const open: Array<{ l: ReturnType<P2cBalancer['lease']>; at: number }> = [];
  for (let i = 0; i < 4000; i++) {
    now += 1;
    // 1 ms each, 4 in flight.
    while (open.length >= 4) {
      const o = open.shift()!;
      o.l.observe(now - o.at);
      o.l.end();
    }
    const e = b.pick()!;
    counts[e.addr.port - 1]!++;
    open.push({ l: b.lease(e), at: now });
  }
  assert.ok(counts[0]! > counts[1]! * 2, `heavy ${counts[0]}, light ${counts[1]}`);
});

test('Router: track() only for balanced picks; an empty set is waited on (Remove then Add), then 503', async () => {
  const set = new StaticEndpointSet([ep(1)]);
  const router = new Router({ resolve: () => ({ kind: 'endpoints', set }) });
  const target = { host: '10.0.0.1', port: 80 };
  const fallback = new Router({ resolve: () => ({ kind: 'fallback' }) });
  assert.equal(fallback.track(fallback.route(target, undefined)), undefined, 'a fallback has no balancer');
  assert.ok(router.track(router.route(target, undefined)) !== undefined);
  // A move from endpoint 1 to endpoint 2 as the control plane sends it: Remove, then Add.
  set.replace([]);
  assert.throws(() => router.route(target, undefined), (e: unknown) => errorCode(e) === ErrorCodes.UNAVAILABLE, 'route() does not wait');
  const waiting = router.routeWhenReady(target, undefined, 5000);
  setTimeout(() => set.replace([ep(2)]), 50);
  assert.equal((await waiting).addr.port, 2);
  // Still empty at the deadline: the 503.
  set.replace([]);
  const t0 = performance.now();
  await assert.rejects(router.routeWhenReady(target, undefined, 100), (e: unknown) => errorCode(e) === ErrorCodes.UNAVAILABLE);
  assert.ok(performance.now() - t0 >= 90);
  // 'fail' is answered at once.
  const failing = new Router({ resolve: () => ({ kind: 'fail', reason: 'exists, no endpoints' }) });
  await assert.rejects(failing.routeWhenReady(target, undefined, 60_000), (e: unknown) => errorCode(e) === ErrorCodes.UNAVAILABLE);
});
