// `bpfmesh tap` end to end: client pod a and server pod b, each with
// `bpfmesh proxy` (mTLS between them, certificates from the control plane
// in pod cp) and LINKERD2_PROXY_TAP_SVC_NAME set; the tapper runs the CLI
// in pod t (no proxy), over the lab network to b's (or a's) control port,
// presenting a leaf for the tap identity (or another) from cp's issuer.
//   a --HTTP/1 8080, HTTP/2 8081--> b (app-server)      t --mTLS 4190--> a, b, c
//   a --HTTP/1 over HTTP/2 (l5d-orig-proto)--> c (app-server, endpoint hinted h2)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, CLI, identityName as id, MeshLab, meshProxyEnv, PodProcess, promSample } from '../helpers/mesh.js';
import type { LabPod } from '../../src/lab/lab.js';

const skip = kernelSkipReason();
const SUBNET = 73;
const TAP_ID = 'linkerd-tap.linkerd-viz.serviceaccount.identity.linkerd.cluster.local';

interface JsonEvent {
  source: { ip: string; port: number; metadata: Record<string, string> };
  destination: { ip: string; port: number; metadata: Record<string, string> };
  proxyDirection: string;
  requestInitEvent?: { id: { base: number; stream: number }; method: string; authority: string; path: string };
  responseInitEvent?: { id: { stream: number }; httpStatus: number };
  responseEndEvent?: { id: { stream: number }; responseBytes: number };
}

