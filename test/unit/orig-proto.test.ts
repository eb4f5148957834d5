// HTTP/1 carried over HTTP/2 between two proxies (l5d-orig-proto), on real
// sockets: client -> outbound proxy (HTTP/1 layer with an OrigProtoUpgrader)
// -> inbound proxy (detection, then the HTTP/2 layer with downgrade, or the
// HTTP/1 layer) -> a node:http app. mTLS is left out here (the kernel mesh
// test has it): the upgrader's eligibility stands in for "meshed peer".
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttp, Agent, request as httpRequest } from 'node:http';
import http2 from 'node:http2';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { Registry } from 'prom-client';
import { detectProtocol } from '../../src/proxy/detect.js';
import { endpointLabeler } from '../../src/proxy/endpoint-labels.js';
import { H2UpstreamPool, serveH2, type H2Connection } from '../../src/proxy/h2/index.js';
import { Http1Pool } from '../../src/proxy/http1/pool.js';
import { serveHttp1, type Drainable } from '../../src/proxy/http1/proxy-http1.js';
import { createProxyMetrics, type PromProxyMetrics } from '../../src/proxy/metrics.js';
import { OrigProtoUpgrader } from '../../src/proxy/orig-proto.js';
import type { Addr, ConnLabels, Endpoint } from '../../src/proxy/types.js';
import { netConnector, silentLog } from '../helpers/h2.js';

const servers: Server[] = [];
const listen = async (s: Server): Promise<Addr> => {
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return { host: '127.0.0.1', port: (s.address() as AddressInfo).port };
};

let app: Addr;
let app10: Addr;
let inbound: Addr;
let outbound: Addr;
let inboundApp: Addr; // where the inbound proxy sends requests
let peer: Endpoint; // what the outbound proxy routes to
const inCounts = { h2: 0, http1: 0 };
let outMetrics: PromProxyMetrics;
let inMetrics: PromProxyMetrics;
let outRegistry: Registry;
let inRegistry: Registry;
const h2Pool = new H2UpstreamPool({ log: silentLog });
const pools = { in: new Http1Pool(), out: new Http1Pool(), inH2: new H2UpstreamPool({ log: silentLog }) };

