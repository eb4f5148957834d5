// The responses the proxy makes itself (502, 503, 504, 400, 431), cut
// connections, and that the proxy keeps serving after each.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { connect, createServer as createNetServer, type Socket } from 'node:net';
import { BpfmeshError } from '../../src/errors.js';
import type { Addr } from '../../src/proxy/types.js';
import { closeServer, curl, deadPort, listen, rawExchange, startProxy, waitFor, type TestProxy } from '../helpers/http1.js';

// node:http upstream for the good paths and the cut upload.
let uploadSockets: Socket[] = [];
let uploadBytes = 0;
const upstream = http.createServer((req, res) => {
  if (req.url === '/upload') {
    uploadSockets.push(req.socket);
    req.on('data', (b: Buffer) => (uploadBytes += b.length));
    req.on('end', () => res.end('done'));
    return;
  }
  res.end('ok');
});

// A raw upstream whose behaviour each test sets.
let onRaw: (s: Socket, n: number) => void = () => {};
const rawSockets = new Set<Socket>();
let rawConns = 0;
const rawUpstream = createNetServer((s) => {
  rawConns++;
  rawSockets.add(s);
  s.on('close', () => rawSockets.delete(s));
  s.on('error', () => {});
  let n = 0;
  s.on('data', () => onRaw(s, ++n));
});

let upPort = 0;
let rawPort = 0;
let route: () => Addr = () => ({ host: '127.0.0.1', port: upPort });
let proxy: TestProxy;

before(async () => {
  upPort = await listen(upstream);
  rawPort = await listen(rawUpstream);
  proxy = await startProxy({ route: () => route(), responseTimeoutMs: 300 });
});
after(async () => {
  await proxy.close();
  for (const s of rawSockets) s.destroy();
  await closeServer(upstream);
  await closeServer(rawUpstream);
});

const good = (): Addr => ({ host: '127.0.0.1', port: upPort });
const raw = (): Addr => ({ host: '127.0.0.1', port: rawPort });
const lastResponse = () => proxy.metrics.responses[proxy.metrics.responses.length - 1]!;

async function stillServes(): Promise<void> {
  route = good;
  const r = await curl(['--http1.1', `http://127.0.0.1:${proxy.port}/`]);
  assert.equal(r.stdout, 'ok', r.stderr);
}

test('502 with l5d-proxy-error when the upstream refuses the connection; the client connection stays usable', { timeout: 20000 }, async () => {
  const port = await deadPort();
  route = () => ({ host: '127.0.0.1', port });
  const url = `http://127.0.0.1:${proxy.port}/x`;
  const r = await curl(['--http1.1', '-i', '-v', url, url]);
  assert.equal(r.stdout.match(/^HTTP\/1\.1 502 Bad Gateway\r$/gm)?.length, 2, r.stdout);
  assert.match(r.stdout, /^l5d-proxy-error: connect error: .*ECONNREFUSED/m);
  assert.match(r.stderr, /Re-using existing connection/);
  const m = lastResponse();
  assert.equal(m.statusCode, 502);
  assert.equal(m.classification, 'failure');
  assert.equal(m.error, 'connect_error');
  await stillServes();
});

test('504 with l5d-proxy-error when the response does not come in time', { timeout: 20000 }, async () => {
  route = raw;
  let held: Socket | undefined;
  onRaw = (s) => (held = s); // read the request, never answer
  const t0 = Date.now();
  const r = await curl(['--http1.1', '-i', `http://127.0.0.1:${proxy.port}/slow`]);
  assert.match(r.stdout, /^HTTP\/1\.1 504 Gateway Timeout\r$/m);
  assert.match(r.stdout, /^l5d-proxy-error: response timed out after 300 ms\r$/m);
  assert.ok(Date.now() - t0 >= 280);
  assert.equal(lastResponse().error, 'response_timeout');
  // The upstream connection is given up, not pooled.
  await waitFor(() => held !== undefined && held.destroyed);
  assert.equal(proxy.pool.idleCount(`127.0.0.1:${rawPort}`), 0);
  await stillServes();
});

test('503 with l5d-proxy-error when route() has no endpoint', { timeout: 20000 }, async () => {
  route = () => {
    throw new BpfmeshError('BPFMESH_E_UNAVAILABLE', 'no endpoints for web.default.svc.cluster.local:80');
  };
  const r = await curl(['--http1.1', '-i', `http://127.0.0.1:${proxy.port}/`]);
  assert.match(r.stdout, /^HTTP\/1\.1 503 Service Unavailable\r$/m);
  assert.match(r.stdout, /^l5d-proxy-error: service unavailable: no endpoints/m);
  assert.equal(lastResponse().error, 'unavailable');
  await stillServes();
});