describe('bpfmesh tap: live requests through proxies with mTLS', { skip, timeout: 180_000 }, () => {
  let mesh: MeshLab;
  let a: LabPod;
  let b: LabPod;
  let t: LabPod;
  let c: LabPod;
  let dir: string;
  let state: string;
  const proxies: PodProcess[] = [];

  before(async () => {
    mesh = new MeshLab(SUBNET);
    [a, b, t, c] = [mesh.pod('a'), mesh.pod('b'), mesh.pod('t'), mesh.pod('c')];
    dir = mkdtempSync(join(tmpdir(), 'bpfmesh-tap-'));
    chmodSync(dir, 0o755);
    const config = [
      'trustDomain: cluster.local',
      'services:',
      `  - name: "${b.ip4}:8080"`,
      `    endpoints: [{ addr: "${b.ip4}:8080", identity: ${id('b')}, labels: { pod: b } }]`,
      `  - name: "${b.ip4}:8081"`,
      `    endpoints: [{ addr: "${b.ip4}:8081", identity: ${id('b')}, labels: { pod: b } }]`,
      // c takes HTTP/1 from a carried over HTTP/2 between the proxies (l5d-orig-proto).
      `  - name: "${c.ip4}:8080"`,
      `    endpoints: [{ addr: "${c.ip4}:8080", identity: ${id('c')}, protocolHint: h2, labels: { pod: c } }]`,
      '',
    ].join('\n');
    writeFileSync(join(dir, 'mesh.yaml'), config);
    writeFileSync(join(dir, 'token'), 'any-token');
    chmodSync(join(dir, 'token'), 0o644);
    state = join(dir, 'state');
    const cp = await mesh.controlPlanePod('cp', join(dir, 'mesh.yaml'), state);
    const anchors = readFileSync(join(state, 'trust-anchors.pem'), 'utf8');
    for (const [pod, sa] of [[b, 'b'], [c, 'c'], [a, 'a']] as const) {
      await mesh.init(pod);
      const env = { ...meshProxyEnv({ identity: id(sa), tokenFile: join(dir, 'token'), trustAnchorsPem: anchors, controlPlane: cp }), LINKERD2_PROXY_TAP_SVC_NAME: TAP_ID };
      proxies.push(await mesh.proxy(pod, env));
      if (pod !== a) await mesh.appServer(pod);
    }
  });

  after(() => {
    for (const p of proxies) if (p.child.exitCode !== null) process.stderr.write(`proxy exited ${p.child.exitCode}: ${p.stderr}\n`);
    mesh?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Open tap streams of the proxy in `pod`, from its /metrics. */
  const streams = async (pod: LabPod): Promise<number> => promSample(await mesh.curl(pod, 'http://127.0.0.1:4191/metrics'), 'bpfmesh_tap_streams');

  /** `bpfmesh tap` in pod t (root: it reads cp's issuer key); returns once the proxy in `of` has registered the stream. */
  async function startTap(of: LabPod, server: string, args: string[], where = ['--addr', `${of.ip4}:4190`]): Promise<{ done: Promise<{ code: number | null; stdout: string; stderr: string }> }> {
    const before = await streams(of);
    const child = mesh.lab.spawn(t, process.execPath, [CLI, 'tap', ...where, '--server-id', server, '--control-plane-state', state, ...args], {});
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })));
    const deadline = Date.now() + 15_000;
    while ((await streams(of)) <= before) {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill('SIGKILL');
        const r = await done;
        return { done: Promise.resolve(r) };
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    return { done: done.finally(() => clearTimeout(timer)) };
  }

  const curl = async (args: string[]): Promise<string> => {
    const r = await mesh.lab.exec(a, 'curl', ['-sS', '--max-time', '5', ...args], APP);
    assert.equal(r.code, 0, `curl ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };

  test('the tap identity sees b\'s inbound HTTP/1 and HTTP/2 requests with a\'s verified identity, status and bytes', async () => {
    const tap = await startTap(b, id('b'), ['--json', '--max', '2']);
    const h1 = await curl([`http://${b.ip4}:8080/hello`]);
    const h2 = await curl(['--http2-prior-knowledge', `http://${b.ip4}:8081/over-h2`]);
    const r = await tap.done;
    assert.equal(r.code, 0, r.stderr);
    const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as JsonEvent);
    assert.equal(events.length, 6, r.stdout);
    const reqs = events.filter((e) => e.requestInitEvent !== undefined);
    assert.deepEqual(reqs.map((e) => [e.requestInitEvent!.method, e.requestInitEvent!.path, e.destination.port]), [
      ['GET', '/hello', 8080],
      ['GET', '/over-h2', 8081],
    ]);
    for (const e of events) {
      assert.equal(e.proxyDirection, 'INBOUND');
      assert.equal(e.source.ip, a.ip4, 'the source is the client pod');
      assert.equal(e.destination.ip, b.ip4);
      assert.deepEqual(e.source.metadata, { tls: 'true', client_id: id('a') }, 'mTLS, with the verified client identity');
    }
    const rsp = events.filter((e) => e.responseInitEvent !== undefined).map((e) => e.responseInitEvent!.httpStatus);
    assert.deepEqual(rsp, [200, 200]);
    const bytes = events.filter((e) => e.responseEndEvent !== undefined).map((e) => e.responseEndEvent!.responseBytes);
    assert.deepEqual(bytes, [Buffer.byteLength(h1), Buffer.byteLength(h2)], 'response-length is the body');
  });

  test('a\'s outbound side, as text lines: proxy=out, the endpoint\'s identity, --to filters by destination port', async () => {
    const tap = await startTap(a, id('a'), ['--max', '1', '--to', `${b.ip4}:8080`]);
    await curl(['--http2-prior-knowledge', `http://${b.ip4}:8081/not-this`]);
    await curl([`http://${b.ip4}:8080/this`]);
    const r = await tap.done;
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 3, r.stdout);
    const B = b.ip4.replace(/\./g, '\\.');
    assert.match(lines[0]!, new RegExp(`^req id=\\d+:0 proxy=out src=127\\.0\\.0\\.1:\\d+ dst=${B}:8080 tls=true :method=GET :authority=${B}:8080 :path=/this$`));
    assert.match(lines[1]!, new RegExp(`^rsp id=\\d+:0 proxy=out .* tls=true :status=200 latency=\\d+µs$`));
    assert.match(lines[2]!, /^end id=\d+:0 proxy=out .* duration=\d+µs response-length=\d+B$/);
  });

  test('--path and --max: only matching requests, and the stream ends after the limit', async () => {
    const tap = await startTap(b, id('b'), ['--json', '--max', '1', '--path', '/match']);
    await curl([`http://${b.ip4}:8080/other`]);
    await curl([`http://${b.ip4}:8080/match/1`]);
    const r = await tap.done; // ends by itself after /match/1
    await curl([`http://${b.ip4}:8080/match/2`]);
    assert.equal(r.code, 0, r.stderr);
    const paths = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as JsonEvent)
      .filter((e) => e.requestInitEvent)
      .map((e) => e.requestInitEvent!.path);
    assert.deepEqual(paths, ['/match/1']);
    assert.equal(await streams(b), 0, 'the stream is gone from the proxy');
  });

  test('--pod NAME finds the proxy through the node\'s pins, as bpfmesh inspect does (its own IP, its control port)', async () => {
    const tap = await startTap(b, id('b'), ['--max', '1'], ['--pod', b.netnsName]);
    await curl([`http://${b.ip4}:8080/by-pod`]);
    const r = await tap.done;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^req id=\\d+:0 proxy=in {2}src=${a.ip4.replace(/\./g, '\\.')}:\\d+ dst=${b.ip4.replace(/\./g, '\\.')}:8080 tls=true .*:path=/by-pod$`, 'm'));
  });

  test('HTTP/1 carried over HTTP/2 between the proxies (l5d-orig-proto) is tapped on both sides, with its body bytes', async () => {
    const inbound = await startTap(c, id('c'), ['--json', '--max', '1']);
    const outbound = await startTap(a, id('a'), ['--json', '--max', '1', '--to', `${c.ip4}:8080`]);
    const body = await curl([`http://${c.ip4}:8080/upgraded`]);
    const [rin, rout] = [await inbound.done, await outbound.done];
    assert.equal(rin.code, 0, rin.stderr);
    assert.equal(rout.code, 0, rout.stderr);
    const parse = (out: string): JsonEvent[] => out.trim().split('\n').map((l) => JSON.parse(l) as JsonEvent);
    const [ein, eout] = [parse(rin.stdout), parse(rout.stdout)];
    assert.equal(ein.length, 3, rin.stdout);
    assert.equal(eout.length, 3, rout.stdout);
    assert.equal(ein[0]!.requestInitEvent!.path, '/upgraded');
    assert.deepEqual(ein[0]!.source.metadata, { tls: 'true', client_id: id('a') });
    assert.equal(eout[0]!.proxyDirection, 'OUTBOUND');
    assert.equal(eout[0]!.destination.metadata['server_id'], id('c'));
    assert.equal(eout[0]!.destination.metadata['pod'], 'c', "the endpoint's labels");
    assert.equal(ein[2]!.responseEndEvent!.responseBytes, Buffer.byteLength(body));
    assert.equal(eout[2]!.responseEndEvent!.responseBytes, Buffer.byteLength(body));
    const upgraded = promSample(await mesh.curl(a, 'http://127.0.0.1:4191/metrics'), 'bpfmesh_orig_proto_requests_total', { event: 'upgraded' });
    assert.ok(upgraded >= 1, 'the request went over HTTP/2 between the proxies');
  });

  test('another identity, from the same trust anchors, is refused with PERMISSION_DENIED', async () => {
    const tap = await startTap(b, id('b'), ['--identity', id('a'), '--max', '1']);
    const r = await tap.done;
    assert.equal(r.code, 1);
    assert.match(r.stderr, /BPFMESH_E_TAP_DENIED/);
    assert.match(r.stderr, /PERMISSION_DENIED/);
    assert.equal(r.stdout, '');
    assert.ok(promSample(await mesh.curl(b, 'http://127.0.0.1:4191/metrics'), 'bpfmesh_tap_streams_total', { result: 'permission_denied' }) >= 1);
  });
});
