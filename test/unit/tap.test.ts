// Tap on loopback: the real Proxy (both directions) with a tap hub, the
// real tap server on its control port over mTLS, and the real tap client
// (what `bpfmesh tap` runs). HTTP/1 through node:http and curl, HTTP/2
// through node:http2; tappers with the tap identity, another identity and
// none; matches, limits and the stream cap. Also the match compiler and the
// line format on their own.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import { connect, createServer, type Server } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import { execFile } from 'node:child_process';
import { Registry } from 'prom-client';
import { parseProxyEnv } from '../../src/config/proxy-env.js';
import { createLogger } from '../../src/log/logger.js';
import { Proxy } from '../../src/proxy/proxy.js';
import { TapHub } from '../../src/proxy/tap/hub.js';
import { TapServer } from '../../src/proxy/tap/server.js';
import { observe } from '../../src/proxy/tap/client.js';
import { compileMatch, type TapRequestView } from '../../src/proxy/tap/match.js';
import { formatTapEvent } from '../../src/proxy/tap/format.js';
import { addrMatches, parseTapFlags } from '../../src/cli/tap.js';
import { TlsStore } from '../../src/tls/tls-store.js';
import { encodeTcpAddress, tapService, type ObserveRequestIn, type TapEventMsg, type TapMatchMsg } from '../../src/control/protos.js';
import { materialOf, mintAnchor, mintIssuer, mintLeaf, type Issued } from '../helpers/tls-pki.js';
import { RecordingApp } from '../helpers/proxy-chain.js';
import { metricValue } from '../helpers/control-plane.js';
import type { Addr } from '../../src/proxy/types.js';
import { REPO_ROOT } from '../../src/config/paths.js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startFakeKube } from '../helpers/fake-kube.js';
import { join } from 'node:path';

const PROXY_ID = 'web.ns.serviceaccount.identity.linkerd.cluster.local';
const TAP_ID = 'linkerd-tap.linkerd-viz.serviceaccount.identity.linkerd.cluster.local';
const OTHER_ID = 'intruder.ns.serviceaccount.identity.linkerd.cluster.local';

/** Round-trips a message through the wire codec, as the client decodes it. */
const decodeMatch = (m: ObserveRequestIn['match']): TapMatchMsg =>
  (tapService().Observe.requestDeserialize(tapService().Observe.requestSerialize({ limit: 1, match: m })) as { match: TapMatchMsg }).match;

const view = (o: Partial<TapRequestView> = {}): TapRequestView => ({
  source: { host: '10.0.0.1', port: 4321 },
  destination: { host: '10.0.0.2', port: 8080 },
  destinationLabels: { pod: 'web-0' },
  scheme: 'http',
  method: 'GET',
  authority: 'web.ns:8080',
  path: '/api/x',
  ...o,
});

