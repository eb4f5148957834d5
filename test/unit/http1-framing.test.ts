// Framing per RFC 9112/9110 through the real proxies (issue #11 defect 5):
// trailers are checked like header fields and lose their l5d-* fields
// inbound, chunk-size lines are strict, Content-Length lists and repeats are
// refused, HTTP/1.0 with chunked closes, the proxy's own version goes on the
// wire.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { checkTrailers, ChunkedDecoder } from '../../src/proxy/http1/body.js';
import { exchange, startChain, type Chain } from '../helpers/proxy-chain.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
let chain: Chain;
before(async () => (chain = await startChain()));
after(() => chain.close());

const chunked = (trailer: string, size = '5'): Buffer =>
  b(`POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${size}\r\nhello\r\n0\r\n${trailer}\r\n`);

test('trailers reach the app checked; l5d-* fields in them are dropped inbound', async () => {
  const n = chain.app.seen.length;
  const r = await exchange(chain.inboundPort, [chunked('x-sum: 1\r\nl5d-client-id: forged\r\nL5D-Extra: 2\r\n')], { untilMs: 1000 });
  assert.match(r.text, /^HTTP\/1\.1 200 /);
  const seen = chain.app.seen[n]!;
  assert.equal(seen.body, 'hello');
  assert.deepEqual(seen.rawTrailers, ['x-sum', '1']);
});

test('outbound, trailers pass as they are (the peer inbound proxy filters)', async () => {
  const n = chain.app.seen.length;
  await exchange(chain.outboundPort, [chunked('x-sum: 1\r\n')], { untilMs: 1000 });
  assert.deepEqual(chain.app.seen[n]?.rawTrailers, ['x-sum', '1']);
});

for (const [name, trailer] of [
  ['a request line', 'GET /smuggled HTTP/1.1\r\n'],
  ['a NUL', 'x-a: b\0c\r\n'],
  ['obs-fold', 'x-a: b\r\n c\r\n'],
  ['Content-Length', 'Content-Length: 5\r\n'],
  ['Transfer-Encoding', 'Transfer-Encoding: chunked\r\n'],
  ['a name with a space', 'x a: b\r\n'],
] as const) {
  test(`a trailer with ${name} is refused (400) and nothing of it reaches the app`, async () => {
    const n = chain.app.seen.length;
    const r = await exchange(chain.inboundPort, [chunked(trailer)], { untilMs: 1000 });
    assert.match(r.text, /^HTTP\/1\.1 400 /);
    assert.ok(r.closed);
    assert.equal(chain.app.seen.length, n, 'the app got no request');
  });
}

for (const size of ['5 ', '5 junk', '5 6', '5\t;a=b', '5 ;a=b']) {
  test(`chunk-size line ${JSON.stringify(size)} is refused (400)`, async () => {
    const n = chain.app.seen.length;
    const r = await exchange(chain.inboundPort, [chunked('', size)], { untilMs: 1000 });
    assert.match(r.text, /^HTTP\/1\.1 400 /);
    assert.equal(chain.app.seen.length, n);
  });
}

test('a chunk extension right after the size is fine', async () => {
  const r = await exchange(chain.inboundPort, [chunked('', '5;a=b')], { untilMs: 1000 });
  assert.match(r.text, /^HTTP\/1\.1 200 /);
});

for (const cl of ['Content-Length: 5, 5\r\n', 'Content-Length: 5\r\nContent-Length: 5\r\n']) {
  test(`${JSON.stringify(cl)} is refused (400), never forwarded as received`, async () => {
    const n = chain.app.seen.length;
    const r = await exchange(chain.inboundPort, [b(`POST /cl HTTP/1.1\r\nHost: a\r\n${cl}\r\nhello`)], { untilMs: 1000 });
    assert.match(r.text, /^HTTP\/1\.1 400 /);
    assert.equal(chain.app.seen.length, n);
  });
}

test('HTTP/1.0 with chunked is served, then the connection closes (no second request on it)', async () => {
  const n = chain.app.seen.length;
  const r = await exchange(
    chain.inboundPort,
    [b('POST /ten HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n')],
    { untilMs: 1500 },
  );
  assert.match(r.text, /^HTTP\/1\.1 200 /);
  assert.match(r.text, /connection: close/i);
  assert.ok(r.closed);
  assert.deepEqual(chain.app.seen.slice(n).map((s) => s.url), ['/ten']);
});

for (const v of ['1.2', '1.9']) {
  test(`HTTP/${v} is refused (400), as llhttp refuses it, never forwarded with the client's version`, async () => {
    const n = chain.app.seen.length;
    const r = await exchange(chain.inboundPort, [b(`GET /v HTTP/${v}\r\nHost: a\r\n\r\n`)], { untilMs: 800 });
    assert.match(r.text, /^HTTP\/1\.1 400 /);
    assert.equal(chain.app.seen.length, n);
  });
}

test('an upstream answering HTTP/1.2 reaches the client as the proxy\'s own HTTP/1.1', async () => {
  const { createServer } = await import('node:net');
  const odd = createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => s.end('HTTP/1.2 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok'));
  });
  const c2 = await startChain({}, { listen: async () => { await new Promise<void>((r) => odd.listen(0, '127.0.0.1', r)); return (odd.address() as { port: number }).port; }, close: () => new Promise<void>((r) => odd.close(() => r())) });
  try {
    const r = await exchange(c2.inboundPort, [b('GET / HTTP/1.1\r\nHost: a\r\n\r\n')], { untilMs: 800 });
    assert.match(r.text, /^HTTP\/1\.1 200 OK\r\n/);
  } finally {
    await c2.close();
  }
});

test('checkTrailers and the decoder: the trailer section is held back and rewritten only when a field is dropped', () => {
  const raw = b('x-a: 1\r\nl5d-x: 2\r\n\r\n');
  assert.equal(checkTrailers(raw, false), raw);
  assert.equal(checkTrailers(raw, true).toString('latin1'), 'x-a: 1\r\n\r\n');
  const d = new ChunkedDecoder();
  const body = b('3\r\nabc\r\n0\r\nx-a: 1\r\n\r\nNEXT');
  // Fed one byte at a time, the forwarded part stops at the trailer section.
  let fwd = '';
  for (let i = 0; i < body.length && !d.done; i++) {
    const one = body.subarray(i, i + 1);
    d.feed(one);
    fwd += one.subarray(0, d.forwardEnd).toString('latin1');
  }
  assert.equal(fwd, '3\r\nabc\r\n0\r\n');
  assert.equal(d.trailerBytes.toString('latin1'), 'x-a: 1\r\n\r\n');
});
