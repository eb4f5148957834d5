// Flow control end to end through serveH2: a slow reader on either side
// slows the writer on the other, and the proxy does not buffer without bound.
// The measure is the gap between what the writer got rid of and what the
// reader took: it bounds everything in between (the proxy's buffers, both
// sockets, both legs' windows). Proxy, upstream and client share this
// process, so the RSS bound is on all three together.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ClientHttp2Session, ClientHttp2Stream, ServerHttp2Stream } from 'node:http2';
import { chunk, connectClient, sleep, startProxy, startUpstream, type TestProxy, type Upstream } from '../helpers/h2.js';

const MiB = 1024 * 1024;
const CHUNK = 64 * 1024;
// Per leg: one 64 KiB stream window plus node's 16 KiB stream buffers and a
// chunk in flight. 1 MiB is several legs' worth (measured: 128 KiB), and
// tiny next to the hundreds of MiB offered.
const GAP_BOUND = 1 * MiB;
const RSS_BOUND = 96 * MiB;

let upstream: Upstream;
let proxy: TestProxy;
let client: ClientHttp2Session;
/** Bytes the upstream's /bytes handler has handed to write(). */
let upSent = 0;
/** Bytes the upstream's /sink handler has read; `sinkPaused` holds them. */
let upReceived = 0;
let sinkPaused = true;
let sinkStream: ServerHttp2Stream | undefined;

before(async () => {
  upstream = await startUpstream((stream, headers) => {
    const url = new URL(headers[':path'] ?? '/', 'http://x');
    if (url.pathname === '/bytes') {
      const total = (Number(url.searchParams.get('mib')) * MiB) / CHUNK;
      const c = chunk(1);
      stream.respond({ ':status': 200 });
      let i = 0;
      const pump = (): void => {
        while (i < total) {
          i++;
          upSent += c.length;
          if (!stream.write(c)) return void stream.once('drain', pump);
        }
        stream.end();
      };
      pump();
    } else if (url.pathname === '/sink') {
      sinkStream = stream;
      stream.pause();
      stream.on('data', (d: Buffer) => (upReceived += d.length));
      if (!sinkPaused) stream.resume();
      stream.on('end', () => {
        stream.respond({ ':status': 200 });
        stream.end(String(upReceived));
      });
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

function read(stream: ClientHttp2Stream, budget: number): number {
  let n = 0;
  let c: Buffer | null;
  while (n < budget && (c = stream.read() as Buffer | null) !== null) n += c.length;
  return n;
}

test('slow client reader, upstream offering 512 MiB: the upstream is held back, memory stays bounded', { timeout: 120_000 }, async (t) => {
  const rss0 = process.memoryUsage.rss();
  let rssMax = rss0;
  const rssTimer = setInterval(() => (rssMax = Math.max(rssMax, process.memoryUsage.rss())), 20);
  upSent = 0;
  const req = client.request({ ':path': '/bytes?mib=512' });
  req.pause();
  await new Promise((r) => req.once('response', r));
  let received = 0;
  let maxGap = 0;

  // 1. The reader takes nothing: the upstream must stop.
  await sleep(1000);
  const stalledAt = upSent;
  await sleep(500);
  assert.equal(upSent, stalledAt, 'the upstream kept writing while nobody read');
  maxGap = Math.max(maxGap, upSent - received);

  // 2. The reader takes 64 KiB every 10 ms (~6 MiB/s): the upstream follows it.
  for (let t = 0; t < 100; t++) {
    received += read(req, CHUNK);
    maxGap = Math.max(maxGap, upSent - received);
    await sleep(10);
  }
  assert.ok(received >= 2 * MiB, `the slow reader got only ${received} bytes`);

  // 3. The reader drains as fast as it can, to the end.
  await new Promise<void>((resolve, reject) => {
    req.on('data', (c: Buffer) => {
      received += c.length;
      maxGap = Math.max(maxGap, upSent - received);
    });
    req.once('end', resolve);
    req.once('error', reject);
    req.resume();
  });
  clearInterval(rssTimer);
  assert.equal(received, 512 * MiB);
  const growth = rssMax - rss0;
  t.diagnostic(`download: max in flight ${(maxGap / 1024).toFixed(0)} KiB (paused at ${(stalledAt / 1024).toFixed(0)} KiB), RSS growth ${(growth / MiB).toFixed(1)} MiB`);
  assert.ok(maxGap <= GAP_BOUND, `in flight ${maxGap} bytes > ${GAP_BOUND}`);
  assert.ok(growth <= RSS_BOUND, `RSS grew ${growth} bytes > ${RSS_BOUND}`);
});

test('slow upstream reader, client offering 128 MiB: the client is held back', { timeout: 120_000 }, async (t) => {
  upReceived = 0;
  sinkPaused = true;
  sinkStream = undefined;
  const req = client.request({ ':method': 'POST', ':path': '/sink' });
  req.on('error', () => {});
  let sent = 0;
  let maxGap = 0;
  let body = '';
  req.setEncoding('utf8').on('data', (d: string) => (body += d));
  const done = new Promise<void>((resolve) => req.once('end', resolve));
  const total = 128 * MiB;
  const c = chunk(2);
  const writer = (async () => {
    while (sent < total) {
      sent += c.length;
      if (!req.write(c)) await new Promise((r) => req.once('drain', r));
    }
    req.end();
  })();
  await sleep(1000);
  const stalledAt = sent;
  await sleep(500);
  assert.equal(sent, stalledAt, 'the client kept writing while the upstream read nothing');
  maxGap = sent - upReceived;
  sinkPaused = false;
  (sinkStream as ServerHttp2Stream | undefined)?.resume();
  const gapTimer = setInterval(() => (maxGap = Math.max(maxGap, sent - upReceived)), 5);
  await writer;
  await done;
  clearInterval(gapTimer);
  assert.equal(Number(body), total);
  t.diagnostic(`upload: max in flight ${(maxGap / 1024).toFixed(0)} KiB (paused at ${(stalledAt / 1024).toFixed(0)} KiB)`);
  assert.ok(maxGap <= GAP_BOUND, `in flight ${maxGap} bytes > ${GAP_BOUND}`);
});
