// Failure paths of the HTTP/2 forwarder: proxy-generated 502/503/504,
// RST_STREAM both ways, upstream connections that die or go away, and
// graceful shutdown with GOAWAY.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { constants as h2, type ClientHttp2Session, type ServerHttp2Stream } from 'node:http2';
import net, { type AddressInfo, type Socket } from 'node:net';
import { BpfmeshError } from '../../src/errors.js';
import { drainH2 } from '../../src/proxy/h2/index.js';
import type { Connector } from '../../src/proxy/types.js';
import {
  closedPort,
  connectClient,
  curl,
  FRAME,
  request,
  rstPayload,
  sleep,
  startProxy,
  startRawUpstream,
  startUpstream,
  STATUS_200,
  until,
  type TestProxy,
  type Upstream,
} from '../helpers/h2.js';

let upstream: Upstream;
let proxy: TestProxy;
let client: ClientHttp2Session;
/** Upstream streams by their x-id request header, with how they closed. */
const seen = new Map<string, { stream: ServerHttp2Stream; rstCode?: number }>();

before(async () => {
  upstream = await startUpstream((stream, headers) => {
    const url = new URL(headers[':path'] ?? '/', 'http://x');
    const id = String(headers['x-id'] ?? '');
    const rec: { stream: ServerHttp2Stream; rstCode?: number } = { stream };
    if (id) seen.set(id, rec);
    stream.once('close', () => (rec.rstCode = stream.rstCode));
    const code = Number(url.searchParams.get('code'));
    switch (url.pathname) {
      case '/hang':
        return; // never answers
      case '/reset-before':
        stream.close(code);
        return;
      case '/reset-mid':
        stream.respond({ ':status': 200 });
        stream.write('partial', () => setTimeout(() => stream.close(code), 20));
        return;
      case '/die-mid':
        stream.respond({ ':status': 200 });
        stream.write('partial', () => setTimeout(() => upstream.dropConnections(), 20));
        return;
      case '/early-trailers':
        stream.respond({ ':status': 200 }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        stream.end('done early');
        return;
      case '/early':
        // Answers without reading the body (e.g. 413), then stops it with
        // RST_STREAM(NO_ERROR) after the response (RFC 9113 §8.1).
        stream.respond({ ':status': 413 });
        stream.end('too big', () => stream.close(h2.NGHTTP2_NO_ERROR));
        return;
      case '/goaway':
        stream.respond({ ':status': 200 });
        stream.end('bye', () => stream.session?.close());
        return;
      case '/slow':
        setTimeout(() => {
          if (stream.closed) return;
          stream.respond({ ':status': 200 });
          stream.end('slow done');
        }, Number(url.searchParams.get('ms')));
        return;
      default:
        stream.respond({ ':status': 200 });
        stream.end('ok');
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

test('connect refused: 502 with l5d-proxy-error (curl), counted as a failure', async () => {
  const port = await closedPort();
  const p = await startProxy({ route: () => ({ host: '127.0.0.1', port }) });
  try {
    const r = await curl(['-i', `${p.url}/`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^HTTP\/2 502/);
    assert.match(r.stdout, /l5d-proxy-error: .*ECONNREFUSED/);
    await until(() => p.metrics.responses.length === 1, 2000, 'response metric');
    assert.deepEqual(
      { ...p.metrics.responses[0], latencyMs: 0, labels: undefined },
      { statusCode: 502, classification: 'failure', error: 'bad_gateway', latencyMs: 0, labels: undefined },
    );
  } finally {
    await p.close();
  }
});

test('connect refused with a 1 MiB request body: 502, the body is dropped, the stream ends', async () => {
  const port = await closedPort();
  const p = await startProxy({ route: () => ({ host: '127.0.0.1', port }) });
  try {
    const c = await connectClient(p.url);
    const reply = await request(c, { ':method': 'POST', ':path': '/' }, Buffer.alloc(1024 * 1024, 1));
    c.close();
    assert.equal(reply.headers[':status'], 502);
    assert.ok(reply.headers['l5d-proxy-error']);
  } finally {
    await p.close();
  }
});

test('route throws BPFMESH_E_UNAVAILABLE: 503', async () => {
  const p = await startProxy({
    route: () => {
      throw new BpfmeshError('BPFMESH_E_UNAVAILABLE', 'no endpoints for web.ns.svc:80');
    },
  });
  try {
    const r = await curl(['-i', `${p.url}/`]);
    assert.match(r.stdout, /^HTTP\/2 503/);
    assert.match(r.stdout, /l5d-proxy-error: no endpoints for web\.ns\.svc:80/);
  } finally {
    await p.close();
  }
});

test('connect timeout: 504', async () => {
  const slowConnect: Connector = () =>
    new Promise((_, reject) => setTimeout(() => reject(new BpfmeshError('BPFMESH_E_CONNECT_TIMEOUT', 'connect timed out after 50 ms')), 50));
  const p = await startProxy({ route: () => upstream.addr, connect: slowConnect });
  try {
    const r = await curl(['-i', `${p.url}/`]);
    assert.match(r.stdout, /^HTTP\/2 504/);
    assert.match(r.stdout, /l5d-proxy-error: connect timed out/);
  } finally {
    await p.close();
  }
});

test('an upstream that accepts TCP but never speaks HTTP/2: 504 after the handshake timeout', async () => {
  const socks = new Set<Socket>();
  const mute = net.createServer((s) => {
    socks.add(s);
    s.on('error', () => {});
  });
  await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
  const port = (mute.address() as AddressInfo).port;
  const p = await startProxy({ route: () => ({ host: '127.0.0.1', port }), settings: { upstreamHandshakeMs: 200 } });
  try {
    const t0 = Date.now();
    const r = await curl(['-i', `${p.url}/`]);
    assert.match(r.stdout, /^HTTP\/2 504/);
    assert.match(r.stdout, /l5d-proxy-error: no HTTP\/2 SETTINGS/);
    assert.ok(Date.now() - t0 >= 200);
  } finally {
    await p.close();
    for (const s of socks) s.destroy();
    await new Promise<void>((resolve) => mute.close(() => resolve()));
  }
});

test('client cancel (RST_STREAM CANCEL) closes the upstream stream with CANCEL', async () => {
  const req = client.request({ ':path': '/hang', 'x-id': 'cancel-1' });
  req.on('error', () => {});
  await until(() => seen.has('cancel-1'), 2000, 'upstream stream');
  req.close(h2.NGHTTP2_CANCEL);
  await until(() => seen.get('cancel-1')?.rstCode !== undefined, 2000, 'upstream close');
  assert.equal(seen.get('cancel-1')?.rstCode, h2.NGHTTP2_CANCEL);
});

test('client cancel before the upstream is chosen: no upstream stream is opened', async () => {
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => (release = r));
  let routing = false;
  const p = await startProxy({ route: async () => ((routing = true), await gate, upstream.addr) });
  try {
    const c = await connectClient(p.url);
    const req = c.request({ ':path': '/hang', 'x-id': 'early-cancel' });
    req.on('error', () => {});
    // Requests are counted once routed (under the endpoint's labels); wait for the route call instead.
    await until(() => routing, 2000, 'request at the proxy');
    req.close(h2.NGHTTP2_CANCEL);
    await new Promise((r) => req.once('close', r));
    release();
    await sleep(100);
    assert.equal(seen.has('early-cancel'), false);
    assert.equal(p.metrics.responses.length, 0); // no response was sent, so none is counted
    c.close();
  } finally {
    await p.close();
  }
});

test('upstream reset mid-response: the client stream is reset, never ended cleanly', async () => {
  // node:http2 cannot reset an open response without END_STREAM first, so this upstream speaks raw frames.
  const raw = await startRawUpstream((id, send) => {
    const code = rawCodes.shift() ?? h2.NGHTTP2_INTERNAL_ERROR;
    send(FRAME.HEADERS, 0x4, id, STATUS_200);
    send(FRAME.DATA, 0, id, Buffer.from('partial'));
    setTimeout(() => send(FRAME.RST_STREAM, 0, id, rstPayload(code)), 20);
  });
  const rawCodes: number[] = [];
  const p = await startProxy({ route: () => raw.addr });
  try {
    const c = await connectClient(p.url);
    // CANCEL and NO_ERROR resets make node:http2 emit 'end' on the upstream
    // stream as for END_STREAM; the proxy must not pass that on as an end.
    for (const code of [h2.NGHTTP2_PROTOCOL_ERROR, h2.NGHTTP2_CANCEL, h2.NGHTTP2_ENHANCE_YOUR_CALM]) {
      rawCodes.push(code);
      const r = await request(c, { ':path': '/' });
      assert.equal(r.headers[':status'], 200);
      assert.equal(r.body.toString(), 'partial');
      assert.equal(r.ended, false, `code ${code}: the client saw a clean end`);
      assert.equal(r.rstCode, h2.NGHTTP2_INTERNAL_ERROR, `code ${code}`);
    }
    c.close();
    await until(() => p.metrics.responses.length === 3, 2000, 'response metrics');
    assert.deepEqual(
      p.metrics.responses.map((r) => [r.statusCode, r.classification, r.error]),
      [
        [200, 'failure', 'protocol_error'],
        [200, 'failure', 'cancel'],
        [200, 'failure', 'enhance_your_calm'],
      ],
    );
  } finally {
    await p.close();
    await raw.close();
  }
});

test('client reset mid-request-body: upstream gets RST_STREAM(CANCEL), never a clean end of the body', async () => {
  const ac = new AbortController();
  const req = client.request({ ':method': 'POST', ':path': '/hang', 'x-id': 'cancel-body' }, { signal: ac.signal });
  req.on('error', () => {});
  req.write(Buffer.alloc(1000, 1));
  await until(() => seen.has('cancel-body'), 2000, 'upstream stream');
  const rec = seen.get('cancel-body')!;
  let upstreamEndedCleanly = false;
  rec.stream.on('data', () => {});
  rec.stream.on('end', () => (upstreamEndedCleanly = rec.stream.rstCode === undefined || rec.stream.rstCode === h2.NGHTTP2_NO_ERROR));
  await sleep(50);
  ac.abort(); // RST_STREAM(CANCEL) without END_STREAM
  await until(() => rec.rstCode !== undefined, 2000, 'upstream close');
  assert.equal(rec.rstCode, h2.NGHTTP2_CANCEL);
  assert.equal(upstreamEndedCleanly, false);
});

test('upstream finishes (with trailers) while the client is still sending: client gets the whole response', async () => {
  const req = client.request({ ':method': 'POST', ':path': '/early-trailers' });
  let status = 0;
  let trailers: Record<string, unknown> = {};
  let body = '';
  req.on('response', (h) => (status = Number(h[':status'])));
  req.on('trailers', (t: Record<string, unknown>) => (trailers = t));
  req.setEncoding('utf8').on('data', (d: string) => (body += d));
  req.on('error', () => {});
  req.write('first part');
  const closed = new Promise<void>((r) => req.once('close', r));
  // Keep sending for a while; the response must arrive meanwhile, not at the end.
  const timer = setInterval(() => req.write('more'), 20);
  await until(() => trailers['grpc-status'] !== undefined, 3000, 'trailers while sending');
  clearInterval(timer);
  if (!req.closed) req.end();
  await closed;
  assert.equal(status, 200);
  assert.equal(body, 'done early');
  assert.equal(trailers['grpc-status'], '0');
});

test('upstream sends trailers then RST_STREAM(NO_ERROR) while the client is still sending: the trailers reach the client', async () => {
  // grpc-go's way of ending a call the client is still streaming into.
  const name = Buffer.from('grpc-status');
  const trailer = Buffer.concat([Buffer.from([0x00, name.length]), name, Buffer.from([1]), Buffer.from('0')]); // HPACK literal
  const raw = await startRawUpstream((id, send) => {
    send(FRAME.HEADERS, 0x4, id, STATUS_200);
    send(FRAME.DATA, 0, id, Buffer.from('x'));
    send(FRAME.HEADERS, 0x4 | 0x1, id, trailer);
    send(FRAME.RST_STREAM, 0, id, rstPayload(h2.NGHTTP2_NO_ERROR));
  });
  const p = await startProxy({ route: () => raw.addr });
  try {
    const c = await connectClient(p.url);
    for (let i = 0; i < 5; i++) {
      const req = c.request({ ':method': 'POST', ':path': '/' });
      req.on('error', () => {});
      let trailers: Record<string, unknown> | undefined;
      let body = '';
      req.on('trailers', (t: Record<string, unknown>) => (trailers = t));
      req.setEncoding('utf8').on('data', (d: string) => (body += d));
      req.write('still sending');
      const timer = setInterval(() => req.closed || req.write('more'), 5);
      await new Promise((r) => req.once('end', r));
      clearInterval(timer);
      assert.equal(body, 'x');
      assert.equal(trailers?.['grpc-status'], '0', `attempt ${i}`);
      req.close();
    }
    c.close();
  } finally {
    await p.close();
    await raw.close();
  }
});

test('upstream REFUSED_STREAM before any response passes through (safe to retry); INTERNAL_ERROR becomes 502', async () => {
  const a = await request(client, { ':path': `/reset-before?code=${h2.NGHTTP2_REFUSED_STREAM}` });
  assert.equal(a.rstCode, h2.NGHTTP2_REFUSED_STREAM);
  const b = await request(client, { ':path': `/reset-before?code=${h2.NGHTTP2_INTERNAL_ERROR}` });
  assert.equal(b.headers[':status'], 502);
  assert.match(String(b.headers['l5d-proxy-error']), /reset|INTERNAL/i);
});

test('a bodiless request the upstream refused (REFUSED_STREAM) is retried once on a fresh stream', async () => {
  let n = 0;
  const raw = await startRawUpstream((id, send) => {
    if (n++ === 0) send(FRAME.RST_STREAM, 0, id, rstPayload(h2.NGHTTP2_REFUSED_STREAM));
    else send(FRAME.HEADERS, 0x4 | 0x1, id, STATUS_200); // END_HEADERS | END_STREAM
  });
  const p = await startProxy({ route: () => raw.addr });
  try {
    const c = await connectClient(p.url);
    const r = await request(c, { ':path': '/' });
    c.close();
    assert.equal(r.headers[':status'], 200);
    assert.equal(n, 2);
  } finally {
    await p.close();
    await raw.close();
  }
});

test('upstream connection dies mid-response: client stream reset; the next request reconnects', async () => {
  const before = upstream.sessions;
  const a = await request(client, { ':path': '/die-mid' });
  assert.equal(a.body.toString(), 'partial');
  assert.equal(a.rstCode, h2.NGHTTP2_INTERNAL_ERROR);
  const b = await request(client, { ':path': '/' });
  assert.equal(b.headers[':status'], 200);
  assert.equal(b.body.toString(), 'ok');
  assert.equal(upstream.sessions, before + 1);
});

test('upstream GOAWAY: in-flight stream completes, next request opens a new upstream session', async () => {
  const p = await startProxy({ route: () => upstream.addr });
  try {
    const c = await connectClient(p.url);
    const before = upstream.sessions;
    const a = await request(c, { ':path': '/goaway' });
    assert.equal(a.body.toString(), 'bye');
    await sleep(50);
    const b = await request(c, { ':path': '/' });
    assert.equal(b.body.toString(), 'ok');
    assert.equal(upstream.sessions, before + 2);
    c.close();
  } finally {
    await p.close();
  }
});

// node:http2 client here, not curl: curl 7.88, once it has the response,
// ends its upload early with END_STREAM; the proxy's nghttp2 then resets the
// stream (content-length mismatch), and curl fails the transfer if that
// frame lands in the same read as the response's end.
test('upstream answers early and stops the body with RST_STREAM(NO_ERROR): the client gets the response, its body is dropped', async () => {
  for (let i = 0; i < 3; i++) {
    const r = await request(client, { ':method': 'POST', ':path': '/early' }, Buffer.alloc(4 * 1024 * 1024, 7));
    assert.equal(r.headers[':status'], 413);
    assert.equal(r.body.toString(), 'too big');
    assert.equal(r.rstCode, h2.NGHTTP2_NO_ERROR);
  }
});

test('shutdown: GOAWAY to the client, the in-flight stream finishes, new streams are refused', async () => {
  const p = await startProxy({ route: () => upstream.addr });
  try {
    const c = await connectClient(p.url);
    let goaway = false;
    c.on('goaway', () => (goaway = true));
    c.on('error', () => {});
    const inflight = request(c, { ':path': '/slow?ms=300', 'x-id': 'drain-1' });
    await until(() => seen.has('drain-1'), 2000, 'upstream stream');
    const conn = p.conns[0]!;
    const shut = conn.shutdown(5000);
    await until(() => goaway, 2000, 'GOAWAY at the client');
    // Refused by the client's own session: Node 22 throws, Node 24 hands back a stream that errors.
    await assert.rejects(
      new Promise((resolve, reject) => {
        const s = c.request({ ':path': '/' });
        s.once('error', reject);
        s.once('response', resolve);
      }),
      { code: 'ERR_HTTP2_GOAWAY_SESSION' },
    );
    const r = await inflight;
    assert.equal(r.headers[':status'], 200);
    assert.equal(r.body.toString(), 'slow done');
    await shut;
    assert.equal(conn.session.closed, true);
  } finally {
    await p.close();
  }
});

// drainH2 shuts down the proxy's own connections.
test('drainH2 resets streams still open after the grace period', async () => {
  const p = await startProxy({ route: () => upstream.addr });
  try {
    const c = await connectClient(p.url);
    c.on('error', () => {});
    const stuck = request(c, { ':path': '/hang', 'x-id': 'drain-2' });
    await until(() => seen.has('drain-2'), 2000, 'upstream stream');
    const t0 = Date.now();
    await drainH2(p.live, 200);
    assert.ok(Date.now() - t0 >= 150);
    const r = await stuck;
    assert.notEqual(r.rstCode, h2.NGHTTP2_NO_ERROR);
    await until(() => seen.get('drain-2')?.rstCode !== undefined, 2000, 'upstream stream closed');
    assert.equal(seen.get('drain-2')?.rstCode, h2.NGHTTP2_CANCEL);
  } finally {
    await p.close();
  }
});
