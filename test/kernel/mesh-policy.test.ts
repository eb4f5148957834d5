// Inbound authorization through pods on the real kernel, with the control
// plane as in a cluster: `bpfmesh control-plane` in a pod of its own (cp:
// Identity over TLS :8080, Destination over mTLS :8086) for every proxy;
// pod b's proxy watches its policy (InboundServerPolicies from the same
// mesh.yaml) over mTLS with its workload certificate on the policy port
// (:8090) of a second control-plane pod, pol, as Linkerd's policy controller
// is a server of its own: it can go down while Identity and Destination stay
// up. Pod a is a meshed client (identity a), pod u an unmeshed one, pod d
// serves without a policy API (its default policy only). Policies by
// identity, by network, default policies, a change under load, and the
// policy API down.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, MeshLab, meshProxyEnv, PodProcess, identityName as id, promSample, type ControlPlanePod } from '../helpers/mesh.js';
import type { LabPod } from '../../src/lab/lab.js';

const skip = kernelSkipReason();
const SUBNET = 97;

describe('mesh: inbound authorization policy', { skip, timeout: 300_000 }, () => {
  let mesh: MeshLab;
  let a: LabPod;
  let b: LabPod;
  let d: LabPod;
  let u: LabPod;
  let dir: string;
  let anchors: string;
  let cp: ControlPlanePod;
  let pol: ControlPlanePod;
  let proxyB: PodProcess;

  /** b's mesh.yaml policy: 8080 for identity a (or nobody), 8081 for another identity, 9000 from pod u's address only. */
  const meshYaml = (allowA: boolean, echoFrom: LabPod = u): string =>
    [
      'services:',
      ...[8080, 8081, 9000].flatMap((p) => [`  - name: "${b.ip4}:${p}"`, '    endpoints:', `      - { addr: "${b.ip4}:${p}", identity: ${id('b')} }`]),
      ...[8080, 9000].flatMap((p) => [`  - name: "${d.ip4}:${p}"`, '    endpoints:', `      - { addr: "${d.ip4}:${p}", identity: ${id('d')} }`]),
      'policy:',
      '  defaultPolicy: deny',
      '  servers:',
      '    - name: web',
      '      workload: default:b',
      '      port: 8080',
      '      authorizations:',
      `        - { name: clients, authentication: { identities: [${allowA ? id('a') : id('nobody')}] } }`,
      '    - name: grpc',
      '      workload: default:b',
      '      port: 8081',
      '      authorizations:',
      `        - { name: others, authentication: { suffixes: [other.serviceaccount.identity.linkerd.cluster.local] } }`,
      '    - name: echo',
      '      workload: default:b',
      '      port: 9000',
      '      authorizations:',
      `        - { name: from-u, networks: ["${echoFrom.ip4}/32"], authentication: unauthenticated }`,
      '',
    ].join('\n');

  /** deploy/base/sidecar.yaml's control-plane variables, off loopback: Identity and Destination at cp. */
  const proxyEnv = (sa: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
    ...meshProxyEnv({ identity: id(sa), tokenFile: join(dir, 'token'), trustAnchorsPem: anchors, controlPlane: cp }),
    ...extra,
  });
  /** b's policy API: pol's policy port over mTLS, under the destination identity (LINKERD2_PROXY_POLICY_SVC_NAME), as Linkerd's charts set it. */
  const bPolicyEnv = (): NodeJS.ProcessEnv => ({
    ...meshProxyEnv({ identity: id('b'), tokenFile: join(dir, 'token'), trustAnchorsPem: anchors, controlPlane: pol, policyWorkload: '{"ns":"default","pod":"b"}' }),
    LINKERD2_PROXY_DESTINATION_SVC_ADDR: cp.destination,
    LINKERD2_PROXY_IDENTITY_SVC_ADDR: cp.identity,
    LINKERD2_PROXY_INBOUND_PORTS: '8080,8081,9000',
  });

  before(async () => {
    mesh = new MeshLab(SUBNET);
    a = mesh.pod('a');
    b = mesh.pod('b');
    d = mesh.pod('d');
    u = mesh.pod('u'); // no init, no proxy
    dir = mkdtempSync(join(tmpdir(), 'bpfmesh-policy-'));
    chmodSync(dir, 0o755);
    writeFileSync(join(dir, 'mesh.yaml'), meshYaml(true));
    writeFileSync(join(dir, 'token'), 'any-token');
    chmodSync(join(dir, 'token'), 0o644);
    cp = await mesh.controlPlanePod('cp', join(dir, 'mesh.yaml'), join(dir, 'state'));
    // b's policy API: a control plane of its own (same mesh.yaml, same issuer), which the tests stop and start.
    pol = await mesh.controlPlanePod('pol', join(dir, 'mesh.yaml'), join(dir, 'state'));
    anchors = readFileSync(join(dir, 'state', 'trust-anchors.pem'), 'utf8');
    for (const pod of [a, b, d]) await mesh.init(pod);
    await mesh.proxy(a, proxyEnv('a'));
    proxyB = await mesh.proxy(b, bPolicyEnv());
    // d: no policy API; every port follows LINKERD2_PROXY_INBOUND_DEFAULT_POLICY.
    await mesh.proxy(d, proxyEnv('d', { LINKERD2_PROXY_INBOUND_DEFAULT_POLICY: 'all-authenticated' }));
    await mesh.appServer(b);
    await mesh.appServer(d);
  });

  after(() => {
    mesh?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const http = (from: LabPod, url: string, args: string[] = []): Promise<{ stdout: string; stderr: string }> =>
    mesh.lab.exec(from, 'curl', ['-sS', '-i', '--max-time', '5', ...args, url], APP);
  const status = (r: { stdout: string }): number => Number(/^HTTP\/[\d.]+ (\d{3})/.exec(r.stdout)?.[1] ?? 0);
  const metrics = (pod: LabPod): Promise<string> => mesh.curl(pod, 'http://127.0.0.1:4191/metrics');

  test('by identity: the listed identity gets through over mTLS; others get 403 with l5d-proxy-error', async () => {
    const ok = await http(a, `http://${b.ip4}:8080/x`);
    assert.equal(status(ok), 200, ok.stdout + ok.stderr);
    const plain = await http(u, `http://${b.ip4}:8080/x`);
    assert.equal(status(plain), 403, plain.stdout);
    assert.match(plain.stdout, /l5d-proxy-error: .*not authorized/i);
    // Meshed, but not an identity of the grpc server's suffix: HTTP/2 403, gRPC PERMISSION_DENIED.
    const h2 = await http(a, `http://${b.ip4}:8081/y`, ['--http2-prior-knowledge']);
    assert.equal(status(h2), 403, h2.stdout + h2.stderr);
    const grpc = await http(a, `http://${b.ip4}:8081/svc.Echo/Say`, ['--http2-prior-knowledge', '-X', 'POST', '-H', 'content-type: application/grpc', '-H', 'te: trailers', '--data-binary', '']);
    assert.equal(status(grpc), 200, grpc.stdout + grpc.stderr);
    assert.match(grpc.stdout, /grpc-status: 7\r?\n/, grpc.stdout);
    const m = await metrics(b);
    assert.equal(promSample(m, 'inbound_http_authz_allow_total', { srv_name: 'web', authz_name: 'clients', client_id: id('a'), tls: 'true' }), 1);
    assert.equal(promSample(m, 'inbound_http_authz_deny_total', { srv_name: 'web', tls: 'no_identity' }), 1);
    assert.equal(promSample(m, 'inbound_http_authz_deny_total', { srv_name: 'grpc', client_id: id('a') }), 2);
    // The policy came over mTLS off loopback: one client built with the workload certificate, no TLS failure.
    assert.ok(promSample(m, 'bpfmesh_control_channel_builds_total', { service: 'policy' }) >= 1, m);
    assert.equal(promSample(m, 'bpfmesh_control_tls_failures_total', { service: 'policy' }), 0);
    assert.equal(promSample(m, 'bpfmesh_policy_watches', { state: 'streaming' }), 3);
  });

  test('by network: opaque TCP from the listed address is served; from another it is closed', async () => {
    assert.equal(await mesh.nc(u, b.ip4, 9000), 'hello');
    const denied = await mesh.lab.exec(a, 'nc', ['-N', '-w', '3', b.ip4, '9000'], APP, 10_000, 'hello\n');
    assert.equal(denied.stdout.trim(), '', 'pod a is closed without an echo');
    const m = await metrics(b);
    assert.equal(promSample(m, 'inbound_tcp_authz_allow_total', { srv_name: 'echo', authz_name: 'from-u', tls: 'no_identity' }), 1);
    assert.equal(promSample(m, 'inbound_tcp_authz_deny_total', { srv_name: 'echo', client_id: id('a') }), 1);
  });

  test('default policy without a policy API (all-authenticated): meshed clients in, plaintext 403, plaintext TCP closed', async () => {
    assert.equal(status(await http(a, `http://${d.ip4}:8080/x`)), 200);
    assert.equal(status(await http(u, `http://${d.ip4}:8080/x`)), 403);
    assert.equal(await mesh.nc(a, d.ip4, 9000), 'hello');
    const r = await mesh.lab.exec(u, 'nc', ['-N', '-w', '3', d.ip4, '9000'], APP, 10_000, 'hello\n');
    assert.equal(r.stdout.trim(), '', 'an unauthenticated TCP client is closed without an answer');
    const m = await metrics(d);
    assert.ok(promSample(m, 'inbound_http_authz_allow_total', { srv_kind: 'default', srv_name: 'all-authenticated', authz_name: 'all-authenticated', client_id: id('a') }) >= 1, m);
    assert.equal(promSample(m, 'inbound_tcp_authz_deny_total', { srv_name: 'all-authenticated', tls: 'no_identity' }), 1);
  });

  test('a policy change under load is applied within 1 s', async () => {
    const load = await mesh.load(a, `http://${b.ip4}:8080/x`, 2, 100_000, 4);
    await new Promise((r) => setTimeout(r, 1000));
    writeFileSync(join(dir, 'mesh.yaml'), meshYaml(false));
    const changedAt = Date.now();
    const report = await load.done;
    const first403 = report.failures.find((f) => f.status === 403);
    assert.ok(first403 !== undefined, `no 403 after the change: ${JSON.stringify(report.failures.slice(0, 3))}`);
    assert.ok(report.failures.every((f) => f.status === 403), JSON.stringify(report.failures.slice(0, 3)));
    assert.ok(first403.t - changedAt < 1000, `applied ${first403.t - changedAt} ms after the change`);
    assert.ok(report.ok > 0, 'requests were allowed before the change');
    const late = Object.values(report.byServer).flat().filter(([sent]) => sent > changedAt + 1000);
    assert.deepEqual(late, [], 'nothing allowed later than 1 s after the change');
    // Back to the first policy for the tests that follow.
    writeFileSync(join(dir, 'mesh.yaml'), meshYaml(true));
    const deadline = Date.now() + 5000;
    while (status(await http(a, `http://${b.ip4}:8080/x`)) !== 200 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.equal(status(await http(a, `http://${b.ip4}:8080/x`)), 200);
  });

  test('a policy change closes the open TCP connections it no longer allows, within 1 s', async () => {
    // A client in pod u that keeps one connection open and reports what happens to it (epoch ms).
    const script = `const s = require('node:net').connect(9000, '${b.ip4}', () => s.write('ping\\n'));
      s.on('data', (d) => process.stdout.write(JSON.stringify({ event: 'data', text: String(d).trim(), t: Date.now() }) + '\\n'));
      s.on('error', () => {});
      s.on('close', () => process.stdout.write(JSON.stringify({ event: 'close', t: Date.now() }) + '\\n'));`;
    const client = new PodProcess(mesh.lab.spawn(u, process.execPath, ['-e', script], APP));
    await client.waitFor((e) => e.event === 'data');
    writeFileSync(join(dir, 'mesh.yaml'), meshYaml(true, a));
    const changedAt = Date.now();
    const closed = (await client.waitFor((e) => e.event === 'close', 5000)) as unknown as { t: number };
    assert.ok(closed.t - changedAt < 1000, `closed ${closed.t - changedAt} ms after the change`);
    assert.ok(promSample(await metrics(b), 'inbound_tcp_authz_terminate_total', { srv_name: 'echo', tls: 'no_identity' }) >= 1);
    writeFileSync(join(dir, 'mesh.yaml'), meshYaml(true));
    const deadline = Date.now() + 5000;
    let echoed = '';
    while (echoed !== 'hello' && Date.now() < deadline) echoed = await mesh.nc(u, b.ip4, 9000).catch(() => '');
    assert.equal(echoed, 'hello', 'pod u is allowed again');
  });

  test('the policy API down: the last policy holds; a proxy started meanwhile follows its default policy', async () => {
    pol.proc.stop();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(status(await http(a, `http://${b.ip4}:8080/x`)), 200, 'identity a: still allowed');
    assert.equal(status(await http(u, `http://${b.ip4}:8080/x`)), 403, 'plaintext: still denied');
    // Restart b's proxy while the policy API is down: mesh.yaml says identity a only on 8080,
    // but the proxy has only its default (all-unauthenticated) to go by.
    proxyB.stop();
    await new Promise((r) => setTimeout(r, 300));
    proxyB = await mesh.proxy(b, bPolicyEnv());
    const plain = await http(u, `http://${b.ip4}:8080/x`);
    assert.equal(status(plain), 200, `default policy: ${plain.stdout}`);
    const m = await metrics(b);
    assert.ok(promSample(m, 'inbound_http_authz_allow_total', { srv_kind: 'default', srv_name: 'all-unauthenticated', tls: 'no_identity' }) >= 1, m);
    // The policy API returns: the proxy follows it again.
    await pol.restart();
    const deadline = Date.now() + 15_000;
    while (status(await http(u, `http://${b.ip4}:8080/x`)) !== 403 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    assert.equal(status(await http(u, `http://${b.ip4}:8080/x`)), 403, 'the policy from the API applies again');
  });
});
