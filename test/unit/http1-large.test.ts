// 100 MiB bodies through the HTTP/1 layer, byte for byte (sha256), both
// ways, framed by length and chunked, with curl and node:http clients.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import { closeServer, curl, listen, startProxy, type TestProxy } from '../helpers/http1.js';

const SIZE = 100 * 1024 * 1024;
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

let data: Buffer;
let digest = '';
let dir = '';
let file = '';

const upstream = http.createServer((req, res) => {
  if (req.url === '/upload') {
    const h = createHash('sha256');
    let len = 0;
    req.on('data', (b: Buffer) => {
      h.update(b);
      len += b.length;
    });
    req.on('end', () => res.end(JSON.stringify({ len, sha256: h.digest('hex') })));
    return;
  }
  // Download: /length sends Content-Length, /chunked does not (node:http chunks it).
  if (req.url === '/length') res.setHeader('content-length', SIZE);
  createReadStream(file).pipe(res);
});

let proxy: TestProxy;
before(async () => {
  data = randomBytes(SIZE);
  digest = sha(data);
  dir = mkdtempSync(join(tmpdir(), 'bpfmesh-http1-large-'));
  file = join(dir, 'body.bin');
  writeFileSync(file, data);
  const port = await listen(upstream);
  proxy = await startProxy({ route: () => ({ host: '127.0.0.1', port }) });
});
after(async () => {
  await proxy.close();
  await closeServer(upstream);
  rmSync(dir, { recursive: true, force: true });
});

test('100 MiB upload with curl (content-length), byte-identical', { timeout: 60000 }, async () => {
  const r = await curl(['--http1.1', '--data-binary', `@${file}`, '-H', 'content-type: application/octet-stream', `http://127.0.0.1:${proxy.port}/upload`], 60000);
  assert.equal(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout) as { len: number; sha256: string };
  assert.equal(info.len, SIZE);
  assert.equal(info.sha256, digest);
});

test('100 MiB chunked upload with node:http, byte-identical', { timeout: 60000 }, async () => {
  const body = await new Promise<string>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: proxy.port, path: '/upload', method: 'POST' }, (res) => {
      let s = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (s += c));
      res.on('end', () => resolve(s));
    });
    req.on('error', reject);
    createReadStream(file, { highWaterMark: 256 * 1024 }).pipe(req);
  });
  const info = JSON.parse(body) as { len: number; sha256: string };
  assert.equal(info.len, SIZE);
  assert.equal(info.sha256, digest);
});

for (const path of ['/length', '/chunked']) {
  test(`100 MiB download (${path.slice(1)}), byte-identical`, { timeout: 60000 }, async () => {
    const got = await new Promise<{ te: string | undefined; len: number; sha256: string }>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: proxy.port, path }, (res) => {
          const h = createHash('sha256');
          let len = 0;
          res.on('data', (b: Buffer) => {
            h.update(b);
            len += b.length;
          });
          res.on('end', () => resolve({ te: res.headers['transfer-encoding'], len, sha256: h.digest('hex') }));
          res.on('error', reject);
        })
        .on('error', reject);
    });
    assert.equal(got.te, path === '/chunked' ? 'chunked' : undefined);
    assert.equal(got.len, SIZE);
    assert.equal(got.sha256, digest);
  });
}

test('100 MiB download to an HTTP/1.0 client (de-chunked) with curl, byte-identical', { timeout: 60000 }, async () => {
  const out = join(dir, 'down.bin');
  const r = await curl(['--http1.0', '-o', out, '-D', '-', `http://127.0.0.1:${proxy.port}/chunked`], 60000);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stdout, /transfer-encoding/i);
  const h = createHash('sha256');
  for await (const b of createReadStream(out)) h.update(b as Buffer);
  assert.equal(h.digest('hex'), digest);
  assert.equal(sha(data), digest);
});

// Backpressure: with a reader that does not read, the writer at the other
// end must be held back by the proxy (not buffered in it).
const STALL_TOTAL = 256 * 1024 * 1024;
const chunk = Buffer.alloc(64 * 1024, 'p');

test('backpressure: a client that stops reading holds the upstream back', { timeout: 60000 }, async () => {
  let written = 0;
  let finished = false;
  const slow = http.createServer((_req, res) => {
    const pump = (): void => {
      while (written < STALL_TOTAL) {
        written += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end(() => (finished = true));
    };
    pump();
  });
  const port = await listen(slow);
  const p2 = await startProxy({ route: () => ({ host: '127.0.0.1', port }) });
  try {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: p2.port, path: '/' }, resolve).on('error', reject);
    });
    res.pause();
    await new Promise((r) => setTimeout(r, 800));
    const stalled = written;
    await new Promise((r) => setTimeout(r, 400));
    assert.ok(written - stalled <= 1024 * 1024, `the upstream kept writing while the client did not read (${written - stalled} bytes)`);
    assert.ok(written < STALL_TOTAL / 4, `the upstream wrote ${written} bytes into a stalled path`);
    let len = 0;
    res.on('data', (b: Buffer) => (len += b.length));
    res.resume();
    await new Promise((r) => res.once('end', r));
    assert.equal(len, STALL_TOTAL);
    assert.ok(finished);
  } finally {
    await p2.close();
    await closeServer(slow);
  }
});

test('backpressure: an upstream that stops reading holds the client back', { timeout: 60000 }, async () => {
  let reqRef: http.IncomingMessage | undefined;
  let received = 0;
  const slow = http.createServer((req, res) => {
    reqRef = req;
    req.pause();
    req.on('data', (b: Buffer) => (received += b.length));
    req.on('end', () => res.end(String(received)));
  });
  const port = await listen(slow);
  const p2 = await startProxy({ route: () => ({ host: '127.0.0.1', port }) });
  try {
    let sent = 0;
    const req = http.request({ host: '127.0.0.1', port: p2.port, path: '/', method: 'POST', headers: { 'content-length': STALL_TOTAL } });
    const answer = new Promise<string>((resolve, reject) => {
      req.on('response', (res) => {
        let s = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (s += c));
        res.on('end', () => resolve(s));
      });
      req.on('error', reject);
    });
    const write = (): void => {
      while (sent < STALL_TOTAL) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', write);
      }
      req.end();
    };
    write();
    await new Promise((r) => setTimeout(r, 800));
    const stalled = sent;
    await new Promise((r) => setTimeout(r, 400));
    assert.ok(sent - stalled <= 1024 * 1024, `the client kept sending while the upstream did not read (${sent - stalled} bytes)`);
    assert.ok(sent < STALL_TOTAL / 4, `the client sent ${sent} bytes into a stalled path`);
    reqRef!.resume();
    assert.equal(await answer, String(STALL_TOTAL));
  } finally {
    await p2.close();
    await closeServer(slow);
  }
});
