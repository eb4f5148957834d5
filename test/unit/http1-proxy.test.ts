// The HTTP/1 layer end to end on loopback: node:http upstream, the proxy
// (detect + serveHttp1) in front, curl and node:http clients.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http, { type IncomingMessage } from 'node:http';
import { connect, createServer as createNetServer, type Socket } from 'node:net';
import { closeServer, curl, listen, rawExchange, startProxy, waitFor, type TestProxy } from '../helpers/http1.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

let upstreamConns = 0;
let continueAsked = 0;
const upstream = http.createServer((req, res) => {
  const url = req.url ?? '/';
  if (url === '/hello') {
    res.setHeader('content-type', 'text/plain');
    return res.end('hello');
  }
  if (url === '/echo-headers') {
    req.resume();
    req.on('end', () => res.end(JSON.stringify({ rawHeaders: req.rawHeaders, version: req.httpVersion })));
    return;
  }
  if (url === '/chunked') {
    // No length: node:http sends it chunked, in three writes, with a trailer.
    res.setHeader('Trailer', 'X-Checksum');
    res.write('one,');
    setTimeout(() => {
      res.write('two,');
      setTimeout(() => {
        res.addTrailers({ 'X-Checksum': 'abc' });
        res.end('three');
      }, 10);
    }, 10);
    return;
  }
  if (url.startsWith('/upload')) {
    const h = createHash('sha256');
    let len = 0;
    req.on('data', (b: Buffer) => {
      h.update(b);
      len += b.length;
    });
    req.on('end', () => res.end(JSON.stringify({ len, sha256: h.digest('hex'), te: req.headers['transfer-encoding'] ?? null })));
    return;
  }
  res.statusCode = 404;
  res.end();
});
upstream.on('connection', () => upstreamConns++);
upstream.on('checkContinue', (req: IncomingMessage, res: http.ServerResponse) => {
  continueAsked++;
  res.writeContinue();
  upstream.emit('request', req, res);
});
// A minimal WebSocket-style upgrade: 101, a greeting, then an upper-casing echo.
upstream.on('upgrade', (_req: IncomingMessage, sock: Socket, head: Buffer) => {
  sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nserver-hello;');
  if (head.length > 0) sock.write(head.toString().toUpperCase());
  sock.on('data', (b: Buffer) => sock.write(b.toString().toUpperCase()));
  sock.on('end', () => sock.end());
});

// A raw upstream, to control a response byte for byte.
let rawResponse = '';
const rawUpstream = createNetServer((s) => {
  s.on('error', () => {});
  s.once('data', () => s.end(rawResponse));
});

let upPort = 0;
let rawPort = 0;
let proxy: TestProxy;
let rawProxy: TestProxy;
let dir = '';
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

before(async () => {
  upPort = await listen(upstream);
  rawPort = await listen(rawUpstream);
  proxy = await startProxy({ route: () => ({ host: '127.0.0.1', port: upPort }) });
  rawProxy = await startProxy({ route: () => ({ host: '127.0.0.1', port: rawPort }) });
  dir = mkdtempSync(join(tmpdir(), 'bpfmesh-http1-'));
});
after(async () => {
  agent.destroy();
  await proxy.close();
  await rawProxy.close();
  await closeServer(upstream);
  await closeServer(rawUpstream);
  rmSync(dir, { recursive: true, force: true });
});

interface Got {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  trailers: NodeJS.Dict<string>;
}

function request(path: string, opts: http.RequestOptions = {}, body?: (req: http.ClientRequest) => void): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: proxy.port, path, agent, ...opts }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (b: Buffer) => parts.push(b));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), trailers: res.trailers }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body !== undefined) body(req);
    else req.end();
  });
}

test('keep-alive: upstream connections are reused across requests and clients', { timeout: 20000 }, async () => {
  const before = upstreamConns;
  for (let i = 0; i < 20; i++) {
    const r = await request('/hello');
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), 'hello');
  }
  // Five separate curl runs (five client connections), three requests each.
  const url = `http://127.0.0.1:${proxy.port}/hello`;
  for (let i = 0; i < 5; i++) {
    const r = await curl(['--http1.1', url, url, url]);
    assert.equal(r.stdout, 'hellohellohello');
  }
  const used = upstreamConns - before;
  assert.ok(used >= 1 && used <= 2, `35 requests took ${used} upstream connections`);
  assert.ok(proxy.pool.idleCount() >= 1, 'the connection waits in the pool');
});

test('chunked request and response bodies, trailers included', { timeout: 20000 }, async () => {
  const parts = [Buffer.alloc(1000, 'a'), Buffer.alloc(70000, 'b'), Buffer.from('end')];
  const up = await request('/upload', { method: 'POST' }, (req) => {
    // No content-length: node:http sends chunked.
    let i = 0;
    const next = (): void => {
      if (i === parts.length) return void req.end();
      req.write(parts[i++]);
      setTimeout(next, 5);
    };
    next();
  });
  const info = JSON.parse(up.body.toString()) as { len: number; sha256: string; te: string | null };
  assert.equal(info.te, 'chunked');
  assert.equal(info.len, 71003);
  assert.equal(info.sha256, sha(Buffer.concat(parts)));

  const down = await request('/chunked');
  assert.equal(down.headers['transfer-encoding'], 'chunked');
  assert.equal(down.body.toString(), 'one,two,three');
  assert.equal(down.trailers['x-checksum'], 'abc');
});

