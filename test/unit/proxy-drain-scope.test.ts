// Two proxies in one process (as the node proxy runs one per pod): shutting
// one down drains its own HTTP clients only. drainHttp1() (and drainH2())
// were process-wide, so one pod's proxy shutting down closed every other
// pod's keep-alive connections. And a shutdown does not wait the whole
// grace for clients that connected and never spoke, while one whose request
// comes a moment after the signal (accepted just before it, as in a
// handover) is still served.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { startChain } from '../helpers/proxy-chain.js';

test("one proxy's shutdown leaves another proxy's keep-alive HTTP/1 clients in the same process alone", async () => {
  const a = await startChain();
  const b = await startChain();
  const sock = connect(b.inboundPort, '127.0.0.1');
  let text = '';
  sock.setEncoding('latin1');
  sock.on('data', (d: string) => (text += d));
  sock.on('error', () => {});
  const get = async (path: string): Promise<string> => {
    const from = text.length;
    sock.write(`GET ${path} HTTP/1.1\r\nhost: b\r\n\r\n`);
    const t0 = Date.now();
    while (!text.slice(from).endsWith('ok')) {
      assert.ok(Date.now() - t0 < 3000 && !sock.destroyed, `no answer to ${path}: ${JSON.stringify(text.slice(from))}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return text.slice(from);
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
    await new Promise<void>((r) => silent.once('connect', () => r()));
    await new Promise((r) => setTimeout(r, 50)); // accepted, in protocol detection
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
  const late = connect(chain.inboundPort, '127.0.0.1');
  let text = '';
  late.setEncoding('latin1');
  late.on('data', (d: string) => (text += d));
  late.on('error', () => {});
  try {
    await new Promise<void>((r) => late.once('connect', () => r()));
    await new Promise((r) => setTimeout(r, 50));
    let ended = false;
    late.on('end', () => (ended = true));
    const t0 = Date.now();
    const done = chain.proxy.shutdown(5000);
    await new Promise((r) => setTimeout(r, 300));
    late.write('GET /late HTTP/1.1\r\nhost: b\r\n\r\n');
    await done;
    assert.match(text, /^HTTP\/1\.1 200 /, `no answer: ${JSON.stringify(text)}`);
    assert.equal(chain.app.seen.at(-1)?.url, '/late');
    assert.ok(Date.now() - t0 < 2000, `the served connection held the shutdown ${Date.now() - t0} ms (grace 5000 ms)`);
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(ended, 'the proxy did not close the connection after serving it');
  } finally {
    late.destroy();
    await chain.close();
  }
});
