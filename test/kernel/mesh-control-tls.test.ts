// The control plane off loopback, as in a cluster: `bpfmesh control-plane`
// in a pod of its own; proxies in other pods reach it over the lab network
// with deploy/base/sidecar.yaml's environment itself (read from the manifest:
// …_SVC_ADDR off loopback, …_SVC_NAME, the injector's other settings).
// Identity over TLS, Destination over mTLS with the workload certificate,
// channels rebuilt on rotation under traffic; control planes from another
// CA, under another name or in plaintext are refused with coded errors; and
// the loopback case (plaintext) still works.
//   cp   the control plane (Destination mTLS :8086, Identity TLS :8080), 15 s leaves
//   a    client proxy; b, c server proxies + apps
//   cpx  a control plane with an issuer of its own (another CA)
//   cpn  tampered: cp's CA, server certificates for other names
//   cpp  tampered: plaintext off loopback
//   x, n, p, q  proxies pointed at those; lo  a proxy with a control plane on its loopback
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT } from '../../src/config/paths.js';
import type { LabPod } from '../../src/lab/lab.js';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, CLI, CONTROL_PLANE_NAMES, identityName as id, MeshLab, meshProxyEnv, PodProcess, PROXY, promSample, waitLog, type ControlPlaneAddrs, type ControlPlanePod } from '../helpers/mesh.js';

const skip = kernelSkipReason();
const SUBNET = 93;
const SVC = `10.${SUBNET}.0.200:8080`; // only the control plane knows it
const LEAF_S = 15;
const TAMPERED = join(REPO_ROOT, 'dist', 'test', 'fixtures', 'tampered-control-plane.js');

interface EnvVar {
  name: string;
  value?: string;
}

/**
 * The linkerd-proxy environment of deploy/base/sidecar.yaml, as the kubelet would
 * give it to a pod named `pod` (service account `pod`, namespace default),
 * with only what a lab has no cluster for replaced: the control plane's
 * DNS names by its pod's address (ports and …_SVC_NAMEs kept), the
 * trust-anchor ConfigMap by the anchors, the projected token by a file, the
 * identity dir by nothing (the proxy user cannot create /var/run/linkerd).
 */
function sidecarEnv(pod: LabPod, cpIp: string, anchors: string, tokenFile: string): NodeJS.ProcessEnv {
  type Doc = { spec?: { template?: { spec?: { containers?: Array<{ name: string; env?: EnvVar[] }> } } } };
  const docs = parseAllDocuments(readFileSync(join(REPO_ROOT, 'deploy', 'base', 'sidecar.yaml'), 'utf8')).map((d) => d.toJS() as Doc);
  const containers = docs.flatMap((d) => d.spec?.template?.spec?.containers ?? []);
  const proxy = containers.find((c) => c.name === 'linkerd-proxy');
  assert.ok(proxy?.env !== undefined, 'deploy/base/sidecar.yaml has a linkerd-proxy container with an environment');
  const downward: Record<string, string> = { _pod_name: pod.name, _pod_ns: 'default', _pod_nodeName: 'lab', _pod_sa: pod.name };
  const env: NodeJS.ProcessEnv = {};
  for (const v of proxy.env) {
    if (v.name.startsWith('_pod_') || v.value === undefined) continue;
    env[v.name] = v.value.replace(/\$\((\w+)\)/g, (_m, k: string) => downward[k] ?? '');
  }
  for (const k of ['LINKERD2_PROXY_DESTINATION_SVC_ADDR', 'LINKERD2_PROXY_IDENTITY_SVC_ADDR', 'LINKERD2_PROXY_POLICY_SVC_ADDR']) {
    const v = env[k];
    assert.ok(v !== undefined && /\.svc\.cluster\.local\.:\d+$/.test(v), `${k} is a cluster address in deploy/base/sidecar.yaml (${v})`);
    env[k] = v.replace(/^.*:(\d+)$/, `${cpIp}:$1`);
  }
  delete env['LINKERD2_PROXY_IDENTITY_DIR'];
  // The manifest's 100 ms inbound connect timeout is missed by a local app on a machine this loaded
  // (a 504 seen once at load average 20): not what this test is about.
  assert.equal(env['LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT'], '100ms');
  env['LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT'] = '2s';
  return { ...env, LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS: anchors, LINKERD2_PROXY_IDENTITY_TOKEN_FILE: tokenFile, LINKERD2_PROXY_LOG: 'warn' };
}