test('502 when the upstream resets before answering', { timeout: 20000 }, async () => {
  route = raw;
  onRaw = (s) => s.resetAndDestroy();
  const r = await curl(['--http1.1', '-i', `http://127.0.0.1:${proxy.port}/`]);
  assert.match(r.stdout, /^HTTP\/1\.1 502 Bad Gateway\r$/m);
  assert.match(r.stdout, /^l5d-proxy-error: connection (error|closed) before a response/m);
  assert.equal(lastResponse().error, 'upstream_reset');
  await stillServes();
});

test('a pooled connection that dies as it is reused is replaced transparently for a GET', { timeout: 20000 }, async () => {
  route = raw;
  // First request on a connection: answered (keep-alive); second: dropped unanswered.
  onRaw = (s, n) => (n === 1 ? s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi') : s.destroy());
  const url = `http://127.0.0.1:${proxy.port}/`;
  const conns = rawConns;
  const a = await curl(['--http1.1', url]);
  assert.equal(a.stdout, 'hi');
  const b = await curl(['--http1.1', url]);
  assert.equal(b.stdout, 'hi', 'replayed on a new connection');
  assert.equal(rawConns - conns, 2, 'the pooled connection was tried, then a new one');
});

test('400 and close on a malformed request line, even after a good request', { timeout: 20000 }, async () => {
  route = good;
  const r = await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\nNOT A REQUEST LINE\r\n\r\n');
  assert.ok(r.closed);
  assert.match(r.text, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(r.text, /HTTP\/1\.1 400 Bad Request\r\nl5d-proxy-error: malformed HTTP\/1 message: bad request line\r\n/);
  assert.match(r.text, /connection: close\r\n\r\n$/);
  assert.equal(lastResponse().error, 'malformed_request');
  const h = await rawExchange(proxy.port, 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n');
  assert.match(h.text, /^HTTP\/1\.1 400 Bad Request\r\n/);
  assert.ok(h.closed);
  const c = await rawExchange(proxy.port, 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n');
  assert.match(c.text, /^HTTP\/1\.1 400 Bad Request\r\nl5d-proxy-error: malformed chunked body/);
  await stillServes();
});

test('431 and close when the request head exceeds 64 KiB', { timeout: 20000 }, async () => {
  route = good;
  const r = await rawExchange(proxy.port, `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(70_000)}\r\n\r\n`);
  assert.ok(r.closed);
  assert.match(r.text, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\nl5d-proxy-error: headers too large/);
  assert.equal(lastResponse().error, 'headers_too_large');
  await stillServes();
});

test('a client that disconnects mid-body: the upstream connection is destroyed, not pooled', { timeout: 20000 }, async () => {
  route = good;
  uploadSockets = [];
  uploadBytes = 0;
  const responses = proxy.metrics.responses.length;
  const s = connect({ port: proxy.port, host: '127.0.0.1' });
  s.on('error', () => {});
  s.write('POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n');
  s.write(Buffer.alloc(1 << 20, 'z'));
  await waitFor(() => uploadBytes >= 1 << 20, 5000);
  const up = uploadSockets[0]!;
  s.destroy();
  await waitFor(() => up.destroyed, 5000);
  assert.equal(proxy.metrics.responses.length, responses, 'the cut request got no response');
  await stillServes();
});

test('a client that half-closes mid-body is treated the same way', { timeout: 20000 }, async () => {
  route = good;
  uploadSockets = [];
  uploadBytes = 0;
  const s = connect({ port: proxy.port, host: '127.0.0.1' });
  s.on('error', () => {});
  s.write('POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n');
  s.end(Buffer.alloc(10, 'z'));
  let answer = '';
  s.on('data', (b: Buffer) => (answer += b.toString()));
  await new Promise((r) => s.once('close', r));
  assert.equal(answer, '', 'no response to a request cut short');
  // Whether or not the upstream saw the request start, its connection is gone.
  await waitFor(() => uploadSockets.every((u) => u.destroyed), 5000);
  await stillServes();
});

test('an upstream reset in a close-delimited body resets the client (a FIN would look complete)', { timeout: 20000 }, async () => {
  route = raw;
  onRaw = (s) => {
    s.write('HTTP/1.1 200 OK\r\n\r\npartial');
    setTimeout(() => s.resetAndDestroy(), 50);
  };
  const c = connect({ port: proxy.port, host: '127.0.0.1' });
  let got = '';
  c.on('data', (b: Buffer) => (got += b.toString()));
  c.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
  const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    c.once('error', resolve);
    c.once('close', () => resolve(undefined));
  });
  assert.equal(err?.code, 'ECONNRESET');
  assert.ok(got.endsWith('partial'));
  await stillServes();
});

test('a truncated content-length body cuts the client connection', { timeout: 20000 }, async () => {
  route = raw;
  onRaw = (s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this');
  const r = await curl(['--http1.1', `http://127.0.0.1:${proxy.port}/`]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /transfer closed with 91 bytes remaining|Recv failure|reset/i);
  await stillServes();
});
