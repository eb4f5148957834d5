// Client-side timeouts of the HTTP/1 layer: an idle keep-alive client is
// closed, a client that starts a request head and stalls gets a 408 (no
// slow-header client can hold a connection forever).
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { connect } from 'node:net';
import { once } from 'node:events';
import { closeServer, listen, startProxy, type TestProxy } from '../helpers/http1.js';

const upstream = http.createServer((req, res) => res.end(`ok ${req.url}`));
let proxy: TestProxy;

before(async () => {
  const port = await listen(upstream);
  proxy = await startProxy({ route: () => ({ host: '127.0.0.1', port }), clientIdleMs: 300, headTimeoutMs: 300 });
});
after(async () => {
  await proxy.close();
  await closeServer(upstream);
});

function client(): { sock: ReturnType<typeof connect>; text: () => string; ended: Promise<number> } {
  const sock = connect(proxy.port, '127.0.0.1');
  let text = '';
  sock.setEncoding('latin1');
  sock.on('data', (d: string) => (text += d));
  const t0 = Date.now();
  const ended = once(sock, 'end').then(() => Date.now() - t0);
  return { sock, text: () => text, ended };
}

test('an idle keep-alive client is closed after the idle timeout, having been answered', async () => {
  const c = client();
  try {
    c.sock.write('GET /a HTTP/1.1\r\nhost: x\r\n\r\n');
    const ms = await c.ended;
    assert.match(c.text(), /^HTTP\/1\.1 200[\s\S]*ok \/a$/);
    assert.ok(ms >= 250, `closed after ${ms} ms, not before the idle timeout`);
  } finally {
    c.sock.destroy();
  }
});

test('a client that stalls inside a request head gets a 408 and is closed', async () => {
  const c = client();
  try {
    c.sock.write('GET /b HTTP/1.1\r\nhost: x\r\n'); // no blank line: the head never ends
    await c.ended;
    assert.match(c.text(), /^HTTP\/1\.1 408 /);
    assert.match(c.text(), /l5d-proxy-error: no complete request head within 300 ms/);
  } finally {
    c.sock.destroy();
  }
});

test('a client that keeps trickling header bytes still gets the 408: the bound runs from the first byte', async () => {
  const c = client();
  const trickle = setInterval(() => c.sock.write('x-a: b\r\n'), 50);
  try {
    c.sock.write('GET /c HTTP/1.1\r\nhost: x\r\n');
    const ms = await c.ended;
    assert.match(c.text(), /^HTTP\/1\.1 408 /);
    assert.ok(ms < 2000, `closed after ${ms} ms`);
  } finally {
    clearInterval(trickle);
    c.sock.destroy();
  }
});

test('the response-head deadline moves with each keep-alive request: a late request that hangs gets its 504 a full timeout after it was sent', async () => {
  // The response timer is one deadline per connection, not a timer per
  // request; a request sent shortly before the first one's timer would have
  // fired must still get the whole timeout.
  const slow = http.createServer((req, res) => {
    if (req.url === '/fast') res.end('fast');
    // /hang: never answered
  });
  const port = await listen(slow);
  const p = await startProxy({ route: () => ({ host: '127.0.0.1', port }), responseTimeoutMs: 400, clientIdleMs: 5000 });
  const sock = connect(p.port, '127.0.0.1');
  let text = '';
  sock.setEncoding('latin1');
  sock.on('data', (d: string) => (text += d));
  try {
    for (let i = 0; i < 3; i++) {
      const before = text.length;
      sock.write('GET /fast HTTP/1.1\r\nhost: x\r\n\r\n');
      while (!text.slice(before).endsWith('fast')) await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 300)); // the first request's deadline would pass 100 ms into the next
    const sent = Date.now();
    sock.write('GET /hang HTTP/1.1\r\nhost: x\r\n\r\n');
    while (!text.includes(' 504 ')) {
      assert.ok(Date.now() - sent < 3000, 'no 504 within 3 s');
      await new Promise((r) => setTimeout(r, 5));
    }
    const ms = Date.now() - sent;
    assert.ok(ms >= 380, `504 after ${ms} ms: the deadline did not move with the request`);
    assert.match(text, /l5d-proxy-error: response timed out after 400 ms/);
  } finally {
    sock.destroy();
    await p.close();
    slow.closeAllConnections();
    await closeServer(slow);
  }
});

test('an upgraded connection idle both ways is closed after the tunnel idle timeout, and the app side with it; traffic keeps it open', async () => {
  const appSide: Array<ReturnType<typeof connect>> = [];
  const ws = http.createServer();
  ws.on('upgrade', (_req, sock: ReturnType<typeof connect>) => {
    appSide.push(sock);
    sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhi;');
    sock.on('data', (b: Buffer) => sock.write(b));
    sock.on('end', () => sock.end());
  });
  const port = await listen(ws);
  const p = await startProxy({ route: () => ({ host: '127.0.0.1', port }), tunnelIdleMs: 400 });
  const sock = connect(p.port, '127.0.0.1');
  let text = '';
  sock.setEncoding('latin1');
  sock.on('data', (d: string) => (text += d));
  const closed = once(sock, 'close');
  try {
    sock.write('GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n');
    while (!text.includes('hi;')) await new Promise((r) => setTimeout(r, 5));
    const t0 = Date.now();
    // Echoed traffic every 150 ms for 900 ms: longer than the timeout, never idle that long.
    let lastByte = Date.now();
    for (let i = 0; i < 6; i++) {
      sock.write(`m${i};`);
      lastByte = Date.now();
      await new Promise((r) => setTimeout(r, 150));
    }
    assert.ok(!sock.destroyed && text.includes('m5;'), `the tunnel stayed open while used: ${text}`);
    const outcome = await Promise.race([closed.then(() => 'closed'), new Promise((r) => setTimeout(() => r('open'), 3000))]);
    assert.equal(outcome, 'closed', 'an idle tunnel was held past 3 s');
    const idle = Date.now() - lastByte;
    assert.ok(idle >= 350, `closed after ${idle} ms idle, before the timeout (${Date.now() - t0} ms in all)`);
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(appSide.length === 1 && appSide[0]!.destroyed, 'the app side of the tunnel was closed too');
  } finally {
    sock.destroy();
    await p.close();
    ws.closeAllConnections();
    await closeServer(ws);
  }
});