async function sample(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const text = await registry.metrics();
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

/** Writes `text`, reads until the server closes (requests here say Connection: close, or are HTTP/1.0). */
function raw(to: Addr, text: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s: Socket = connect(to.port, to.host);
    const parts: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no close within 10 s; got ${Buffer.concat(parts).toString().slice(0, 300)}`));
    }, 10_000);
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('error', reject);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(parts).toString('latin1'));
    });
    s.write(text);
  });
}

/** An 8 MiB response body the app sends on /big-*. */
const BIG = randomBytes(8 * 1024 * 1024);
/** The inbound downgrade's response-head timeout in these tests. */
const RESPONSE_TIMEOUT_MS = 1000;

/** Like raw(), but reads slowly (a pause after every read), so every proxy's writes towards the client back up. */
function rawSlow(to: Addr, text: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s: Socket = connect(to.port, to.host);
    const parts: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('no complete response within 30 s'));
    }, 30_000);
    s.on('data', (d: Buffer) => {
      parts.push(d);
      s.pause();
      setTimeout(() => s.resume(), 2);
    });
    s.on('error', reject);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(parts));
    });
    s.write(text);
  });
}

function split(res: string): { status: string; headers: Map<string, string>; body: string } {
  const at = res.indexOf('\r\n\r\n');
  const [status, ...lines] = res.slice(0, at).split('\r\n');
  const headers = new Map(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()] as const));
  return { status: status!, headers, body: res.slice(at + 4) };
}

function dechunk(body: string): string {
  let out = '';
  let i = 0;
  for (;;) {
    const eol = body.indexOf('\r\n', i);
    const n = parseInt(body.slice(i, eol), 16);
    if (n === 0) return out;
    out += body.slice(eol + 2, eol + 2 + n);
    i = eol + 2 + n + 2;
  }
}

interface Seen {
  method: string;
  url: string;
  version: string;
  headers: Record<string, string>;
  body: { length: number; sha: string };
}

before(async () => {
  const appServer = createHttp((req, res) => {
    const h = createHash('sha256');
    let n = 0;
    req.on('data', (d: Buffer) => {
      h.update(d);
      n += d.length;
      // A slow app: the proxies' writes to it back up.
      if (req.url === '/slow') {
        req.pause();
        setTimeout(() => req.resume(), 2);
      }
    });
    req.on('end', () => {
      // An app that never answers: the inbound downgrade's response-head timeout must.
      if (req.url === '/never') return;
      // A large response: chunked (no length given) or with a Content-Length.
      if (req.url === '/big-chunked' || req.url === '/big-length') {
        if (req.url === '/big-length') res.setHeader('content-length', BIG.length);
        for (let i = 0; i < BIG.length; i += 65536) res.write(BIG.subarray(i, i + 65536));
        return void res.end();
      }
      if (req.url === '/chunked') {
        res.write('a');
        res.write('bb');
        return void res.end('ccc');
      }
      const seen: Seen = { method: req.method!, url: req.url!, version: req.httpVersion, headers: req.headers as Record<string, string>, body: { length: n, sha: h.digest('hex') } };
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(seen));
    });
  });
  appServer.on('upgrade', (_req, sock: Socket, head: Buffer) => {
    sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    if (head.length > 0) sock.write(head);
    sock.pipe(sock);
  });
  app = await listen(appServer);
  // An HTTP/1.0 app: close-delimited body.
  app10 = await listen(
    createServer((s) => {
      s.once('data', () => s.end('HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nold-body'));
      s.on('error', () => {});
    }),
  );
  inboundApp = app;

  inRegistry = new Registry();
  inMetrics = createProxyMetrics(inRegistry, { processMetrics: false });
  inbound = await listen(
    createServer({ allowHalfOpen: true, pauseOnConnect: true }, (sock) => {
      sock.on('error', () => {});
      const labels: ConnLabels = { direction: 'inbound', target_addr: `${inboundApp.host}:${inboundApp.port}`, tls: 'true', client_id: 'client.id' };
      const common = { labels, route: () => inboundApp, connect: netConnector(), metrics: inMetrics, log: silentLog, clientId: 'client.id' };
      void detectProtocol(sock, { timeoutMs: 2000 }).then((d) => {
        if (d.protocol === 'h2') {
          inCounts.h2++;
          serveH2(sock, d.buffered, { ...common, live: new Set<H2Connection>(), pool: pools.inH2, downgrade: { pool: pools.in, responseTimeoutMs: RESPONSE_TIMEOUT_MS } });
        } else if (d.protocol === 'http1') {
          inCounts.http1++;
          serveHttp1(sock, d.buffered, { ...common, pool: pools.in, live: new Set<Drainable>() });
        } else sock.destroy();
      });
    }),
  );
  peer = { addr: inbound, weight: 1, identity: 'server.id', protocolHint: 'h2', labels: { pod: 'b-0', 'app.kubernetes.io/name': 'web' } };

  outRegistry = new Registry();
  outMetrics = createProxyMetrics(outRegistry, { processMetrics: false });
  const upgrader = new OrigProtoUpgrader({ pool: h2Pool, eligible: (ep) => ep.protocolHint === 'h2' && ep.identity !== undefined });
  outbound = await listen(
    createServer({ allowHalfOpen: true, pauseOnConnect: true }, (sock) => {
      sock.on('error', () => {});
      const labels: ConnLabels = { direction: 'outbound', target_addr: `${peer.addr.host}:${peer.addr.port}`, tls: 'no_identity', no_tls_reason: 'loopback' };
      void detectProtocol(sock, { timeoutMs: 2000 }).then((d) => {
        serveHttp1(sock, d.buffered, {
          labels,
          route: () => peer,
          connect: netConnector(),
          metrics: outMetrics,
          live: new Set<Drainable>(),
          pool: pools.out,
          log: silentLog,
          origProto: upgrader,
          endpointLabels: endpointLabeler({ mtls: true }),
        });
      });
    }),
  );
});

after(async () => {
  pools.in.close();
  pools.out.close();
  await h2Pool.close();
  await pools.inH2.close();
  for (const s of servers) s.close();
});

test('GET: carried over HTTP/2 between the proxies, HTTP/1.1 at the app, l5d-orig-proto on neither end', async () => {
  const before = inCounts.h2;
  const res = split(await raw(outbound, 'GET /x?y=1 HTTP/1.1\r\nHost: web.ns:8080\r\nX-Custom: a\r\nKeep-Alive: timeout=5\r\nConnection: close, keep-alive\r\n\r\n'));
  assert.equal(res.status, 'HTTP/1.1 200 OK');
  assert.equal(res.headers.has('l5d-orig-proto'), false, 'the client never sees l5d-orig-proto');
  assert.equal(res.headers.get('connection'), 'close');
  const seen = JSON.parse(res.body) as Seen;
  assert.equal(seen.version, '1.1');
  assert.equal(seen.url, '/x?y=1');
  assert.equal(seen.headers['host'], 'web.ns:8080');
  assert.equal(seen.headers['x-custom'], 'a');
  assert.equal(seen.headers['l5d-orig-proto'], undefined, 'the inbound proxy strips l5d-orig-proto');
  assert.equal(seen.headers['keep-alive'], undefined, 'hop-by-hop fields stay behind');
  assert.equal(seen.headers['l5d-client-id'], 'client.id');
  assert.equal(inCounts.h2, before + 1, 'the inbound proxy received HTTP/2');
  assert.equal(await sample(outRegistry, 'bpfmesh_orig_proto_requests_total', { event: 'upgraded' }), 1);
  assert.equal(await sample(inRegistry, 'bpfmesh_orig_proto_requests_total', { event: 'downgraded' }), 1);
  // The endpoint's identity and metric_labels label the outbound request.
  const labels = { direction: 'outbound', tls: 'true', server_id: 'server.id', dst_pod: 'b-0', dst_app_kubernetes_io_name: 'web' };
  assert.equal(await sample(outRegistry, 'request_total', labels), 1);
  assert.equal(await sample(outRegistry, 'response_total', { ...labels, status_code: '200', classification: 'success' }), 1);
  assert.equal(await sample(outRegistry, 'response_latency_ms_count', labels), 1);
  assert.equal(await sample(inRegistry, 'request_total', { direction: 'inbound', tls: 'true', client_id: 'client.id' }), 1);
});

test('bodies: Content-Length and chunked requests arrive whole; a chunked response is chunked for 1.1, close-delimited for 1.0', async () => {
  const fixed = JSON.parse(split(await raw(outbound, 'POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello')).body) as Seen;
  assert.deepEqual(fixed.body, { length: 5, sha: createHash('sha256').update('hello').digest('hex') });
  assert.equal(fixed.headers['content-length'], '5');
  assert.equal(fixed.headers['transfer-encoding'], undefined);

  const chunked = JSON.parse(
    split(await raw(outbound, 'POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n')).body,
  ) as Seen;
  assert.deepEqual(chunked.body, { length: 11, sha: createHash('sha256').update('hello world').digest('hex') });
  assert.equal(chunked.headers['transfer-encoding'], 'chunked', 'no length: the app gets chunked framing back');
  assert.equal(chunked.version, '1.1');

  const r11 = split(await raw(outbound, 'GET /chunked HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n'));
  assert.equal(r11.headers.get('transfer-encoding'), 'chunked');
  assert.equal(dechunk(r11.body), 'abbccc');

  const r10 = split(await raw(outbound, 'GET /chunked HTTP/1.0\r\nHost: h\r\n\r\n'));
  assert.equal(r10.status, 'HTTP/1.1 200 OK');
  assert.equal(r10.headers.has('transfer-encoding'), false, 'an HTTP/1.0 client cannot read chunked');
  assert.equal(r10.body, 'abbccc');
  const v10 = JSON.parse(split(await raw(outbound, 'GET /v HTTP/1.0\r\nHost: h\r\n\r\n')).body) as Seen;
  assert.equal(v10.version, '1.0', 'HTTP/1.0 in, HTTP/1.0 at the app (l5d-orig-proto: HTTP/1.0)');
});

test('an 8 MiB body to a slow app arrives whole over l5d-orig-proto, chunked and with a length (backpressure on every write)', async () => {
  const body = randomBytes(8 * 1024 * 1024);
  const sha = createHash('sha256').update(body).digest('hex');
  // Chunked in 64 KiB chunks: the downgrade re-frames each HTTP/2 DATA frame as a chunk.
  const parts: Buffer[] = [];
  for (let i = 0; i < body.length; i += 65536) {
    const c = body.subarray(i, i + 65536);
    parts.push(Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  const before = await sample(inRegistry, 'bpfmesh_orig_proto_requests_total', { event: 'downgraded' });
  for (const [name, head, payload] of [
    ['chunked', 'POST /slow HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n', Buffer.concat(parts)],
    ['length', `POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`, body],
  ] as const) {
    const res = split(await raw(outbound, Buffer.concat([Buffer.from(head), payload])));
    assert.equal(res.status, 'HTTP/1.1 200 OK', `${name}: ${res.status}`);
    assert.deepEqual((JSON.parse(res.body) as Seen).body, { length: body.length, sha }, name);
  }
  assert.equal(await sample(inRegistry, 'bpfmesh_orig_proto_requests_total', { event: 'downgraded' }) - before, 2, 'both went over HTTP/2');
});

test('an 8 MiB body to a slow app arrives whole over plain HTTP/1 (inbound)', async () => {
  const body = randomBytes(8 * 1024 * 1024);
  const res = split(await raw(inbound, Buffer.concat([Buffer.from(`POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`), body])));
  assert.equal(res.status, 'HTTP/1.1 200 OK');
  assert.deepEqual((JSON.parse(res.body) as Seen).body, { length: body.length, sha: createHash('sha256').update(body).digest('hex') });
});

test('an 8 MiB response to a slow client arrives whole over l5d-orig-proto, chunked and with a length (backpressure on the downgrade response path)', async () => {
  const sha = createHash('sha256').update(BIG).digest('hex');
  const before = await sample(inRegistry, 'bpfmesh_orig_proto_requests_total', { event: 'downgraded' });
  for (const path of ['/big-chunked', '/big-length']) {
    const res = await rawSlow(outbound, `GET ${path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`);
    const at = res.indexOf('\r\n\r\n');
    const head = split(res.subarray(0, at + 4).toString('latin1'));
    assert.equal(head.status, 'HTTP/1.1 200 OK', path);
    let body = res.subarray(at + 4);
    if (head.headers.get('transfer-encoding') === 'chunked') body = Buffer.from(dechunk(body.toString('latin1')), 'latin1');
    else assert.equal(head.headers.get('content-length'), String(BIG.length), path);
    assert.equal(body.length, BIG.length, path);
    assert.equal(createHash('sha256').update(body).digest('hex'), sha, path);
  }
  assert.equal(await sample(inRegistry, 'bpfmesh_orig_proto_requests_total', { event: 'downgraded' }) - before, 2, 'both went over HTTP/2');
});

test('an 8 MiB response to a slow client arrives whole over plain HTTP/1 (inbound)', async () => {
  const res = await rawSlow(inbound, 'GET /big-length HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n');
  const at = res.indexOf('\r\n\r\n');
  assert.equal(split(res.subarray(0, at + 4).toString('latin1')).status, 'HTTP/1.1 200 OK');
  assert.equal(createHash('sha256').update(res.subarray(at + 4)).digest('hex'), createHash('sha256').update(BIG).digest('hex'));
});

test('an app that never answers a downgraded request: the inbound proxy answers 504 after its response-head timeout', async () => {
  const before = await sample(inRegistry, 'bpfmesh_orig_proto_requests_total', { event: 'downgraded' });
  const t0 = performance.now();
  const res = split(await raw(outbound, 'GET /never HTTP/1.1\r\nHost: web.ns:8080\r\nConnection: close\r\n\r\n'));
  assert.equal(res.status, 'HTTP/1.1 504 Gateway Timeout');
  assert.ok(performance.now() - t0 >= RESPONSE_TIMEOUT_MS, 'not before the timeout');
  assert.equal(await sample(inRegistry, 'bpfmesh_orig_proto_requests_total', { event: 'downgraded' }) - before, 1, 'it went over HTTP/2');
});

test('keep-alive: requests on one client connection share one HTTP/2 session to the peer', async () => {
  const opened = h2Pool.sessionsOpened;
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const get = (path: string): Promise<string> =>
    new Promise((resolve, reject) => {
      httpRequest({ host: outbound.host, port: outbound.port, path, agent }, (res) => {
        let b = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (b += d));
        res.on('end', () => resolve(b));
      })
        .on('error', reject)
        .end();
    });
  for (let i = 0; i < 3; i++) assert.equal((JSON.parse(await get(`/k${i}`)) as Seen).url, `/k${i}`);
  agent.destroy();
  assert.ok(h2Pool.sessionsOpened - opened <= 1, 'the pooled session was reused');
  assert.equal(h2Pool.size, 1);
});

test('absolute-form targets and an HTTP/1.0 app: the versions and forms survive the trip', async () => {
  const abs = JSON.parse(split(await raw(outbound, 'GET http://web.ns:8080/abs HTTP/1.1\r\nHost: web.ns:8080\r\nConnection: close\r\n\r\n')).body) as Seen;
  assert.equal(abs.url, 'http://web.ns:8080/abs', 'l5d-orig-proto "HTTP/1.1; absolute-form" restores the absolute URI');
  inboundApp = app10;
  try {
    // Directly on the HTTP/2 leg: the inbound proxy says which version the app answered with.
    const c = http2.connect(`http://${inbound.host}:${inbound.port}`);
    const res = await new Promise<{ h: http2.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const s = c.request({ ':path': '/old', 'l5d-orig-proto': 'HTTP/1.1' });
      let body = '';
      s.setEncoding('utf8');
      s.on('response', (h) => s.on('data', (d: string) => (body += d)).on('end', () => resolve({ h, body })));
      s.on('error', reject);
    });
    assert.equal(res.h['l5d-orig-proto'], 'HTTP/1.0');
    assert.equal(res.body, 'old-body');
    const bad = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
      const s = c.request({ ':path': '/old', 'l5d-orig-proto': 'HTTP/2' });
      s.on('response', (h) => (s.resume(), resolve(h)));
      s.on('error', reject);
    });
    assert.equal(bad[':status'], 400);
    assert.match(String(bad['l5d-proxy-error']), /BPFMESH_E_HTTP_MALFORMED: bad l5d-orig-proto/);
    c.close();
    // Through both proxies: the client gets the body, close-delimited becomes chunked, no l5d-orig-proto.
    const through = split(await raw(outbound, 'GET /old HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n'));
    assert.equal(through.status, 'HTTP/1.1 200 OK');
    assert.equal(through.headers.has('l5d-orig-proto'), false);
    assert.equal(dechunk(through.body), 'old-body');
  } finally {
    inboundApp = app;
  }
});

