// A client in a meshed pod trying to get past the HTTP layer or to hold the
// proxy's resources (issue #11): the real Proxy, both directions, on
// loopback (test/helpers/proxy-chain.ts), against a node:http app.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exchange, RecordingApp, sampleOf, startChain, type AppLike, type Chain } from '../helpers/proxy-chain.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const forged = (app: RecordingApp): string[] =>
  app.seen.flatMap((r) => [...r.rawHeaders, ...r.rawTrailers].filter((_, i, a) => i % 2 === 0 && a[i]!.toLowerCase().startsWith('l5d-')));

/** A plain TCP app on loopback whose connections `onConn` serves (half-open allowed). */
class TcpApp implements AppLike {
  readonly server: Server;
  constructor(onConn: (s: Socket) => void) {
    this.server = createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      onConn(s);
    });
  }
  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return (this.server.address() as AddressInfo).port;
  }
  async close(): Promise<void> {
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

const FORGE = 'l5d-client-id: forged.default.serviceaccount.identity.linkerd.cluster.local\r\n';

describe('the HTTP layer cannot be skipped (defect 1)', () => {
  let chain: Chain;
  before(async () => (chain = await startChain({ LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT: '400ms', LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT: '400ms', BPFMESH_PROXY_HTTP1_REQUEST_HEAD_TIMEOUT: '400ms' })));
  after(() => chain.close());

  const cases: Array<[string, Buffer[], number?]> = [
    ['a leading CRLF', [b(`\r\nGET /crlf HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n`)]],
    ['a leading bare LF', [b(`\nGET /lf HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n`)]],
    ['a double space', [b(`GET  /dbl HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n`)]],
    ['a request line over 1 KiB', [b(`GET /${'x'.repeat(1500)} HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n`)]],
    ['no version', [b(`GET /nover\r\n${FORGE}\r\n`)]],
    ['a request line sent slowly', [...'GET /slow HTTP/1.1\r\n'].map(b).concat([b(`Host: a\r\n${FORGE}\r\n`)]), 10],
    ['a forged header on the second request after a leading CRLF', [b(`\r\nGET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n`)]],
  ];
  for (const [name, parts, gap] of cases) {
    for (const via of ['inbound', 'outbound'] as const) {
      test(`${name}, sent to the ${via} proxy: served as HTTP, the forged l5d-client-id never reaches the app`, async () => {
        const before = chain.app.seen.length;
        const port = via === 'inbound' ? chain.inboundPort : chain.outboundPort;
        await exchange(port, parts, { gapMs: gap ?? 0, untilMs: 1500 });
        const m = await chain.metrics();
        assert.deepEqual(forged(chain.app), [], 'no l5d-* header reached the app');
        assert.equal(sampleOf(m, 'bpfmesh_proxy_protocol_detected_total', { direction: via, protocol: 'opaque' }), 0, 'nothing was relayed as opaque');
        assert.ok(chain.app.seen.length >= before, 'sanity');
      });
    }
  }

  test('a client that says nothing past the detection timeout, then sends a request, is still served as HTTP', async () => {
    const r = await exchange(chain.inboundPort, [b(''), b(`GET /late HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n`)], { gapMs: 700, untilMs: 2000 });
    assert.match(r.text, /^HTTP\/1\.1 200 /);
    assert.equal(chain.app.seen.at(-1)?.url, '/late');
    assert.deepEqual(forged(chain.app), []);
  });
});

describe('a server that speaks first still works on a port without detection opt-out', () => {
  /** A server that speaks first ("220 hello") and echoes. */
  const greeter = (): TcpApp =>
    new TcpApp((s) => {
      s.write('220 hello\r\n');
      s.on('data', (d: Buffer) => s.write(`echo ${d.toString('latin1')}`));
    });
  let chain: Chain<TcpApp>;
  before(async () => (chain = await startChain({ LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT: '200ms' }, greeter())));
  after(() => chain.close());

  test('after the detection timeout the greeting comes and the relay is opaque', async () => {
    const s = connect(chain.inboundPort, '127.0.0.1');
    let text = '';
    s.on('data', (d: Buffer) => (text += d.toString('latin1')));
    try {
      for (let i = 0; i < 100 && !text.includes('220 hello'); i++) await sleep(20);
      assert.equal(text, '220 hello\r\n');
      s.write('QUIT\r\n');
      for (let i = 0; i < 100 && !text.includes('echo'); i++) await sleep(20);
      assert.equal(text, '220 hello\r\necho QUIT\r\n');
    } finally {
      s.destroy();
    }
  });
});

describe('slowloris and stalled exchanges are cut (defects 2 and 3)', () => {
  let chain: Chain;
  let appConns = 0;
  const app = new RecordingApp((req, res) => {
    if (req.url === '/never') return; // never answers
    res.end('ok');
  });
  app.server.on('connection', (s: Socket) => {
    appConns++;
    s.on('close', () => appConns--);
  });
  before(
    async () =>
      (chain = await startChain(
        {
          LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT: '1s',
          BPFMESH_PROXY_HTTP1_REQUEST_HEAD_TIMEOUT: '1s',
          BPFMESH_PROXY_HTTP1_REQUEST_BODY_TIMEOUT: '300ms',
          BPFMESH_PROXY_HTTP1_RESPONSE_HEAD_TIMEOUT: '300ms',
          LINKERD2_PROXY_INBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT: '100ms',
        },
        app,
      )),
  );
  after(() => chain.close());

  test('a request line sent one byte at a time gets a 408 from the first byte, not an opaque relay', async () => {
    const line = [...`GET /loris HTTP/1.1\r\nHost: a\r\nx: ${'y'.repeat(40)}\r\n\r\n`].map(b);
    const t0 = Date.now();
    const r = await exchange(chain.inboundPort, line, { gapMs: 40, untilMs: 4000 });
    assert.match(r.text, /^HTTP\/1\.1 408 /);
    assert.ok(r.closed);
    assert.ok(Date.now() - t0 < 2500, `closed after ${Date.now() - t0} ms`);
    assert.equal(chain.app.seen.filter((s) => s.url === '/loris').length, 0);
  });

  for (const [name, parts] of [
    ['a stalled Content-Length body', [b('POST /stall HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello')]],
    ['a chunked body without its last chunk', [b('POST /chunk HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n')]],
  ] as const) {
    test(`${name}: 408 after the body timeout, and the app's connection is closed`, async () => {
      const r = await exchange(chain.inboundPort, [...parts], { untilMs: 3000 });
      assert.match(r.text, /^HTTP\/1\.1 408 /);
      assert.match(r.text, /l5d-proxy-error: no request body byte for 300 ms/);
      assert.ok(r.closed);
      for (let i = 0; i < 100 && appConns > 0; i++) await sleep(10);
      assert.equal(appConns, 0, 'no app connection left open');
    });
  }

  test('an app that never answers: 504 after the response head timeout, its connection closed', async () => {
    const r = await exchange(chain.inboundPort, [b('GET /never HTTP/1.1\r\nHost: a\r\n\r\n')], { untilMs: 800 });
    assert.match(r.text, /^HTTP\/1\.1 504 /);
    for (let i = 0; i < 100 && appConns > 0; i++) await sleep(10);
    assert.equal(appConns, 0);
  });
});

describe('idle and surplus connections are bounded (defect 4)', () => {
  let chain: Chain;
  const dir = join(tmpdir(), `bpfmesh-hostile-${process.pid}`);
  const logPath = `${dir}.log`;
  let fd = -1;
  before(async () => {
    fd = openSync(logPath, 'w');
    chain = await startChain<RecordingApp>({ BPFMESH_PROXY_MAX_CONNECTIONS: '20', LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT: '200ms', BPFMESH_PROXY_TCP_IDLE_TIMEOUT: '300ms' }, new RecordingApp(), fd);
  });
  after(async () => {
    await chain.close();
    closeSync(fd);
    rmSync(logPath, { force: true });
  });

  test('past the cap new connections are closed at accept, counted, and logged with a code', async () => {
    const socks: Socket[] = [];
    let closed = 0;
    try {
      for (let i = 0; i < 50; i++) {
        const s = connect(chain.inboundPort, '127.0.0.1');
        s.on('error', () => {});
        s.on('close', () => closed++);
        socks.push(s);
        // A connection refused at accept may be reset before its 'connect' is seen.
        await new Promise((r) => {
          s.once('connect', r);
          s.once('close', r);
        });
      }
      await sleep(150);
      assert.equal(chain.proxy.openConnections, 20);
      assert.equal(closed, 30);
      const m = await chain.metrics();
      assert.equal(sampleOf(m, 'bpfmesh_proxy_connections_refused_total', { direction: 'inbound', reason: 'max_connections' }), 30);
      const lines = readFileSync(logPath, 'utf8').split('\n').filter((l) => l.includes('BPFMESH_E_CONN_LIMIT'));
      assert.equal(lines.length, 1, 'one line, not one per refused connection');
      assert.match(lines[0]!, /"code":"BPFMESH_E_CONN_LIMIT"/);
    } finally {
      for (const s of socks) s.destroy();
    }
  });

  test('idle connections that never speak are closed after detection + the opaque idle timeout', async () => {
    const socks: Socket[] = [];
    let ended = 0;
    // The previous test's connections first go (they would be counted as these, or fill the cap).
    for (let i = 0; i < 100 && chain.proxy.openConnections > 0; i++) await sleep(20);
    assert.equal(chain.proxy.openConnections, 0, 'the previous test left connections open');
    try {
      for (let i = 0; i < 10; i++) {
        const s = connect(chain.inboundPort, '127.0.0.1');
        s.on('error', () => {});
        s.on('close', () => ended++);
        s.resume();
        socks.push(s);
      }
      await sleep(100);
      assert.ok(chain.proxy.openConnections >= 10, `open: ${chain.proxy.openConnections}`);
      await sleep(1000);
      assert.equal(chain.proxy.openConnections, 0, 'all closed');
      assert.equal(ended, 10, 'the proxy closed every one of them');
    } finally {
      for (const s of socks) s.destroy();
    }
  });
});

describe('a client that closes before sending a byte', () => {
  /** Answers a client's FIN with "bye" and its own FIN (a protocol where the client only half-closes). */
  const byeOnEnd = (): TcpApp =>
    new TcpApp((s) => {
      s.on('end', () => s.end('bye'));
      s.resume();
    });
  let chain: Chain<TcpApp>;
  before(async () => (chain = await startChain({}, byeOnEnd())));
  after(() => chain.close());

  test('its FIN reaches the app and the answer comes back; nothing is left open (detection had consumed the FIN, so the relay waited for the 1 h idle timeout)', async () => {
    for (const port of [chain.inboundPort, chain.outboundPort]) {
      const s = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
      let text = '';
      let ended = false;
      s.on('data', (d: Buffer) => (text += d.toString('latin1')));
      s.on('end', () => (ended = true));
      s.on('error', () => {});
      try {
        await new Promise<void>((r) => s.once('connect', () => r()));
        s.end();
        for (let i = 0; i < 100 && !ended; i++) await sleep(20);
        assert.equal(text, 'bye', `port ${port}: the app's answer to the FIN`);
        assert.ok(ended, `port ${port}: the app's FIN did not come back`);
      } finally {
        s.destroy();
      }
    }
    for (let i = 0; i < 50 && chain.proxy.openConnections > 0; i++) await sleep(20);
    assert.equal(chain.proxy.openConnections, 0, 'the proxy still holds connections');
  });
});
