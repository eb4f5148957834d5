// Shutdown of the HTTP/1 layer: idle keep-alive clients are closed at once,
// a busy one gets its answer with `Connection: close` and is closed after it.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { closeServer, listen, startProxy, type TestProxy } from '../helpers/http1.js';
import { drainHttp1 } from '../../src/proxy/http1/proxy-http1.js';

const upstream = http.createServer((req, res) => {
  const delay = req.url === '/slow' ? 400 : 0;
  setTimeout(() => res.end(`ok ${req.url}`), delay);
});
let proxy: TestProxy;

before(async () => {
  const port = await listen(upstream);
  proxy = await startProxy({ route: () => ({ host: '127.0.0.1', port }) });
});
after(async () => {
  await proxy.close();
  await closeServer(upstream);
});

/** A raw keep-alive client: sends a request, collects everything until the proxy closes. */
class RawClient {
  readonly sock: Socket;
  text = '';
  readonly closed: Promise<void>;
  constructor(port: number) {
    this.sock = connect(port, '127.0.0.1');
    this.sock.setEncoding('latin1');
    this.sock.on('data', (d: string) => (this.text += d));
    this.closed = once(this.sock, 'end').then(() => undefined);
  }
  send(path: string): void {
    this.sock.write(`GET ${path} HTTP/1.1\r\nhost: x\r\n\r\n`);
  }
  async answered(n: number): Promise<void> {
    const deadline = Date.now() + 5000;
    while ((this.text.match(/HTTP\/1\.1 200/g) ?? []).length < n) {
      if (Date.now() > deadline) throw new Error(`no answer ${n}: ${this.text}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

test('drain closes idle keep-alive clients now and busy ones after their response', async () => {
  const idle = new RawClient(proxy.port);
  const busy = new RawClient(proxy.port);
  try {
    idle.send('/a');
    busy.send('/b');
    await idle.answered(1);
    await busy.answered(1);
    assert.doesNotMatch(idle.text, /connection: close/i, 'kept alive before the drain');
    busy.send('/slow');
    await new Promise((r) => setTimeout(r, 100)); // the slow request is in flight

    const t0 = Date.now();
    drainHttp1(proxy.live);
    await idle.closed;
    assert.ok(Date.now() - t0 < 300, 'the idle client is closed at once, not after the slow request');
    await busy.closed;
    assert.match(busy.text, /ok \/slow$/, 'the in-flight request was answered in full');
    const lastHead = busy.text.slice(busy.text.lastIndexOf('HTTP/1.1 200'));
    assert.match(lastHead, /connection: close/i, 'and told the client the connection ends');
  } finally {
    idle.sock.destroy();
    busy.sock.destroy();
  }
});
