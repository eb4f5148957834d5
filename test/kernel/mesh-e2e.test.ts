// The mesh end to end: `bpfmesh control-plane` (Destination + Identity from
// a mesh.yaml) in a pod of its own, reached by every proxy over the lab
// network with deploy/base/sidecar.yaml's variables (TLS for Identity, mTLS for
// Destination); the proxies get certificates, discover endpoints and talk
// mTLS to each other.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, MeshLab, meshProxyEnv, PodProcess } from '../helpers/mesh.js';
import type { LabPod } from '../../src/lab/lab.js';
import { REPO_ROOT } from '../../src/config/paths.js';

const skip = kernelSkipReason();
const APP_SERVER = join(REPO_ROOT, 'dist', 'test', 'fixtures', 'app-server.js');
const ECHO_APP = `require('node:http').createServer((q, s) => s.end(JSON.stringify({ version: q.httpVersion, headers: q.headers })))
  .listen(8084, '::', () => process.stdout.write('ready\\n'));`;
const id = (sa: string): string => `${sa}.default.serviceaccount.identity.linkerd.cluster.local`;

function sample(text: string, name: string, labels: Record<string, string>): number {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

describe('mesh: discovery, identity and mTLS between two pods', { skip, timeout: 240_000 }, () => {
  let mesh: MeshLab;
  let a: LabPod;
  let b: LabPod;
  let dir: string;
  const proxies: PodProcess[] = [];

  before(async () => {
    mesh = new MeshLab(88);
    a = mesh.pod('a');
    b = mesh.pod('b');
    dir = mkdtempSync(join(tmpdir(), 'bpfmesh-mesh-'));
    chmodSync(dir, 0o755);
    writeFileSync(
      join(dir, 'mesh.yaml'),
      [
        'trustDomain: cluster.local',
        'services:',
        `  - name: "${b.ip4}:8080"`,
        '    endpoints:',
        `      - { addr: "${b.ip4}:8080", weight: 10000, identity: ${id('b')} }`,
        `  - name: "${b.ip4}:8081"`,
        '    endpoints:',
        `      - { addr: "${b.ip4}:8081", identity: ${id('b')} }`,
        `  - name: "${b.ip4}:8082"`,
        '    endpoints:',
        // Pod b answers any port with its own certificate, which is not the impostor's.
        `      - { addr: "${b.ip4}:8083", identity: ${id('impostor')} }`,
        `  - name: "${b.ip4}:9999"`,
        '    noEndpoints: true',
        // Meshed and hinted h2: HTTP/1 from the app travels as HTTP/2 between the proxies (l5d-orig-proto).
        `  - name: "${b.ip4}:8084"`,
        '    labels: { service: echo }',
        '    endpoints:',
        `      - { addr: "${b.ip4}:8084", identity: ${id('b')}, protocolHint: h2, labels: { pod: b } }`,
        '',
      ].join('\n'),
    );
    writeFileSync(join(dir, 'token'), 'any-token');
    chmodSync(join(dir, 'token'), 0o644);
    // One control plane, in a pod of its own, as in a cluster.
    const cp = await mesh.controlPlanePod('cp', join(dir, 'mesh.yaml'), join(dir, 'state'));
    const anchors = readFileSync(join(dir, 'state', 'trust-anchors.pem'), 'utf8');
    for (const [pod, sa] of [[a, 'a'], [b, 'b']] as const) {
      await mesh.init(pod);
      proxies.push(await mesh.proxy(pod, meshProxyEnv({ identity: id(sa), tokenFile: join(dir, 'token'), trustAnchorsPem: anchors, controlPlane: cp })));
    }
    const app = new PodProcess(mesh.lab.spawn(b, process.execPath, [APP_SERVER], APP));
    await app.waitFor((e) => e.event === 'ready');
    // An HTTP/1 app on 8084 that says which version and headers it received.
    const echo = new PodProcess(mesh.lab.spawn(b, process.execPath, ['-e', ECHO_APP], APP));
    await echo.waitFor((e) => e.event === 'ready');
  });
  after(() => {
    for (const p of proxies) if (p.child.exitCode !== null) process.stderr.write(`proxy exited ${p.child.exitCode}: ${p.stderr}\n`);
    mesh?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const metrics = (pod: LabPod): Promise<string> => mesh.curl(pod, 'http://127.0.0.1:4191/metrics');

  test('HTTP/1.1 and HTTP/2 travel over mTLS between the proxies', async () => {
    assert.equal(await mesh.curl(a, `http://${b.ip4}:8080/x`), `hello /x from ${b.ip4}:8080 1.1`);
    const h2 = await mesh.lab.exec(a, 'curl', ['-sS', '--http2-prior-knowledge', '--max-time', '5', `http://${b.ip4}:8081/y`], APP);
    assert.equal(h2.stdout.trim(), `hello /y from ${b.ip4}:8081 2.0`, h2.stderr);
    const mb = await metrics(b);
    assert.ok(sample(mb, 'request_total', { direction: 'inbound', tls: 'true' }) >= 2, 'the inbound proxy terminated mTLS');
    const ma = await metrics(a);
    assert.ok(sample(ma, 'request_total', { direction: 'outbound', tls: 'true' }) >= 2, 'the outbound proxy originated mTLS');
    assert.ok(/bpfmesh_identity_cert_expiry_timestamp_seconds \d/.test(ma), 'certificate expiry exported');
  });

  test('the inbound proxy tells the app who called: l5d-client-id, never forged', async () => {
    assert.equal(await mesh.curl(a, `http://${b.ip4}:8080/whoami`), `client-id ${id('a')}`);
    const forged = await mesh.lab.exec(a, 'curl', ['-sS', '--max-time', '5', '-H', 'l5d-client-id: evil', `http://${b.ip4}:8080/whoami`], APP);
    assert.equal(forged.stdout.trim(), `client-id ${id('a')}`, 'the client cannot choose its identity');
    const h2 = await mesh.lab.exec(a, 'curl', ['-sS', '--http2-prior-knowledge', '--max-time', '5', '-H', 'l5d-client-id: evil', `http://${b.ip4}:8081/whoami`], APP);
    assert.equal(h2.stdout.trim(), `client-id ${id('a')}`, h2.stderr);
  });

  test('openssl s_client sees TLS 1.3 and the pod identity on the inbound side', async () => {
    // As the proxy uid, so the connection goes straight to pod b's inbound proxy.
    const r = await mesh.lab.exec(a, 'openssl', ['s_client', '-connect', `${b.ip4}:8080`, '-servername', id('b'), '-tls1_3', '-CAfile', join(dir, 'state', 'trust-anchors.pem')], { uid: 2102, gid: 2102 }, 10_000, '');
    assert.match(r.stdout, /TLSv1\.3/, r.stdout + r.stderr);
    assert.match(r.stdout, /Verify return code: 0 \(ok\)/);
    const cert = await mesh.lab.exec(a, 'sh', ['-c', `openssl s_client -connect ${b.ip4}:8080 -servername ${id('b')} -tls1_3 </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName`], { uid: 2102, gid: 2102 }, 10_000);
    assert.match(cert.stdout, new RegExp(`DNS:${id('b').replace(/\./g, '\\.')}`));
  });

  test('an endpoint that presents the wrong identity is refused with a 502', async () => {
    const r = await mesh.lab.exec(a, 'curl', ['-sS', '-i', '--max-time', '5', `http://${b.ip4}:8082/`], APP);
    assert.match(r.stdout, /^HTTP\/1\.1 502/, r.stdout);
    assert.match(r.stdout, /l5d-proxy-error/i);
  });

  test('NoEndpoints(exists=true) answers 503 fast; an unknown service falls back to the original destination', async () => {
    const started = Date.now();
    const r = await mesh.lab.exec(a, 'curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', `http://${b.ip4}:9999/`], APP);
    assert.equal(r.stdout, '503');
    assert.ok(Date.now() - started < 3000);
    // b:8080 is known; 9000 (the opaque echo) is not: plain TCP to the original destination.
    assert.equal(await mesh.nc(a, b.ip4, 9000), 'hello');
  });

  test('plaintext from an unmeshed client still reaches the app', async () => {
    const c = mesh.pod('c'); // no init, no proxy
    assert.equal(await mesh.curl(c, `http://${b.ip4}:8080/plain`), `hello /plain from ${b.ip4}:8080 1.1`);
    const forged = await mesh.lab.exec(c, 'curl', ['-sS', '--max-time', '5', '-H', 'l5d-client-id: evil', `http://${b.ip4}:8080/whoami`], APP);
    assert.equal(forged.stdout.trim(), 'client-id -', 'an unauthenticated client gets no identity, whatever it sends');
    const mb = await metrics(b);
    assert.ok(sample(mb, 'request_total', { direction: 'inbound', tls: 'no_identity' }) >= 1);
  });

  test('protocol_hint h2: curl HTTP/1.1 is carried as HTTP/2 between the proxies and reaches the app as HTTP/1.1 without l5d-orig-proto', async () => {
    const upgraded = sample(await metrics(a), 'bpfmesh_orig_proto_requests_total', { event: 'upgraded' });
    const downgraded = sample(await metrics(b), 'bpfmesh_orig_proto_requests_total', { event: 'downgraded' });
    const r = await mesh.lab.exec(a, 'curl', ['-sS', '-i', '--http1.1', '--max-time', '5', `http://${b.ip4}:8084/orig`], APP);
    assert.match(r.stdout, /^HTTP\/1\.1 200 /, r.stdout + r.stderr);
    assert.doesNotMatch(r.stdout, /l5d-orig-proto/i, 'the client never sees l5d-orig-proto');
    const seen = JSON.parse(r.stdout.slice(r.stdout.indexOf('\r\n\r\n') + 4)) as { version: string; headers: Record<string, string> };
    assert.equal(seen.version, '1.1', 'the app speaks HTTP/1.1');
    assert.equal(seen.headers['l5d-orig-proto'], undefined, 'the inbound proxy removed l5d-orig-proto');
    assert.equal(seen.headers['l5d-client-id'], id('a'), 'over mTLS from pod a');
    assert.equal(seen.headers['host'], `${b.ip4}:8084`);
    const ma = await metrics(a);
    assert.equal(sample(ma, 'bpfmesh_orig_proto_requests_total', { event: 'upgraded' }), upgraded + 1, 'the outbound proxy sent it as HTTP/2');
    assert.equal(sample(await metrics(b), 'bpfmesh_orig_proto_requests_total', { event: 'downgraded' }), downgraded + 1, 'the inbound proxy got it as HTTP/2');
    assert.equal(sample(ma, 'bpfmesh_orig_proto_requests_total', { event: 'fallback_http1' }), 0);
    // The endpoint's identity and metric_labels label the outbound metrics.
    assert.ok(sample(ma, 'request_total', { direction: 'outbound', tls: 'true', server_id: id('b'), dst_pod: 'b', dst_service: 'echo' }) >= 1, ma);
  });
});