describe('control plane off loopback: TLS, mTLS, rotation, refusals', { skip, timeout: 240_000 }, () => {
  let mesh: MeshLab;
  let dir: string;
  let cp: ControlPlanePod;
  let a: LabPod;
  let b: LabPod;
  let c: LabPod;
  let anchors: string;
  const token = (): string => join(dir, 'token');

  function writeConfig(endpoints: LabPod[]): void {
    const text = [
      'trustDomain: cluster.local',
      `identity: { leafLifetime: ${LEAF_S}s }`,
      'services:',
      `  - name: "${SVC}"`,
      '    endpoints:',
      ...endpoints.map((p) => `      - { addr: "${p.ip4}:8080", identity: ${id(p.name)} }`),
      '',
    ].join('\n');
    writeFileSync(join(dir, 'mesh.yaml.tmp'), text);
    renameSync(join(dir, 'mesh.yaml.tmp'), join(dir, 'mesh.yaml'));
  }

  /** A tampered control plane in a pod of its own (same mesh.yaml); its addresses as the proxies name them. */
  async function tampered(name: string, mode: 'plaintext' | 'wrong-name'): Promise<ControlPlaneAddrs> {
    const pod = mesh.pod(name);
    const p = new PodProcess(mesh.lab.spawn(pod, process.execPath, [TAMPERED, mode, join(dir, 'mesh.yaml'), join(dir, 'state'), `${pod.ip4}:8086`, `${pod.ip4}:8080`]));
    await p.waitFor((e) => e.event === 'ready', 20_000);
    return { destination: `${pod.ip4}:8086`, identity: `${pod.ip4}:8080`, policy: `${pod.ip4}:8090`, names: { ...CONTROL_PLANE_NAMES } };
  }

  /** `bpfmesh proxy` in a new pod, JSON logs, not waiting for /ready. */
  function proxyIn(pod: LabPod, env: NodeJS.ProcessEnv): PodProcess {
    return new PodProcess(
      mesh.lab.spawn(pod, process.execPath, [CLI, 'proxy'], PROXY, { env: { ...process.env, LINKERD2_PROXY_LOG: 'warn', LINKERD2_PROXY_LOG_FORMAT: 'json', ...env } }),
    );
  }

  const metrics = (pod: LabPod): Promise<string> => mesh.curl(pod, 'http://127.0.0.1:4191/metrics');
  const ready = async (pod: LabPod): Promise<string> => (await mesh.lab.exec(pod, 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:4191/ready'], APP)).stdout;

  before(async () => {
    mesh = new MeshLab(SUBNET);
    dir = mkdtempSync(join(tmpdir(), 'bpfmesh-cptls-'));
    chmodSync(dir, 0o755);
    [a, b, c] = [mesh.pod('a'), mesh.pod('b'), mesh.pod('c')];
    writeConfig([b]);
    writeFileSync(token(), 'any-token', { mode: 0o644 });
    cp = await mesh.controlPlanePod('cp', join(dir, 'mesh.yaml'), join(dir, 'state'));
    anchors = readFileSync(join(dir, 'state', 'trust-anchors.pem'), 'utf8');
    // Done when deploy/base/sidecar.yaml's environment, pointed at a control plane off loopback, gives a working mesh.
    for (const pod of [a, b, c]) {
      await mesh.init(pod);
      const env = sidecarEnv(pod, cp.pod.ip4, anchors, token());
      assert.equal(env['LINKERD2_PROXY_IDENTITY_SVC_NAME'], cp.names.identity);
      assert.equal(env['LINKERD2_PROXY_DESTINATION_SVC_NAME'], cp.names.destination);
      assert.equal(env['LINKERD2_PROXY_IDENTITY_LOCAL_NAME'], id(pod.name));
      await mesh.proxy(pod, env);
    }
    await mesh.appServer(b);
    await mesh.appServer(c);
  });

  after(() => {
    mesh?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('certification over TLS, discovery over mTLS, mTLS between the proxies', async () => {
    // Through discovery (the service address is known only to the control plane) and mTLS to b.
    assert.equal(await mesh.curl(a, `http://${SVC}/whoami`), `client-id ${id('a')}`);
    const m = await metrics(a);
    assert.ok(promSample(m, 'bpfmesh_identity_refreshes_total', { result: 'ok' }) >= 1, 'certified over TLS');
    assert.equal(promSample(m, 'bpfmesh_control_channel_builds_total', { service: 'identity' }), 1);
    assert.ok(promSample(m, 'bpfmesh_control_channel_builds_total', { service: 'destination' }) >= 1, 'the destination channel was built with the certificate');
    assert.ok(promSample(m, 'request_total', { direction: 'outbound', tls: 'true', server_id: id('b') }) >= 1);
    // b's inbound port got its policy from the policy API the manifest names (cp's policy port, mTLS, the destination identity).
    const mb = await metrics(b);
    assert.ok(promSample(mb, 'bpfmesh_control_channel_builds_total', { service: 'policy' }) >= 1, 'the policy channel was built with the certificate');
    assert.ok(promSample(mb, 'bpfmesh_policy_updates_total', { result: 'applied' }) >= 1, 'a policy arrived over mTLS');
    assert.equal(promSample(mb, 'bpfmesh_control_tls_failures_total', { service: 'policy' }), 0);
    // What the control plane presents, as openssl sees it from a pod (as the proxy uid: not intercepted).
    const s = await mesh.lab.exec(a, 'sh', ['-c', `openssl s_client -connect ${cp.identity} -servername ${cp.names.identity} -CAfile ${join(dir, 'state', 'trust-anchors.pem')} </dev/null 2>&1; echo; openssl s_client -connect ${cp.identity} -servername ${cp.names.identity} </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName`], PROXY, 15_000);
    assert.match(s.stdout, /TLSv1\.3/);
    assert.match(s.stdout, /Verify return code: 0 \(ok\)/);
    assert.match(s.stdout, new RegExp(`DNS:${cp.names.identity.replace(/\./g, '\\.')}`));
    // Destination wants a client certificate: without one the server ends the handshake.
    const d = await mesh.lab.exec(a, 'sh', ['-c', `(sleep 1; printf 'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n') | openssl s_client -connect ${cp.destination} -servername ${cp.names.destination} -CAfile ${join(dir, 'state', 'trust-anchors.pem')} -alpn h2 2>&1`], PROXY, 15_000);
    assert.match(d.stdout, /certificate required|alert/i, d.stdout);
  });

  test(`${LEAF_S} s certificates rotate under traffic: channels rebuilt, no failed request, discovery state kept and updated`, async (t) => {
    const builds = async (): Promise<number> => promSample(await metrics(a), 'bpfmesh_control_channel_builds_total', { service: 'destination' });
    const reconnects = async (): Promise<number> => promSample(await metrics(a), 'bpfmesh_destination_reconnects_total');
    const builds0 = await builds();
    const reconnects0 = await reconnects();
    await mesh.curl(a, `http://${SVC}/`); // the lookup is open before the load
    const load = await mesh.load(a, `http://${SVC}/`, 4, 200_000, 60);
    // Two rotations of a's certificate (renewed at 70% of 15 s, at least 10 s apart).
    const deadline = Date.now() + 40_000;
    while (Date.now() < deadline && (await builds()) < builds0 + 2) await new Promise((r) => setTimeout(r, 500));
    const rebuilt = (await builds()) - builds0;
    // The rebuilt channel carries updates: move the service to c.
    writeConfig([c]);
    const moved = Date.now();
    let fromC = false;
    for (let i = 0; i < 100 && !fromC; i++) {
      fromC = (await mesh.curl(a, `http://${SVC}/`)).includes(`from ${c.ip4}:8080`);
      if (!fromC) await new Promise((r) => setTimeout(r, 100));
    }
    load.proc.child.kill('SIGTERM');
    const r = await load.done;
    const reconnected = (await reconnects()) - reconnects0;
    t.diagnostic(
      `${r.ok} answers, ${r.failed} failed ${JSON.stringify(r.failures.slice(0, 3))}; destination channel rebuilt ${rebuilt} times; ` +
        `streams that ended on their own: ${reconnected}; moved to c in ${Date.now() - moved} ms`,
    );
    assert.ok(rebuilt >= 2, `the destination channel was rebuilt on rotation (${rebuilt})`);
    assert.equal(r.failed, 0, `failed requests: ${JSON.stringify(r.failures.slice(0, 5))}`);
    assert.ok(r.ok >= 200, `the load ran (${r.ok})`);
    assert.ok(Object.keys(r.byServer).includes(`${b.ip4}:8080`), 'b served through the rotations');
    assert.equal(reconnected, 0, 'no stream ended on its own: moved, not dropped');
    assert.ok(fromC, 'an update after the rotations reached the proxy');
    writeConfig([b]);
  });

  /** Waits for a proxy's "certify failed" record; checks it is not ready. */
  async function refused(pod: LabPod, p: PodProcess): Promise<Record<string, unknown>> {
    const rec = await waitLog(p, 'certify failed', 20_000);
    assert.equal(await ready(pod), '503', 'not ready without a certificate');
    return rec;
  }

  test('a control plane from another CA is refused: BPFMESH_E_CONTROL_TLS_VERIFY, and the proxy says what to do', async () => {
    const other = await mesh.controlPlanePod('cpx', join(dir, 'mesh.yaml'), join(dir, 'other-state'));
    const x = mesh.pod('x');
    const rec = await refused(x, proxyIn(x, meshProxyEnv({ identity: id('x'), tokenFile: token(), trustAnchorsPem: anchors, controlPlane: other })));
    assert.equal(rec['code'], 'BPFMESH_E_CONTROL_TLS_VERIFY', JSON.stringify(rec));
    assert.match(String(rec['err']), /does not verify against LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS/);
    assert.match(String(rec['err']), /give the proxy the trust anchors/);
  });

  test('a control plane whose certificate is for another name is refused: BPFMESH_E_CONTROL_IDENTITY_MISMATCH', async () => {
    const wrong = await tampered('cpn', 'wrong-name');
    const n = mesh.pod('n');
    const rec = await refused(n, proxyIn(n, meshProxyEnv({ identity: id('n'), tokenFile: token(), trustAnchorsPem: anchors, controlPlane: wrong })));
    assert.equal(rec['code'], 'BPFMESH_E_CONTROL_IDENTITY_MISMATCH', JSON.stringify(rec));
    assert.match(String(rec['err']), /linkerd-identity\.other\.serviceaccount/);
    assert.match(String(rec['err']), /set LINKERD2_PROXY_IDENTITY_SVC_NAME/);
  });

  test('TLS to a control plane that is plaintext off loopback is refused: BPFMESH_E_CONTROL_TLS_HANDSHAKE, Identity and Destination', async () => {
    const plain = await tampered('cpp', 'plaintext');
    const p = mesh.pod('p');
    const rec = await refused(p, proxyIn(p, meshProxyEnv({ identity: id('p'), tokenFile: token(), trustAnchorsPem: anchors, controlPlane: plain })));
    assert.equal(rec['code'], 'BPFMESH_E_CONTROL_TLS_HANDSHAKE', JSON.stringify(rec));
    assert.match(String(rec['err']), /plaintext, which a proxy accepts on loopback only/);
    // Certified by the real control plane, discovery pointed at the plaintext one: no stream, the proxy says why.
    const q = mesh.pod('q');
    await mesh.init(q);
    const env = { ...meshProxyEnv({ identity: id('q'), tokenFile: token(), trustAnchorsPem: anchors, controlPlane: cp }), LINKERD2_PROXY_DESTINATION_SVC_ADDR: plain.destination };
    const proxy = proxyIn(q, env);
    for (let i = 0; i < 200 && (await ready(q)) !== '200'; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(await ready(q), '200');
    const r = await mesh.lab.exec(q, 'curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', `http://${SVC}/`], APP);
    assert.notEqual(r.stdout, '200', 'the service is unknown without discovery');
    const dst = await waitLog(proxy, 'TLS to the destination service failed', 20_000);
    assert.equal(dst['code'], 'BPFMESH_E_CONTROL_TLS_HANDSHAKE', JSON.stringify(dst));
    assert.equal(promSample(await metrics(q), 'bpfmesh_control_tls_failures_total', { service: 'destination', code: 'BPFMESH_E_CONTROL_TLS_HANDSHAKE' }) >= 1, true);
  });

  test('loopback: a control plane on the pod\'s own loopback is reached in plaintext', async () => {
    const lo = mesh.pod('lo');
    await mesh.init(lo);
    await mesh.controlPlane(lo, join(dir, 'mesh.yaml'), join(dir, 'state'), ['--listen', '127.0.0.1:8086']);
    await mesh.proxy(lo, meshProxyEnv({ identity: id('lo'), tokenFile: token(), trustAnchorsPem: anchors, controlPlane: '127.0.0.1:8086' }));
    assert.equal(await mesh.curl(lo, `http://${SVC}/whoami`), `client-id ${id('lo')}`);
    const m = await metrics(lo);
    assert.equal(promSample(m, 'bpfmesh_control_tls_failures_total'), 0);
    assert.ok(promSample(m, 'bpfmesh_identity_refreshes_total', { result: 'ok' }) >= 1);
  });
});