test('Upgrade (WebSocket) requests stay HTTP/1 end to end', async () => {
  const upgraded = await sample(outRegistry, 'bpfmesh_orig_proto_requests_total', { event: 'upgraded' });
  const h1 = inCounts.http1;
  const text = await new Promise<string>((resolve, reject) => {
    const s = connect(outbound.port, outbound.host);
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('\r\n\r\n') && !got.includes('ping')) s.write('ping');
      if (got.endsWith('ping')) {
        s.destroy();
        resolve(got);
      }
    });
    s.on('error', reject);
    s.write('GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\n\r\n');
  });
  assert.match(text, /^HTTP\/1\.1 101 /);
  assert.equal(await sample(outRegistry, 'bpfmesh_orig_proto_requests_total', { event: 'upgraded' }), upgraded, 'not carried over HTTP/2');
  assert.equal(inCounts.http1, h1 + 1, 'the inbound proxy got an HTTP/1 connection');
});

test('a peer that does not speak HTTP/2 gets the request over HTTP/1, and the fallback is counted', async () => {
  const saved = peer;
  // The app itself behind an h2 hint: it answers the HTTP/2 preface with an HTTP/1 400.
  peer = { addr: app, weight: 1, identity: 'server.id', protocolHint: 'h2', labels: {} };
  try {
    for (const path of ['/fb1', '/fb2']) {
      const res = split(await raw(outbound, `GET ${path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`));
      assert.equal(res.status, 'HTTP/1.1 200 OK', res.body);
      assert.equal((JSON.parse(res.body) as Seen).url, path);
    }
    // The first one found out, the second was sent HTTP/1 at once (remembered).
    assert.equal(await sample(outRegistry, 'bpfmesh_orig_proto_requests_total', { event: 'fallback_http1' }), 2);
  } finally {
    peer = saved;
  }
});