test('Expect: 100-continue: the interim response is passed through', { timeout: 20000 }, async () => {
  const file = join(dir, 'continue.bin');
  const data = Buffer.alloc(300_000, 'x');
  writeFileSync(file, data);
  const asked = continueAsked;
  const r = await curl(['--http1.1', '-v', '-H', 'Expect: 100-continue', '--data-binary', `@${file}`, `http://127.0.0.1:${proxy.port}/upload`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /< HTTP\/1\.1 100 Continue/);
  assert.equal(continueAsked, asked + 1, 'the upstream saw the Expect');
  const info = JSON.parse(r.stdout) as { len: number; sha256: string };
  assert.equal(info.len, data.length);
  assert.equal(info.sha256, sha(data));
});

test('an HTTP/1.0 client gets a de-chunked, close-delimited body', { timeout: 20000 }, async () => {
  const r = await curl(['--http1.0', '-i', `http://127.0.0.1:${proxy.port}/chunked`]);
  assert.equal(r.code, 0, r.stderr);
  const [head, body] = r.stdout.split('\r\n\r\n');
  assert.doesNotMatch(head!, /transfer-encoding/i);
  assert.match(head!, /^connection: close$/im);
  assert.equal(body, 'one,two,three');
});

test('an HTTP/1.0 client that asks for keep-alive keeps its connection when the length is known', { timeout: 20000 }, async () => {
  const url = `http://127.0.0.1:${proxy.port}/hello`;
  const r = await curl(['--http1.0', '-v', '-H', 'Connection: keep-alive', url, url]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'hellohello');
  assert.match(r.stderr, /< Connection: keep-alive/i);
  assert.match(r.stderr, /Re-using existing connection/);
  // Without asking, the connection closes after the response.
  const once = await rawExchange(proxy.port, 'GET /hello HTTP/1.0\r\n\r\n');
  assert.ok(once.closed);
  assert.match(once.text, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(once.text, /\r\nconnection: close\r\n/i);
  assert.ok(once.text.endsWith('\r\n\r\nhello'));
});

test('hop-by-hop fields are removed both ways; end-to-end ones kept in order and case', { timeout: 20000 }, async () => {
  // Raw bytes, so that every field is exactly as written (node:http would refuse some).
  const sent = await rawExchange(
    proxy.port,
    'GET /echo-headers HTTP/1.1\r\nX-First: 1\r\nHost: a\r\nConnection: close, X-Secret\r\nX-Secret: hidden\r\n' +
      'Keep-Alive: timeout=9\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-CamelCase: v\r\n\r\n',
  );
  const r = { body: Buffer.from(sent.text.slice(sent.text.indexOf('\r\n\r\n') + 4), 'latin1') };
  const { rawHeaders, version } = JSON.parse(r.body.toString()) as { rawHeaders: string[]; version: string };
  assert.equal(version, '1.1');
  const names = rawHeaders.filter((_, i) => i % 2 === 0);
  for (const hop of ['connection', 'x-secret', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade']) {
    assert.ok(!names.some((n) => n.toLowerCase() === hop), `${hop} was forwarded: ${names.join(',')}`);
  }
  assert.ok(names.includes('X-CamelCase') && names.includes('X-First'), names.join(','));
  assert.ok(names.indexOf('X-First') < names.indexOf('X-CamelCase'));

  rawResponse = 'HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Resp-Hop\r\nKeep-Alive: timeout=5\r\nX-Resp-Hop: 1\r\nX-End: ok\r\nContent-Length: 2\r\n\r\nok';
  const raw = await rawExchange(rawProxy.port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
  assert.equal(raw.text, 'HTTP/1.1 200 OK\r\nX-End: ok\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
});

test('an HTTP/1.0 upstream response (close-delimited) reaches a 1.1 client', { timeout: 20000 }, async () => {
  rawResponse = 'HTTP/1.0 200 OK\r\nX-Old: yes\r\n\r\nuntil close';
  const raw = await rawExchange(rawProxy.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n');
  assert.ok(raw.closed);
  assert.equal(raw.text, 'HTTP/1.1 200 OK\r\nX-Old: yes\r\nConnection: close\r\n\r\nuntil close');
});

test('Upgrade: after 101 the bytes flow both ways, including those sent with the request', { timeout: 20000 }, async () => {
  const s = connect({ port: proxy.port, host: '127.0.0.1' });
  let got = '';
  s.on('data', (b: Buffer) => (got += b.toString('latin1')));
  s.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly;');
  await waitFor(() => got.includes('EARLY;'));
  assert.match(got, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  assert.match(got, /\r\nUpgrade: websocket\r\n/);
  assert.match(got, /\r\nConnection: upgrade\r\n/i);
  assert.ok(got.includes('\r\n\r\nserver-hello;'));
  s.write('more bytes');
  await waitFor(() => got.endsWith('MORE BYTES'));
  s.end();
  await new Promise((r) => s.once('close', r));
  const ws = proxy.metrics.responses.filter((x) => x.statusCode === 101);
  assert.equal(ws.length, 1);
});

test('pipelined requests are answered in order', { timeout: 20000 }, async () => {
  const one = 'GET /hello HTTP/1.1\r\nHost: a\r\n\r\n';
  const last = 'GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n';
  const r = await rawExchange(proxy.port, one + one + last);
  assert.ok(r.closed);
  assert.equal(r.text.match(/HTTP\/1\.1 200 OK/g)?.length, 3);
  assert.ok(r.text.endsWith('hello'));
});

test('metrics: one response per request, with status, classification and latency', { timeout: 20000 }, async () => {
  const m = proxy.metrics;
  assert.equal(m.responses.length, m.requests);
  for (const r of m.responses) {
    assert.equal(r.classification, r.statusCode >= 500 ? 'failure' : 'success');
    assert.ok(r.latencyMs >= 0 && r.latencyMs < 10000);
    assert.equal(r.error, undefined);
  }
  assert.ok(m.opens.every((p) => p === 'dst'));
  assert.ok(m.read.src > 0 && m.written.src > 0);
});
