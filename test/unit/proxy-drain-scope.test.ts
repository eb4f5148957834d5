// Two proxies in one process (as the node proxy runs one per pod): shutting
// one down drains its own HTTP clients only. drainHttp1() (and drainH2())
// were process-wide, so one pod's proxy shutting down closed every other
// pod's keep-alive connections. And a shutdown does not wait the whole
// grace for clients that connected and never spoke, while one whose request
// comes a moment after the signal (accepted just before it, as in a
// handover) is still served.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { connect, type Socket } from 'node:net';
import { startChain } from '../helpers/proxy-chain.js';

/** A raw client on loopback that collects what it reads (latin1). */
function rawClient(port: number): { sock: Socket; text: () => string } {
  const sock = connect(port, '127.0.0.1');
  let text = '';
  sock.setEncoding('latin1');
  sock.on('data', (d: string) => (text += d));
  sock.on('error', () => {});
  return { sock, text: () => text };
}

/** Accepted, and past the proxy's accept step: the client has not spoken. */
async function connected(sock: Socket): Promise<void> {
  await new Promise<void>((r) => sock.once('connect', () => r()));
  await new Promise((r) => setTimeout(r, 50));
}

test("one proxy's shutdown leaves another proxy's keep-alive HTTP/1 clients in the same process alone", async () => {
  const a = await startChain();
  const b = await startChain();
  const { sock, text } = rawClient(b.inboundPort);
  const get = async (path: string): Promise<string> => {
    const from = text().length;
    sock.write(`GET ${path} HTTP/1.1\r\nhost: b\r\n\r\n`);
    const t0 = Date.now();
    while (!text().slice(from).endsWith('ok')) {
      assert.ok(Date.now() - t0 < 3000 && !sock.destroyed, `no answer to ${path}: ${JSON.stringify(text().slice(from))}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return text().slice(from);
  };
  try {
    await get('/first');
    await a.proxy.shutdown(0);
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(!sock.destroyed, "B's idle keep-alive connection was closed by A's shutdown");
    const second = await get('/second');
    assert.doesNotMatch(second, /connection: close/i, 'B answered as if it were draining');
  } finally {
    sock.destroy();
    await b.close();
    await a.app.close();
  }
});

test('shutdown closes connections whose client has not spoken within a second, instead of waiting the whole grace for them', async () => {
  const chain = await startChain();
  const silent = connect(chain.inboundPort, '127.0.0.1');
  const ended = new Promise<string>((r) => {
    silent.on('error', (e: NodeJS.ErrnoException) => r(e.code ?? 'error'));
    silent.on('close', () => r('closed'));
  });
  try {
    await connected(silent);
    const t0 = Date.now();
    await chain.proxy.shutdown(5000);
    const took = Date.now() - t0;
    assert.ok(took < 2000, `shutdown waited ${took} ms for a client that never spoke (the grace is 5000 ms)`);
    assert.equal(await ended, 'closed');
    assert.equal(chain.app.seen.length, 0);
  } finally {
    silent.destroy();
    await chain.close();
  }
});

test('a client accepted before the shutdown whose request arrives a moment later is still served', async () => {
  const chain = await startChain();
  const { sock: late, text } = rawClient(chain.inboundPort);
  try {
    await connected(late);
    let ended = false;
    late.on('end', () => (ended = true));
    const t0 = Date.now();
    const done = chain.proxy.shutdown(5000);
    await new Promise((r) => setTimeout(r, 300));
    late.write('GET /late HTTP/1.1\r\nhost: b\r\n\r\n');
    await done;
    assert.match(text(), /^HTTP\/1\.1 200 /, `no answer: ${JSON.stringify(text())}`);
    assert.match(text(), /connection: close/i, 'not answered as a draining connection');
    assert.equal(chain.app.seen.at(-1)?.url, '/late');
    assert.ok(Date.now() - t0 < 2000, `the served connection held the shutdown ${Date.now() - t0} ms (grace 5000 ms)`);
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(ended, 'the proxy did not close the connection after serving it');
  } finally {
    late.destroy();
    await chain.close();
  }
});

test('the same over HTTP/2: a client that sends its preface after the signal gets a GOAWAY and does not hold the shutdown', async () => {
  const chain = await startChain();
  const { sock } = rawClient(chain.inboundPort);
  sock.removeAllListeners('data');
  let session: http2.ClientHttp2Session | undefined;
  try {
    await connected(sock);
    const t0 = Date.now();
    const done = chain.proxy.shutdown(5000);
    await new Promise((r) => setTimeout(r, 300));
    session = http2.connect(`http://127.0.0.1:${chain.inboundPort}`, { createConnection: () => sock });
    session.on('error', () => {});
    const goaway = new Promise<void>((r) => session!.once('goaway', () => r()));
    // Served, or refused (REFUSED_STREAM: not processed, safe to retry elsewhere): both are a clean drain.
    const outcome = await new Promise<string>((resolve) => {
      const req = session!.request({ ':path': '/late-h2', ':authority': 'b' });
      req.on('response', (h) => resolve(String(h[':status'])));
      req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ERR_HTTP2_STREAM_ERROR' && /REFUSED_STREAM/.test(e.message) ? 'refused' : e.message));
      req.resume();
      req.end();
    });
    assert.ok(outcome === '200' || outcome === 'refused', `the request ended otherwise: ${outcome}`);
    if (outcome === 'refused') assert.ok(!chain.app.seen.some((r) => r.url === '/late-h2'), 'a refused stream reached the app');
    await goaway;
    await done;
    assert.ok(Date.now() - t0 < 2000, `the HTTP/2 connection held the shutdown ${Date.now() - t0} ms (grace 5000 ms)`);
  } finally {
    session?.destroy();
    sock.destroy();
    await chain.close();
  }
});