describe('tap match expressions (Linkerd rules)', () => {
  test('all/any/not, netmask, ports, http parts, labels', () => {
    const p = (m: ObserveRequestIn['match']): ((r: TapRequestView) => boolean) => compileMatch(decodeMatch(m));
    assert.equal(p({ all: { matches: [] } })(view()), true, 'all of nothing matches everything');
    assert.equal(p({ any: { matches: [] } })(view()), false, 'any of nothing matches nothing');
    assert.equal(p({ destination: { netmask: { ip: encodeTcpAddress({ host: '10.0.0.0', port: 0 }).ip!, mask: 24 } } })(view()), true);
    assert.equal(p({ destination: { netmask: { ip: encodeTcpAddress({ host: '10.0.1.0', port: 0 }).ip!, mask: 24 } } })(view()), false);
    assert.equal(p({ destination: { netmask: { ip: encodeTcpAddress({ host: '::', port: 0 }).ip!, mask: 1 } } })(view()), false, 'an IPv6 net never matches IPv4');
    assert.equal(p({ source: { ports: { min: 4321 } } })(view()), true, 'a range with max 0 is its min');
    assert.equal(p({ source: { ports: { min: 1, max: 4320 } } })(view()), false);
    assert.equal(p({ source: { ports: { max: 4321 } } })(view({ source: undefined })), false, 'no source: a source match fails');
    assert.equal(p({ http: { path: { prefix: '/api' } } })(view()), true);
    assert.equal(p({ http: { path: { exact: '/api' } } })(view()), false);
    assert.equal(p({ http: { authority: { exact: 'web.ns:8080' } } })(view()), true);
    assert.equal(p({ http: { method: { registered: 'POST' } } })(view()), false);
    assert.equal(p({ http: { method: { unregistered: 'PURGE' } } })(view({ method: 'PURGE' })), true);
    assert.equal(p({ http: { scheme: { registered: 'HTTPS' } } })(view()), false);
    assert.equal(p({ not: { http: { method: { registered: 'POST' } } } })(view()), true);
    assert.equal(p({ destination_label: { key: 'pod', value: 'web-0' } })(view()), true);
    assert.equal(p({ destination_label: { key: 'pod', value: 'web-1' } })(view()), false);
    const both = p({ all: { matches: [{ http: { path: { prefix: '/api' } } }, { any: { matches: [{ http: { method: { registered: 'POST' } } }, { source: { ports: { min: 4321 } } }] } }] } });
    assert.equal(both(view()), true);
    assert.equal(both(view({ source: { host: '10.0.0.1', port: 1 } })), false);
  });

  test('missing or bad parts are refused with BPFMESH_E_TAP_INVALID', () => {
    for (const m of [
      undefined,
      {},
      { not: {} },
      { source: {} },
      { source: { ports: {} } },
      { source: { ports: { min: 70000 } } },
      { destination: { netmask: { mask: 8 } } },
      { destination: { netmask: { ip: encodeTcpAddress({ host: '10.0.0.0', port: 0 }).ip!, mask: 0 } } },
      { destination: { netmask: { ip: encodeTcpAddress({ host: '10.0.0.0', port: 0 }).ip!, mask: 33 } } },
      { http: {} },
      { http: { path: {} } },
      { http: { method: { unregistered: 'NOT A TOKEN' } } },
      { destination_label: { key: 'pod' } },
    ] as Array<ObserveRequestIn['match']>) {
      assert.throws(() => compileMatch(m === undefined ? undefined : decodeMatch(m)), { code: 'BPFMESH_E_TAP_INVALID' }, JSON.stringify(m));
    }
  });

  test('bpfmesh tap flags become an all-of match', () => {
    const f = parseTapFlags(['--addr', '10.0.0.2:4190', '--to', '10.0.0.0/24', '--path', '/api', '--method', 'post', '--authority', 'web:80', '--max', '3']);
    assert.equal(f.request.limit, 3);
    const pred = compileMatch(decodeMatch(f.request.match));
    assert.equal(pred(view({ method: 'POST', authority: 'web:80' })), true);
    assert.equal(pred(view({ method: 'GET', authority: 'web:80' })), false);
    assert.deepEqual(addrMatches(':8080', '--to'), [{ ports: { min: 8080, max: 8080 } }]);
    assert.equal(addrMatches('[fd00::1]:80', '--to').length, 2);
    assert.throws(() => addrMatches('web:80', '--to'), { code: 'BPFMESH_E_BAD_FLAG' });
    assert.throws(() => parseTapFlags(['--to', '10.0.0.1']), { code: 'BPFMESH_E_BAD_FLAG' }, 'needs --pod or --addr');
    assert.throws(() => parseTapFlags(['--addr', '10.0.0.2:4190', '--max', '0']), { code: 'BPFMESH_E_BAD_FLAG' });
  });
});

describe('tap event lines (linkerd viz tap)', () => {
  test('req, rsp, end with gRPC status, reset and neither', () => {
    const dec = (ev: Parameters<ReturnType<typeof tapService>['Observe']['responseSerialize']>[0]): TapEventMsg =>
      tapService().Observe.responseDeserialize(tapService().Observe.responseSerialize(ev)) as TapEventMsg;
    const base = {
      source: encodeTcpAddress({ host: '10.0.0.1', port: 4321 }),
      destination: encodeTcpAddress({ host: '10.0.0.2', port: 8080 }),
      source_meta: { labels: { tls: 'true', client_id: 'a' } },
      proxy_direction: 'INBOUND' as const,
    };
    const id = { base: 0, stream: '1' };
    assert.equal(
      formatTapEvent(dec({ ...base, http: { request_init: { id, method: { registered: 'GET' }, authority: 'web:8080', path: '/' } } })),
      'req id=0:1 proxy=in  src=10.0.0.1:4321 dst=10.0.0.2:8080 tls=true :method=GET :authority=web:8080 :path=/',
    );
    assert.equal(
      formatTapEvent(dec({ ...base, http: { response_init: { id, since_request_init: { seconds: '1', nanos: 234_567_000 }, http_status: 200 } } })),
      'rsp id=0:1 proxy=in  src=10.0.0.1:4321 dst=10.0.0.2:8080 tls=true :status=200 latency=1234567µs',
    );
    assert.equal(
      formatTapEvent(dec({ ...base, http: { response_end: { id, since_response_init: { seconds: '0', nanos: 56_000 }, response_bytes: '23', eos: { grpc_status_code: 14 } } } })),
      'end id=0:1 proxy=in  src=10.0.0.1:4321 dst=10.0.0.2:8080 tls=true grpc-status=Unavailable duration=56µs response-length=23B',
    );
    assert.equal(
      formatTapEvent(dec({ ...base, http: { response_end: { id, response_bytes: '0', eos: { reset_error_code: 8 } } } })),
      'end id=0:1 proxy=in  src=10.0.0.1:4321 dst=10.0.0.2:8080 tls=true reset-error=8 duration=0µs response-length=0B',
    );
    const out = { ...base, proxy_direction: 'OUTBOUND' as const, destination_meta: { labels: { tls: 'no_identity' } } };
    assert.equal(
      formatTapEvent(dec({ ...out, http: { response_end: { id, response_bytes: '5', eos: {} } } })),
      'end id=0:1 proxy=out src=10.0.0.1:4321 dst=10.0.0.2:8080 tls=no_identity duration=0µs response-length=5B',
    );
  });
});

