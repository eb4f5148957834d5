import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { classify, detectProtocol, H2_PREFACE, type DetectResult } from '../../src/proxy/detect.js';

// A listener whose accepted sockets are handed to detectProtocol; each test
// connects a client and scripts its writes.
const accepted: ((s: Socket) => void)[] = [];
const server = createServer({ allowHalfOpen: true }, (s) => accepted.shift()?.(s));
const open = new Set<Socket>();
server.on('connection', (s) => {
  open.add(s);
  s.on('close', () => open.delete(s));
});
const ready = new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
after(async () => {
  for (const s of open) s.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

async function detectWith(
  script: (client: Socket) => Promise<void> | void,
  timeoutMs = 2000,
): Promise<{ result: DetectResult; server: Socket; client: Socket }> {
  await ready;
  const got = new Promise<Socket>((resolve) => accepted.push(resolve));
  const client = connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1' });
  client.on('error', () => {});
  const sock = await got;
  const detection = detectProtocol(sock, { timeoutMs });
  await script(client);
  const result = await detection;
  return { result, server: sock, client };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('classify: prefixes wait, full lines decide', () => {
  assert.equal(classify(Buffer.from('GET / HTTP/1.1\r\n')), 'http1');
  assert.equal(classify(Buffer.from('GET / HTTP/1.0\r\nHost: x\r\n\r\n')), 'http1');
  assert.equal(classify(Buffer.from('M-SEARCH * HTTP/1.1\r\n')), 'http1');
  // A method Node's parser knows and a space: HTTP/1, whatever follows (the HTTP layer judges the rest).
  assert.equal(classify(Buffer.from('GET /a?b=c HTTP/1')), 'http1');
  assert.equal(classify(Buffer.from('GE')), 'more');
  assert.equal(classify(Buffer.from('\r\nGET / HTTP/1.1\r\n')), 'http1'); // empty lines first (RFC 9112 §2.2)
  assert.equal(classify(Buffer.from('\n\nGET')), 'more');
  assert.equal(classify(Buffer.from('GET  / HTTP/1.1\r\n')), 'http1'); // llhttp takes two spaces
  assert.equal(classify(Buffer.from('GET /x\r\n')), 'http1'); // HTTP/0.9 form: llhttp parses it
  assert.equal(classify(Buffer.from(`POST /${'a'.repeat(4000)} HTTP/1.1\r\n`)), 'http1'); // longer than 1024 bytes
  assert.equal(classify(Buffer.from('\r\n'.repeat(600))), 'http1'); // nothing but empty lines, past what is inspected
  assert.equal(classify(Buffer.from('get / HTTP/1.1\r\n')), 'http1'); // llhttp refuses lower case; Linkerd's line test takes it (served as HTTP, never a bypass)
  assert.equal(classify(Buffer.from('get /x')), 'more');
  assert.equal(classify(Buffer.from(' GET / HTTP/1.1\r\n')), 'opaque');
  assert.equal(classify(Buffer.from('FOO /x HTTP/1.1\r\n')), 'http1'); // any token, with a whole HTTP/1.x line (Linkerd's test)
  assert.equal(classify(Buffer.from('FOO /x')), 'more');
  assert.equal(classify(Buffer.from('HELO x\r\n')), 'opaque');
  assert.equal(classify(Buffer.from('PRI * HTTP/2.0\r\n')), 'more'); // a prefix of both
  assert.equal(classify(H2_PREFACE), 'h2');
  assert.equal(classify(Buffer.from('GET / HTTP/2.0\r\n')), 'http1'); // llhttp parses it: the HTTP layer refuses it
  assert.equal(classify(Buffer.from('FOO / HTTP/2.0\r\n')), 'opaque');
  assert.equal(classify(Buffer.from('FOO / HTTP/1.1\n')), 'opaque');
  assert.equal(classify(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00])), 'opaque'); // TLS ClientHello
  assert.equal(classify(Buffer.from('*1\r\n$4\r\nPING\r\n')), 'opaque'); // redis
  // A request line of an unknown method that does not end within the inspected bytes is not HTTP/1.
  assert.equal(classify(Buffer.from(`FOO /${'a'.repeat(2000)} HTTP/1.1\r\n`)), 'opaque');
  assert.equal(classify(Buffer.from(`FOO /${'a'.repeat(500)}`), 1024), 'more');
});

test('detects the HTTP/2 preface, even split across writes, and keeps what follows', async () => {
  const settings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
  const { result, server: s, client } = await detectWith(async (c) => {
    c.write(H2_PREFACE.subarray(0, 5));
    await sleep(30);
    c.write(Buffer.concat([H2_PREFACE.subarray(5), settings]));
  });
  assert.equal(result.protocol, 'h2');
  assert.equal(result.timedOut, false);
  assert.ok(s.isPaused(), 'the socket is left paused');
  // Bytes the client sends after detection are not lost.
  client.end(Buffer.from('later'));
  const rest: Buffer[] = [];
  s.on('data', (b: Buffer) => rest.push(b));
  s.resume(); // explicitly paused: a new 'data' listener alone does not restart the flow
  await new Promise((r) => s.once('end', r));
  const all = Buffer.concat([result.buffered, ...rest]);
  assert.deepEqual(all, Buffer.concat([H2_PREFACE, settings, Buffer.from('later')]));
});

test('detects an HTTP/1 request line split across writes', async () => {
  const { result } = await detectWith(async (c) => {
    c.write('POST /upl');
    await sleep(30);
    c.write('oad HTTP/1.1\r\nHost: a\r\n');
  });
  assert.equal(result.protocol, 'http1');
  assert.equal(result.buffered.toString(), 'POST /upl'); // decided on the method; the rest stays in the socket
});

test('a request line that trickles in is HTTP/1 as soon as the method is there', async () => {
  const { result } = await detectWith(async (c) => {
    for (const ch of 'GET ') {
      c.write(ch);
      await sleep(20);
    }
  });
  assert.equal(result.protocol, 'http1');
  assert.equal(result.buffered.toString(), 'GET ');
  assert.equal(typeof result.firstByteAt, 'number');
});

test('anything else is opaque, decided on the first read', async () => {
  const hello = Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00]);
  const t0 = Date.now();
  const { result } = await detectWith((c) => void c.write(hello), 5000);
  assert.equal(result.protocol, 'opaque');
  assert.equal(result.timedOut, false);
  assert.deepEqual(result.buffered, hello);
  assert.ok(Date.now() - t0 < 1000, 'no waiting for the timeout');
});

