// HTTP/2 forwarding through serveH2: curl and node:http2 clients, a real
// node:http2 upstream, bodies and trailers both ways, multiplexing, metrics.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { constants as h2, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { chunk, connectClient, curl, request, sha256, startProxy, startUpstream, type TestProxy, type Upstream } from '../helpers/h2.js';

const MiB = 1024 * 1024;
let upstream: Upstream;
let proxy: TestProxy;
let client: ClientHttp2Session;
const seenRequestHeaders: IncomingHttpHeaders[] = [];

before(async () => {
  upstream = await startUpstream((stream, headers) => {
    seenRequestHeaders.push(headers);
    const url = new URL(headers[':path'] ?? '/', 'http://x');
    switch (url.pathname) {
      case '/hello':
        stream.respond({ ':status': 200, 'content-type': 'text/plain', 'x-up': 'yes' });
        stream.end(`hello ${headers[':method']} ${headers[':authority']}\n`);
        return;
      case '/headers':
        stream.respond({ ':status': 200, 'content-type': 'application/json' });
        stream.end(JSON.stringify(headers));
        return;
      case '/hash': {
        // Reads the whole request body, answers its sha256 and length, and
        // echoes the request trailers back as response trailers.
        const h = createHash('sha256');
        let n = 0;
        let reqTrailers: IncomingHttpHeaders = {};
        stream.on('trailers', (t: IncomingHttpHeaders) => (reqTrailers = t));
        stream.on('data', (c: Buffer) => {
          h.update(c);
          n += c.length;
        });
        stream.on('end', () => {
          stream.respond({ ':status': 200 }, { waitForTrailers: true });
          stream.on('wantTrailers', () => stream.sendTrailers({ 'x-echo': String(reqTrailers['x-req-trailer'] ?? 'none') }));
          stream.end(JSON.stringify({ sha: h.digest('hex'), n }));
        });
        return;
      }
      case '/bytes': {
        // Sends `mib` MiB of chunk(i) with backpressure; the sha in trailers.
        const total = Number(url.searchParams.get('mib')) * 16; // 64 KiB chunks
        const h = createHash('sha256');
        stream.respond({ ':status': 200 }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'x-sha256': h.digest('hex') }));
        let i = 0;
        const pump = (): void => {
          while (i < total) {
            const c = chunk(i++);
            h.update(c);
            if (!stream.write(c)) return void stream.once('drain', pump);
          }
          stream.end();
        };
        pump();
        return;
      }
      case '/status':
        stream.respond({ ':status': Number(url.searchParams.get('code')) });
        stream.end();
        return;
      case '/slow':
        setTimeout(() => {
          if (stream.closed) return;
          stream.respond({ ':status': 200 });
          stream.end('slow');
        }, Number(url.searchParams.get('ms')));
        return;
      default:
        stream.respond({ ':status': 404 });
        stream.end();
    }
  });
  proxy = await startProxy({ route: () => upstream.addr });
  client = await connectClient(proxy.url);
});

after(async () => {
  client?.close();
  await proxy?.close();
  await upstream?.close();
});

