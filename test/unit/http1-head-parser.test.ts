import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  HeadReader,
  HeaderFlag,
  getHeader,
  parseRequestHead,
  parseResponseHead,
  rewriteHead,
} from '../../src/proxy/http1/head-parser.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const MALFORMED = { code: 'BPFMESH_E_HTTP_MALFORMED' };

test('a request head: line, headers in order and case, framing', () => {
  const h = parseRequestHead(b('POST /a?b=1 HTTP/1.1\r\nHost: svc:8080\r\nX-Mixed-Case:  v 1 \r\ncontent-length: 12\r\n\r\n'));
  assert.equal(h.method, 'POST');
  assert.equal(h.target, '/a?b=1');
  assert.equal(h.versionMinor, 1);
  assert.deepEqual(h.headers, ['Host', 'svc:8080', 'X-Mixed-Case', 'v 1', 'content-length', '12']);
  assert.equal(h.framing, 'length');
  assert.equal(h.contentLength, 12);
  assert.equal(h.keepAlive, true);
  assert.equal(h.host, 'svc:8080');
  assert.equal(getHeader(h, 'x-mixed-case'), 'v 1');
});

test('request framing: none, chunked, 1.0 keep-alive, upgrade, expect', () => {
  const g = parseRequestHead(b('GET / HTTP/1.1\r\nHost: a\r\n\r\n'));
  assert.equal(g.framing, 'none');
  const c = parseRequestHead(b('PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n'));
  assert.equal(c.framing, 'chunked');
  assert.equal(parseRequestHead(b('GET / HTTP/1.0\r\n\r\n')).keepAlive, false);
  assert.equal(parseRequestHead(b('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n')).keepAlive, true);
  assert.equal(parseRequestHead(b('GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')).keepAlive, false);
  const u = parseRequestHead(b('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n'));
  assert.equal(u.upgrade, true);
  assert.equal(parseRequestHead(b('GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n')).upgrade, false);
  assert.equal(parseRequestHead(b('PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n')).expectContinue, true);
  // HTTP/1.0 with Transfer-Encoding: served, then the connection closes (RFC 9112 §6.1).
  assert.equal(parseRequestHead(b('PUT / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n')).keepAlive, false);
  assert.throws(() => parseRequestHead(b('GET / HTTP/1.5\r\nHost: a\r\n\r\n')), MALFORMED);
});

test('malformed requests are refused with BPFMESH_E_HTTP_MALFORMED', () => {
  const bad = [
    'GET  / HTTP/1.1\r\nHost: a\r\n\r\n',
    'GET / HTTP/2.0\r\nHost: a\r\n\r\n',
    'G(T / HTTP/1.1\r\nHost: a\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a\r\nX: a\nY: b\r\n\r\n',
    'GET / HTTP/1.1\r\n\r\n', // 1.1 without Host
    'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n',
    // Lists and repeats, even of one value: refused as llhttp does, never forwarded as received.
    'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n',
  ];
  for (const t of bad) assert.throws(() => parseRequestHead(b(t)), MALFORMED, JSON.stringify(t));
});

test('response framing follows RFC 9112 §6.3', () => {
  const r = (s: string, head = false) => parseResponseHead(b(s), head);
  assert.equal(r('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n').framing, 'length');
  assert.equal(r('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n', true).framing, 'none');
  assert.equal(r('HTTP/1.1 204 No Content\r\n\r\n').framing, 'none');
  assert.equal(r('HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n').framing, 'none');
  assert.equal(r('HTTP/1.1 100 Continue\r\n\r\n').framing, 'none');
  assert.equal(r('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n').framing, 'chunked');
  assert.equal(r('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n').framing, 'close');
  const c = r('HTTP/1.1 200 OK\r\n\r\n');
  assert.equal(c.framing, 'close');
  assert.equal(c.keepAlive, false, 'a close-delimited response ends the connection');
  assert.equal(r('HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n').reason, '');
  const z = r('HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n');
  assert.equal(z.keepAlive, false);
  assert.equal(z.statusCode, 200);
  assert.throws(() => r('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n'), MALFORMED);
  assert.throws(() => r('HTTP/1.1 20 OK\r\n\r\n'), MALFORMED);
  assert.throws(() => r('ICY 200 OK\r\n\r\n'), MALFORMED);
});

test('HeadReader: split heads, leftovers, leading CRLF, size limit', () => {
  const msg = b('GET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT');
  for (let cut = 1; cut < msg.length - 4; cut++) {
    const r = new HeadReader(1024, true);
    assert.equal(r.push(msg.subarray(0, cut)), false, `cut ${cut}`);
    assert.equal(r.push(msg.subarray(cut)), true, `cut ${cut}`);
    assert.equal(r.head.toString(), 'GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    assert.equal(r.rest.toString(), 'NEXT');
  }
  const lead = new HeadReader(1024, true);
  assert.equal(lead.push(b('\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n')), true);
  assert.ok(lead.head.toString().startsWith('GET'));
  const small = new HeadReader(64);
  assert.throws(() => small.push(b(`GET / HTTP/1.1\r\nX: ${'a'.repeat(100)}\r\n\r\n`)), { code: 'BPFMESH_E_HTTP_HEADERS_TOO_LARGE' });
  const grow = new HeadReader(64);
  assert.equal(grow.push(b('GET / HTTP/1.1\r\nX: ')), false);
  assert.throws(() => grow.push(b('a'.repeat(60))), { code: 'BPFMESH_E_HTTP_HEADERS_TOO_LARGE' });
});

test('rewriteHead drops hop-by-hop fields and those named in Connection, keeps the rest byte for byte', () => {
  const text =
    'GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\n' +
    'X-End: 2\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Last: 3\r\n\r\n';
  const h = parseRequestHead(b(text));
  const out = rewriteHead(h, HeaderFlag.HOP | HeaderFlag.UPGRADE).toString('latin1');
  assert.equal(out, 'GET /x HTTP/1.1\r\nHost: a\r\nX-End: 2\r\nX-Last: 3\r\n\r\n');
  const v = rewriteHead(h, HeaderFlag.HOP, 'GET /x HTTP/1.1', 'Connection: upgrade\r\n').toString('latin1');
  assert.equal(v, 'GET /x HTTP/1.1\r\nHost: a\r\nX-End: 2\r\nUpgrade: h2c\r\nX-Last: 3\r\nConnection: upgrade\r\n\r\n');
  // Nothing to change: the very bytes received.
  const plain = parseRequestHead(b('GET / HTTP/1.1\r\nHost: a\r\n\r\n'));
  assert.equal(rewriteHead(plain, HeaderFlag.HOP | HeaderFlag.UPGRADE), plain.raw);
  // Content-Length cannot be dropped by naming it in Connection.
  const cl = parseRequestHead(b('POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 1\r\n\r\n'));
  assert.equal(rewriteHead(cl, HeaderFlag.HOP).toString(), 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n');
});