test('a timeout inside a request start is HTTP/1 (the HTTP layer answers 408), not opaque', async () => {
  const { result } = await detectWith((c) => void c.write('GE'), 200);
  assert.equal(result.protocol, 'http1');
  assert.equal(result.timedOut, true);
  assert.equal(result.buffered.toString(), 'GE');
});

test('a timeout with other partial bytes gives opaque with them', async () => {
  const { result } = await detectWith((c) => void c.write('FOO /slow'), 200);
  assert.equal(result.protocol, 'opaque');
  assert.equal(result.timedOut, true);
  assert.equal(result.buffered.toString(), 'FOO /slow');
});

test('a server-speaks-first client (nothing sent) times out with an empty buffer', async () => {
  const { result } = await detectWith(() => {}, 150);
  assert.equal(result.protocol, 'opaque');
  assert.equal(result.timedOut, true);
  assert.equal(result.buffered.length, 0);
});

test('EOF before anything: opaque, empty, eof', async () => {
  const { result } = await detectWith((c) => void c.end(), 2000);
  assert.equal(result.protocol, 'opaque');
  assert.equal(result.timedOut, false);
  assert.equal(result.eof, true);
  assert.equal(result.buffered.length, 0);
});

test('EOF after a partial unknown-method line: opaque with the bytes', async () => {
  const { result } = await detectWith((c) => void c.end('FOO / HT'), 2000);
  assert.equal(result.protocol, 'opaque');
  assert.equal(result.eof, true);
  assert.equal(result.buffered.toString(), 'FOO / HT');
});