test('curl --http2-prior-knowledge GET goes through, response headers and body intact', async () => {
  const r = await curl(['-i', `${proxy.url}/hello`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^HTTP\/2 200/);
  assert.match(r.stdout, /x-up: yes/);
  assert.match(r.stdout, new RegExp(`hello GET 127\\.0\\.0\\.1:${proxy.port}\\n$`));
});

test('curl POST body arrives intact', async () => {
  const body = 'x'.repeat(100_000);
  const r = await curl(['--data-binary', body, `${proxy.url}/hash`]);
  assert.equal(r.code, 0, r.stderr);
  const json = JSON.parse(r.stdout) as { sha: string; n: number };
  assert.equal(json.n, body.length);
  assert.equal(json.sha, sha256(Buffer.from(body)));
});

test('pseudo-headers are kept, te: trailers is kept, the client sees the upstream status', async () => {
  const r = await request(client, { ':path': '/headers?a=1', ':method': 'GET', ':authority': 'svc.ns:8080', te: 'trailers', 'x-custom': 'v' });
  const h = JSON.parse(r.body.toString()) as Record<string, string>;
  assert.equal(h[':path'], '/headers?a=1');
  assert.equal(h[':method'], 'GET');
  assert.equal(h[':scheme'], 'http');
  assert.equal(h[':authority'], 'svc.ns:8080');
  assert.equal(h['te'], 'trailers');
  assert.equal(h['x-custom'], 'v');
  const s = await request(client, { ':path': '/status?code=418' });
  assert.equal(s.headers[':status'], 418);
});

test('request trailers reach the upstream; response trailers reach the client', async () => {
  const r = await new Promise<{ trailers: IncomingHttpHeaders; body: string }>((resolve, reject) => {
    const req = client.request({ ':method': 'POST', ':path': '/hash' }, { waitForTrailers: true });
    let trailers: IncomingHttpHeaders = {};
    let body = '';
    req.on('wantTrailers', () => req.sendTrailers({ 'x-req-trailer': 'from-client' }));
    req.on('trailers', (t: IncomingHttpHeaders) => (trailers = t));
    req.setEncoding('utf8').on('data', (d: string) => (body += d));
    req.on('end', () => resolve({ trailers, body }));
    req.on('error', reject);
    req.end('abc');
  });
  assert.equal(r.trailers['x-echo'], 'from-client');
  assert.equal((JSON.parse(r.body) as { n: number }).n, 3);
});

test('100 MiB request body arrives byte-identical (sha256)', async () => {
  const expect = createHash('sha256');
  const req = client.request({ ':method': 'POST', ':path': '/hash' });
  let body = '';
  req.setEncoding('utf8').on('data', (d: string) => (body += d));
  const done = new Promise<void>((resolve, reject) => {
    req.on('end', resolve);
    req.on('error', reject);
  });
  for (let i = 0; i < 100 * 16; i++) {
    const c = chunk(i);
    expect.update(c);
    if (!req.write(c)) await new Promise((r) => req.once('drain', r));
  }
  req.end();
  await done;
  const json = JSON.parse(body) as { sha: string; n: number };
  assert.equal(json.n, 100 * MiB);
  assert.equal(json.sha, expect.digest('hex'));
});

test('100 MiB response body arrives byte-identical (sha256 in trailers)', async () => {
  const req = client.request({ ':path': '/bytes?mib=100' });
  const h = createHash('sha256');
  let n = 0;
  let trailers: IncomingHttpHeaders = {};
  req.on('data', (c: Buffer) => {
    h.update(c);
    n += c.length;
  });
  req.on('trailers', (t: IncomingHttpHeaders) => (trailers = t));
  await new Promise<void>((resolve, reject) => {
    req.on('end', resolve);
    req.on('error', reject);
  });
  assert.equal(n, 100 * MiB);
  assert.equal(trailers['x-sha256'], h.digest('hex'));
});

test('200 concurrent streams are multiplexed on one upstream connection', async () => {
  const before = upstream.sessions;
  const proxy2 = await startProxy({ route: () => upstream.addr });
  try {
    const c = await connectClient(proxy2.url);
    const replies = await Promise.all(Array.from({ length: 200 }, (_, i) => request(c, { ':path': `/slow?ms=${50 + (i % 50)}` })));
    c.close();
    for (const r of replies) {
      assert.equal(r.headers[':status'], 200);
      assert.equal(r.body.toString(), 'slow');
    }
    const opened = upstream.sessions - before;
    assert.ok(opened >= 1 && opened <= 2, `upstream saw ${opened} sessions`);
    // Every stream counted: a request and a successful response each.
    assert.equal(proxy2.metrics.requests.length, 200);
    await proxyMetricsSettle(proxy2, 200);
    assert.ok(proxy2.metrics.responses.every((r) => r.statusCode === 200 && r.classification === 'success'));
  } finally {
    await proxy2.close();
  }
});

test('metrics: request and response per stream, authority label, 5xx is a failure, latency to headers', async () => {
  const p = await startProxy({ route: () => upstream.addr });
  try {
    const c = await connectClient(p.url);
    await request(c, { ':path': '/slow?ms=120', ':authority': 'web.emojivoto:80' });
    await request(c, { ':path': '/status?code=503' });
    c.close();
    await proxyMetricsSettle(p, 2);
    const [slow, failed] = p.metrics.responses;
    assert.equal(slow?.labels.authority, 'web.emojivoto:80');
    assert.equal(slow?.statusCode, 200);
    assert.equal(slow?.classification, 'success');
    assert.ok((slow?.latencyMs ?? 0) >= 100, `latency ${slow?.latencyMs}`);
    assert.equal(slow?.grpcStatus, undefined);
    assert.equal(failed?.statusCode, 503);
    assert.equal(failed?.classification, 'failure');
    assert.equal(p.metrics.requests.length, 2);
  } finally {
    await p.close();
  }
});

async function proxyMetricsSettle(p: TestProxy, n: number): Promise<void> {
  const end = Date.now() + 5000;
  while (p.metrics.responses.length < n && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  assert.equal(p.metrics.responses.length, n);
}

test('a response with END_STREAM on its headers keeps it (no DATA frame needed)', async () => {
  const r = await request(client, { ':path': '/status?code=204' });
  assert.equal(r.headers[':status'], 204);
  assert.equal(r.body.length, 0);
  assert.equal(r.rstCode, h2.NGHTTP2_NO_ERROR);
});

test('HEAD: headers only, no body expected', async () => {
  const r = await curl(['-I', `${proxy.url}/hello`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^HTTP\/2 200/);
  assert.match(r.stdout, /x-up: yes/);
});

// Detection hands over what it read; the rest of the client's bytes may
// still be on the wire. A relay splits the client's first write there.
for (const split of [24, 30]) {
  test(`the replayed bytes end ${split === 24 ? 'right after the preface' : 'inside a frame'}; the rest arrives later`, async () => {
    const relay = net.createServer((inbound) => {
      const outbound = net.connect(proxy.port, '127.0.0.1');
      inbound.once('data', (first: Buffer) => {
        outbound.write(first.subarray(0, split));
        setTimeout(() => {
          outbound.write(first.subarray(split));
          inbound.pipe(outbound);
        }, 50);
      });
      outbound.pipe(inbound);
      inbound.on('error', () => outbound.destroy());
      outbound.on('error', () => inbound.destroy());
    });
    await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
    try {
      const c = await connectClient(`http://127.0.0.1:${(relay.address() as AddressInfo).port}`);
      const r = await request(c, { ':path': '/hello' });
      assert.equal(r.headers[':status'], 200);
      assert.match(r.body.toString(), /^hello GET/);
      c.destroy();
    } finally {
      await new Promise<void>((resolve) => relay.close(() => resolve()));
    }
  });
}