describe('tap server on loopback: mTLS, identities, events, matches, limits', { timeout: 60_000 }, () => {
  let anchor: Issued;
  let issuer: Issued;
  let tapLeaf: Issued;
  let otherLeaf: Issued;
  let app: RecordingApp;
  let demux: Server;
  let proxy: Proxy;
  let server: TapServer;
  let registry: Registry;
  let control: Addr;
  let inboundPort = 0;
  let appPort = 0;
  let store: TlsStore;

  before(async () => {
    anchor = await mintAnchor();
    issuer = await mintIssuer(anchor);
    const proxyLeaf = await mintLeaf(issuer, PROXY_ID);
    tapLeaf = await mintLeaf(issuer, TAP_ID);
    otherLeaf = await mintLeaf(issuer, OTHER_ID);
    app = new RecordingApp((req, res, body) => res.end(`hello ${req.url} ${body.length}`));
    await app.listen();
    // One app port for both: the connection preface picks the HTTP/2 server, anything else goes to HTTP/1.
    demux = createServer((sock) => {
      sock.once('data', (d: Buffer) => {
        sock.pause();
        sock.unshift(d);
        if (!d.toString('latin1').startsWith('PRI * HTTP/2.0')) {
          app.server.emit('connection', sock);
          return void sock.resume();
        }
        // performServerHandshake reads the unshifted preface first.
        http2.performServerHandshake(sock).on('stream', (stream, headers) => {
          stream.respond({ ':status': 200 });
          stream.end(`h2 ${String(headers[':path'])}`);
        });
      });
    });
    await new Promise<void>((r) => demux.listen(0, '127.0.0.1', r));
    appPort = (demux.address() as { port: number }).port;
    const config = parseProxyEnv({
      LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR: '127.0.0.1:0',
      LINKERD2_PROXY_INBOUND_LISTEN_ADDR: '127.0.0.1:0',
      LINKERD2_PROXY_CONTROL_LISTEN_ADDR: '127.0.0.1:0',
      LINKERD2_PROXY_TAP_SVC_NAME: TAP_ID,
      BPFMESH_PROXY_TAP_MAX_STREAMS: '2',
    });
    registry = new Registry();
    const log = createLogger({ logFormat: 'json', logLevel: 'silent' });
    const hub = new TapHub({ registry, maxEventsPerSecond: config.tap!.maxEventsPerSecond });
    // Inbound: the proxy's local port is the target; /h2 paths go to the HTTP/2 app.
    proxy = new Proxy({ config, registry, log, tapHub: hub, originalDst: () => ({ host: '127.0.0.1', port: appPort }) });
    await proxy.start();
    inboundPort = proxy.listening.inbound.find((a) => a.host === '127.0.0.1')!.port;
    store = new TlsStore({ trustAnchorsPem: anchor.certPem, identity: PROXY_ID });
    store.update(materialOf(proxyLeaf, issuer));
    server = new TapServer({ listen: config.controlListenAddr, config: config.tap!, store, hub, log, registry });
    control = await server.start();
  });

  after(async () => {
    await server?.close();
    await proxy?.shutdown(0);
    await app?.close();
    await new Promise<void>((r) => (demux ? demux.close(() => r()) : r()));
  });

  /** Observe with `leaf` (or no client certificate); resolves with the events, or rejects with the coded error. */
  function tap(leaf: Issued | null, request: ObserveRequestIn, onEvent?: (ev: TapEventMsg) => void, signal?: AbortSignal): Promise<TapEventMsg[]> {
    const events: TapEventMsg[] = [];
    return observe({
      addr: control,
      serverId: PROXY_ID,
      certPem: leaf === null ? '' : leaf.certPem + issuer.certPem,
      keyPem: leaf === null ? '' : leaf.keyPem,
      trustAnchorsPem: anchor.certPem,
      request,
      ...(signal ? { signal } : {}),
      onEvent: (ev) => {
        events.push(ev);
        onEvent?.(ev);
      },
    }).then(() => events);
  }

  const h1 = (path: string, method = 'GET'): Promise<string> =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: inboundPort, path, method, headers: { host: 'web.ns:8080' } }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve(body));
      });
      req.on('error', reject);
      req.end();
    });

  /** Waits until the hub has `n` streams (a tap registered before traffic is sent). */
  async function streams(n: number): Promise<void> {
    for (let i = 0; i < 200 && (await metricValue(registry, 'bpfmesh_tap_streams')) !== n; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(await metricValue(registry, 'bpfmesh_tap_streams'), n);
  }

  test('the tap identity gets req/rsp/end for HTTP/1 with bytes, status and the path; the stream ends at the limit', async () => {
    const events = tap(tapLeaf, { limit: 2, match: { all: { matches: [] } } });
    await streams(1);
    assert.equal(await h1('/one?q=1'), 'hello /one?q=1 0');
    // curl, a second real client, on a new connection.
    const body = await new Promise<string>((resolve, reject) =>
      execFile('curl', ['-sS', '-H', 'host: web.ns:8080', `http://127.0.0.1:${inboundPort}/two`], (err, out) => (err !== null ? reject(new Error(err.message)) : resolve(out))),
    );
    assert.equal(body, 'hello /two 0');
    const got = await events; // ends by itself: 2 requests, both ended
    const lines = got.map(formatTapEvent);
    assert.equal(got.length, 6, lines.join('\n'));
    assert.match(lines[0]!, /^req id=\d+:0 proxy=in {2}src=127\.0\.0\.1:\d+ dst=127\.0\.0\.1:\d+ tls=no_identity :method=GET :authority=web\.ns:8080 :path=\/one$/);
    assert.match(lines[1]!, /^rsp id=\d+:0 .* :status=200 latency=\d+µs$/);
    assert.match(lines[2]!, /^end id=\d+:0 .* duration=\d+µs response-length=16B$/);
    assert.match(lines[3]!, /^req id=\d+:1 .*:path=\/two$/);
    assert.match(lines[5]!, /^end id=\d+:1 .*response-length=12B$/);
    await streams(0);
  });

  test('HTTP/2 (prior knowledge) streams are tapped too, gRPC-less: status and DATA bytes', async () => {
    const events = tap(tapLeaf, { limit: 1, match: { http: { path: { prefix: '/h2' } } } });
    await streams(1);
    const session = http2.connect(`http://127.0.0.1:${inboundPort}`);
    let status = 0;
    const body = await new Promise<string>((resolve, reject) => {
      const req = session.request({ ':path': '/h2/x', ':authority': 'web.ns:8080' });
      req.on('response', (h) => (status = Number(h[':status'])));
      let b = '';
      req.on('data', (c: Buffer) => (b += c.toString()));
      req.on('end', () => resolve(b));
      req.on('error', reject);
      req.end();
    });
    session.close();
    assert.equal(`${status} ${body}`, '200 h2 /h2/x');
    const got = await events;
    const lines = got.map(formatTapEvent);
    assert.equal(got.length, 3, lines.join('\n'));
    assert.match(lines[0]!, /^req id=\d+:0 proxy=in .* :method=GET :authority=web\.ns:8080 :path=\/h2\/x$/);
    assert.equal(got[0]?.http?.request_init?.scheme?.registered, 'HTTP');
    assert.match(lines[1]!, /:status=\d{3} latency=\d+µs$/);
    assert.match(lines[2]!, /response-length=\d+B$/);
    assert.equal(Number(got[2]?.http?.response_end?.response_bytes), Buffer.byteLength(body));
  });

  test('matches filter: only the path prefix is reported', async () => {
    const events = tap(tapLeaf, { limit: 1, match: { all: { matches: [{ http: { path: { prefix: '/match' } } }, { http: { method: { registered: 'POST' } } }] } } });
    await streams(1);
    await h1('/other', 'POST');
    await h1('/match/a', 'GET');
    await h1('/match/b', 'POST');
    const got = await events;
    assert.deepEqual(
      got.filter((e) => e.http?.event === 'request_init').map((e) => e.http?.request_init?.path),
      ['/match/b'],
    );
    assert.equal(got.length, 3);
  });

  test('another identity gets PERMISSION_DENIED, no certificate UNAUTHENTICATED; both counted', async () => {
    await assert.rejects(tap(otherLeaf, { limit: 1, match: { all: { matches: [] } } }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'BPFMESH_E_TAP_DENIED');
      assert.match(err.message, /PERMISSION_DENIED/);
      assert.match(err.message, /Unauthorized peer/);
      return true;
    });
    await assert.rejects(tap(null, { limit: 1, match: { all: { matches: [] } } }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'BPFMESH_E_TAP_DENIED');
      assert.match(err.message, /UNAUTHENTICATED/);
      return true;
    });
    assert.equal(await metricValue(registry, 'bpfmesh_tap_streams_total', { result: 'permission_denied' }), 1);
    assert.equal(await metricValue(registry, 'bpfmesh_tap_streams_total', { result: 'unauthenticated' }), 1);
    assert.equal(await metricValue(registry, 'bpfmesh_tap_streams', {}), 0);
  });

  test('a certificate from another trust root is not an identity: UNAUTHENTICATED', async () => {
    const rogueAnchor = await mintAnchor('rogue');
    const rogueIssuer = await mintIssuer(rogueAnchor);
    const rogueTap = await mintLeaf(rogueIssuer, TAP_ID); // the right name, the wrong issuer
    await assert.rejects(
      observe({
        addr: control,
        serverId: PROXY_ID,
        certPem: rogueTap.certPem + rogueIssuer.certPem,
        keyPem: rogueTap.keyPem,
        trustAnchorsPem: anchor.certPem,
        request: { limit: 1, match: { all: { matches: [] } } },
        onEvent: () => {},
      }),
      (err: Error & { code?: string }) => err.code === 'BPFMESH_E_TAP_DENIED' && /UNAUTHENTICATED/.test(err.message),
    );
  });

  test('limit 0 and a bad match are INVALID_ARGUMENT; a third stream over the cap of 2 is refused', async () => {
    await assert.rejects(tap(tapLeaf, { limit: 0, match: { all: { matches: [] } } }), { code: 'BPFMESH_E_TAP_INVALID' });
    await assert.rejects(tap(tapLeaf, { limit: 1, match: { http: {} } }), { code: 'BPFMESH_E_TAP_INVALID' });
    const abort = new AbortController();
    const held = [tap(tapLeaf, { limit: 5, match: { all: { matches: [] } } }, undefined, abort.signal), tap(tapLeaf, { limit: 5, match: { all: { matches: [] } } }, undefined, abort.signal)];
    await streams(2);
    await assert.rejects(tap(tapLeaf, { limit: 1, match: { all: { matches: [] } } }), (err: Error & { code?: string }) => err.code === 'BPFMESH_E_TAP_UNAVAILABLE' && /RESOURCE_EXHAUSTED/.test(err.message));
    abort.abort();
    await Promise.all(held);
    await streams(0);
  });

  test('a renewed workload certificate serves the next connection; the open stream keeps going', async () => {
    const abort = new AbortController();
    const held = tap(tapLeaf, { limit: 5, match: { all: { matches: [] } } }, undefined, abort.signal);
    await streams(1);
    const renewed = await mintLeaf(issuer, PROXY_ID);
    store.update(materialOf(renewed, issuer));
    const serial = await new Promise<string>((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port: control.port, ca: anchor.certPem, servername: PROXY_ID, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined }, () => {
        resolve(s.getPeerX509Certificate()?.serialNumber ?? '');
        s.destroy();
      });
      s.on('error', reject);
    });
    assert.equal(serial.toLowerCase(), new X509Certificate(renewed.certPem).serialNumber.toLowerCase());
    await h1('/after-renewal');
    abort.abort();
    const got = await held;
    assert.ok(got.some((e) => e.http?.request_init?.path === '/after-renewal'), 'the stream opened before the renewal still reports');
    await streams(0);
  });

  test('bpfmesh tap --pod --namespace: the pod\'s IP and identity from the Kubernetes API (its service account)', async () => {
    const kube = await startFakeKube();
    const dir = mkdtempSync(join(tmpdir(), 'bpfmesh-tap-cli-'));
    try {
      kube.setPod({ metadata: { name: 'web-0', namespace: 'ns' }, spec: { serviceAccountName: 'web' }, status: { podIP: '127.0.0.1' } });
      kube.setPod({ metadata: { name: 'db-0', namespace: 'ns' }, spec: { serviceAccountName: 'db' }, status: { podIP: '127.0.0.1' } });
      writeFileSync(join(dir, 'tap.crt'), tapLeaf.certPem + issuer.certPem);
      writeFileSync(join(dir, 'tap.key'), tapLeaf.keyPem);
      writeFileSync(join(dir, 'ca.crt'), anchor.certPem);
      const cli = (pod: string): Promise<{ code: number | null; out: string; err: string }> =>
        new Promise((resolve) => {
          const args = ['tap', '--pod', pod, '--namespace', 'ns', '--kubeconfig', kube.kubeconfigPath, '--control-port', String(control.port)];
          args.push('--cert', join(dir, 'tap.crt'), '--key', join(dir, 'tap.key'), '--trust-anchors', join(dir, 'ca.crt'), '--max', '1', '--path', '/via-kube');
          const child = spawn(process.execPath, [join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js'), ...args]);
          let out = '';
          let err = '';
          child.stdout.on('data', (d: Buffer) => (out += d.toString()));
          child.stderr.on('data', (d: Buffer) => (err += d.toString()));
          const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
          child.once('exit', (code) => {
            clearTimeout(timer);
            resolve({ code, out, err });
          });
        });
      await streams(0);
      const running = cli('web-0');
      await streams(1);
      await h1('/via-kube');
      const r = await running;
      assert.equal(r.code, 0, `${r.err} / ${r.out}`);
      assert.equal(r.out.split('\n').filter((l) => l !== '').length, 3, r.out);
      assert.match(r.out, /^req id=\d+:0 proxy=in .*:path=\/via-kube$/m);
      // db-0's service account names another identity than the proxy at that address presents.
      const wrong = await cli('db-0');
      assert.equal(wrong.code, 1);
      assert.match(wrong.err, /BPFMESH_E_TAP_UNAVAILABLE/);
      const missing = await cli('nope');
      assert.equal(missing.code, 1);
      assert.match(missing.err, /BPFMESH_E_NOT_FOUND: pod ns\/nope: not found/);
    } finally {
      await kube.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the README\'s openssl recipe for a tap identity leaf is admitted', async () => {
    const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
    const start = readme.indexOf('  ID=linkerd-tap.');
    const end = readme.indexOf('\n', readme.indexOf('  cat tap.leaf.crt issuer.crt > tap.crt', start));
    assert.ok(start > 0 && end > start, 'the recipe is in the README');
    const script = readme.slice(start, end).replace(/^ {2}/gm, '');
    const dir = mkdtempSync(join(tmpdir(), 'bpfmesh-tap-openssl-'));
    try {
      writeFileSync(join(dir, 'issuer.crt'), issuer.certPem);
      writeFileSync(join(dir, 'issuer.key'), issuer.keyPem);
      execFileSync('bash', ['-euo', 'pipefail', '-c', script], { cwd: dir, stdio: 'pipe' });
      const events = observe({
        addr: control,
        serverId: PROXY_ID,
        certPem: readFileSync(join(dir, 'tap.crt'), 'utf8'),
        keyPem: readFileSync(join(dir, 'tap.key'), 'utf8'),
        trustAnchorsPem: anchor.certPem,
        request: { limit: 1, match: { http: { path: { exact: '/openssl' } } } },
        onEvent: () => {},
      });
      await streams(1);
      await h1('/openssl');
      await events;
      await streams(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a key that is not the certificate\'s is a flag error, not a stack trace', async () => {
    await assert.rejects(
      observe({ addr: control, certPem: tapLeaf.certPem, keyPem: otherLeaf.keyPem, trustAnchorsPem: anchor.certPem, request: { limit: 1 }, onEvent: () => {} }),
      { code: 'BPFMESH_E_BAD_FLAG' },
    );
  });

  test('a plaintext client is closed without a gRPC answer', async () => {
    const r = await new Promise<string>((resolve) => {
      const s = connect(control.port, '127.0.0.1');
      let got = '';
      s.on('data', (c: Buffer) => (got += c.toString('latin1')));
      s.on('close', () => resolve(got));
      s.on('error', () => {});
      s.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
    });
    assert.equal(r.includes('grpc'), false);
    assert.ok((await metricValue(registry, 'bpfmesh_tap_connections_refused_total', { reason: 'tls' })) >= 1);
  });
});

describe('tap bounds: a tapper that stops reading', { timeout: 60_000 }, () => {
  let anchor: Issued;
  let issuer: Issued;
  let tapLeaf: Issued;
  let app: RecordingApp;
  let proxy: Proxy;
  let server: TapServer;
  let registry: Registry;
  let control: Addr;
  let inboundPort = 0;

  before(async () => {
    anchor = await mintAnchor();
    issuer = await mintIssuer(anchor);
    const proxyLeaf = await mintLeaf(issuer, PROXY_ID);
    tapLeaf = await mintLeaf(issuer, TAP_ID);
    app = new RecordingApp((_req, res) => res.end('x'.repeat(100)));
    const appPort = await app.listen();
    const config = parseProxyEnv({
      LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR: '127.0.0.1:0',
      LINKERD2_PROXY_INBOUND_LISTEN_ADDR: '127.0.0.1:0',
      LINKERD2_PROXY_CONTROL_LISTEN_ADDR: '127.0.0.1:0',
      LINKERD2_PROXY_TAP_SVC_NAME: TAP_ID,
      BPFMESH_PROXY_TAP_QUEUE: '5',
      BPFMESH_PROXY_TAP_MAX_EVENTS_PER_SECOND: '100000',
    });
    registry = new Registry();
    const log = createLogger({ logFormat: 'json', logLevel: 'silent' });
    const hub = new TapHub({ registry, maxEventsPerSecond: config.tap!.maxEventsPerSecond });
    proxy = new Proxy({ config, registry, log, tapHub: hub, originalDst: () => ({ host: '127.0.0.1', port: appPort }) });
    await proxy.start();
    inboundPort = proxy.listening.inbound.find((a) => a.host === '127.0.0.1')!.port;
    const store = new TlsStore({ trustAnchorsPem: anchor.certPem, identity: PROXY_ID });
    store.update(materialOf(proxyLeaf, issuer));
    server = new TapServer({ listen: config.controlListenAddr, config: config.tap!, store, hub, log, registry });
    control = await server.start();
  });

  after(async () => {
    await server?.close();
    await proxy?.shutdown(0);
    await app?.close();
  });

  /** `n` GET requests on one keep-alive connection; how many got 200. */
  // (the events/s cap is tested on the hub alone, with its clock: see below)
  async function requests(n: number): Promise<number> {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    let ok = 0;
    for (let i = 0; i < n; i++) {
      ok += await new Promise<number>((resolve) => {
        const req = http.get({ host: '127.0.0.1', port: inboundPort, path: `/r/${i}`, agent }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode === 200 ? 1 : 0));
        });
        req.on('error', () => resolve(0));
      });
    }
    agent.destroy();
    return ok;
  }

  async function waitStreams(n: number): Promise<void> {
    for (let i = 0; i < 200 && (await metricValue(registry, 'bpfmesh_tap_streams')) !== n; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(await metricValue(registry, 'bpfmesh_tap_streams'), n);
  }

  test('a tapper that stops reading: events past its queue are dropped and counted, requests go on', async () => {
    // A raw HTTP/2 client that never reads (grpc-js's client buffers whatever comes, paused or not):
    // HTTP/2 flow control stops the server after a stream window, then its queue of 5 fills.
    const session = http2.connect(`https://127.0.0.1:${control.port}`, {
      ca: anchor.certPem,
      cert: tapLeaf.certPem + issuer.certPem,
      key: tapLeaf.keyPem,
      servername: PROXY_ID,
      checkServerIdentity: () => undefined,
    });
    session.on('error', () => {});
    const body = tapService().Observe.requestSerialize({ limit: 1000, match: { all: { matches: [] } } });
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    body.copy(frame, 5);
    const call = session.request({ ':method': 'POST', ':path': '/io.linkerd.proxy.tap.Tap/Observe', 'content-type': 'application/grpc', te: 'trailers' });
    call.on('error', () => {});
    call.end(frame);
    call.pause();
    await waitStreams(1);
    const sent0 = await metricValue(registry, 'bpfmesh_tap_events_total');
    // 300 requests, 900 events of ~120 bytes: more than a 64 KiB stream window.
    assert.equal(await requests(300), 300, 'every request answered while the tapper stalls');
    await new Promise((r) => setTimeout(r, 200));
    const dropped = await metricValue(registry, 'bpfmesh_tap_events_dropped_total', { reason: 'queue_full' });
    const sent = (await metricValue(registry, 'bpfmesh_tap_events_total')) - sent0;
    assert.ok(dropped > 0, `dropped ${dropped}, sent ${sent}`);
    assert.equal(sent + dropped, 900, 'every event either queued/sent or dropped');
    assert.ok(sent < 900 && sent > 0);
    call.close();
    session.close();
    await waitStreams(0);
  });
});

describe('tap hub: the events/s cap', () => {
  test('a token bucket of maxEventsPerSecond; a matching request past it is not tapped and counted', async () => {
    let now = 0;
    const registry = new Registry();
    const hub = new TapHub({ registry, maxEventsPerSecond: 30, now: () => now });
    const sent: unknown[] = [];
    const remove = hub.add({ base: hub.nextBase(), limit: 1000, match: () => true, send: (ev) => sent.push(ev) > 0, done: () => {} });
    const req = { ...view(), direction: 'inbound' as const, sourceMeta: { tls: 'true' }, destinationMeta: undefined };
    const start = (): boolean => {
      const x = hub.start(req);
      x?.response(200);
      x?.end({}, 0);
      return x !== undefined;
    };
    let tapped = 0;
    for (let i = 0; i < 20; i++) if (start()) tapped++;
    assert.equal(tapped, 10, 'a full bucket: 30 events, 10 requests');
    assert.equal(await metricValue(registry, 'bpfmesh_tap_requests_skipped_total', { reason: 'rate' }), 10);
    now += 500; // half a second refills 15 events
    tapped = 0;
    for (let i = 0; i < 20; i++) if (start()) tapped++;
    assert.equal(tapped, 5);
    assert.equal(sent.length, 45);
    assert.equal(await metricValue(registry, 'bpfmesh_tap_events_total'), 45);
    remove();
    assert.equal(hub.active, false, 'no stream: the request path is back to one false test');
    assert.equal(hub.start(req), undefined);
  });
});

describe('bpfmesh proxy with LINKERD2_PROXY_TAP_SVC_NAME but identity disabled', () => {
  test('warns and serves no tap (nothing listens on the control port), as Linkerd does', async () => {
    const free = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
    const cli = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
    const child = spawn(process.execPath, [cli, 'proxy'], {
      env: {
        PATH: process.env['PATH'],
        LINKERD2_PROXY_IDENTITY_DISABLED: 'disabled',
        LINKERD2_PROXY_TAP_SVC_NAME: TAP_ID,
        LINKERD2_PROXY_LOG: 'info',
        LINKERD2_PROXY_LOG_FORMAT: 'json',
        LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR: '127.0.0.1:0',
        LINKERD2_PROXY_INBOUND_LISTEN_ADDR: '127.0.0.1:0',
        LINKERD2_PROXY_ADMIN_LISTEN_ADDR: '127.0.0.1:0',
        LINKERD2_PROXY_CONTROL_LISTEN_ADDR: `127.0.0.1:${free}`,
      },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      for (let i = 0; i < 100 && !out.includes('admin listening'); i++) await new Promise((r) => setTimeout(r, 100));
      assert.match(out, /LINKERD2_PROXY_TAP_SVC_NAME is set but identity is disabled; tap stays off/);
      assert.doesNotMatch(out, /tap listening/);
      const refused = await new Promise<boolean>((resolve) => {
        const s = connect(free, '127.0.0.1');
        s.on('connect', () => {
          s.destroy();
          resolve(false);
        });
        s.on('error', () => resolve(true));
      });
      assert.equal(refused, true, 'nothing listens on the control port');
    } finally {
      child.kill('SIGKILL');
    }
  });
});

describe('tap environment', () => {
  test('off without LINKERD2_PROXY_TAP_SVC_NAME or with LINKERD2_PROXY_TAP_DISABLED; bounds from BPFMESH_PROXY_TAP_*; bad values are BPFMESH_E_BAD_ENV', () => {
    assert.equal(parseProxyEnv({}).tap, undefined);
    assert.equal(parseProxyEnv({ LINKERD2_PROXY_TAP_SVC_NAME: TAP_ID, LINKERD2_PROXY_TAP_DISABLED: 'true' }).tap, undefined);
    assert.deepEqual(parseProxyEnv({ LINKERD2_PROXY_TAP_SVC_NAME: TAP_ID }).tap, { svcName: TAP_ID, maxStreams: 16, queue: 400, maxEventsPerSecond: 3000 });
    assert.deepEqual(
      parseProxyEnv({ LINKERD2_PROXY_TAP_SVC_NAME: TAP_ID, BPFMESH_PROXY_TAP_MAX_STREAMS: '2', BPFMESH_PROXY_TAP_QUEUE: '10', BPFMESH_PROXY_TAP_MAX_EVENTS_PER_SECOND: '99' }).tap,
      { svcName: TAP_ID, maxStreams: 2, queue: 10, maxEventsPerSecond: 99 },
    );
    assert.throws(() => parseProxyEnv({ LINKERD2_PROXY_TAP_SVC_NAME: 'not a name' }), { code: 'BPFMESH_E_BAD_ENV' });
    assert.throws(() => parseProxyEnv({ LINKERD2_PROXY_TAP_SVC_NAME: TAP_ID, BPFMESH_PROXY_TAP_QUEUE: '0' }), { code: 'BPFMESH_E_BAD_ENV' });
  });
});
