// Workload identity end to end: proxies in pods, each control plane
// (`bpfmesh control-plane`) in a pod of its own, reached over the lab
// network with Linkerd's TLS. Short-lived leaves are renewed under traffic
// without a failed request, and peers whose certificate is not from our
// trust anchors, or has expired, are refused with a 502.
//   a  client; leaves of 20 s          } control plane cp (shared issuer)
//   b  server; leaves of 20 s          }
//   c  server whose control plane cpc has its own, unrelated issuer (untrusted by a)
//   d  server with a 3 s leaf whose control plane cpd is then stopped: it keeps
//      presenting that leaf after it expires (renewal fails)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, identityName as id, MeshLab, meshProxyEnv, PodProcess, promSample, type ControlPlanePod } from '../helpers/mesh.js';
import type { LabPod } from '../../src/lab/lab.js';

const skip = kernelSkipReason();
const SUBNET = 92;
const LEAF_S = 20;

describe('mesh identity: renewal under traffic, untrusted and expired peers', { skip, timeout: 180_000 }, () => {
  let mesh: MeshLab;
  let a: LabPod;
  let b: LabPod;
  let c: LabPod;
  let d: LabPod;
  let dir: string;
  const proxies: PodProcess[] = [];

  before(async () => {
    mesh = new MeshLab(SUBNET);
    [a, b, c, d] = [mesh.pod('a'), mesh.pod('b'), mesh.pod('c'), mesh.pod('d')];
    dir = mkdtempSync(join(tmpdir(), 'bpfmesh-ident-'));
    chmodSync(dir, 0o755);
    const services = [b, c, d].flatMap((p, i) => [`  - name: "${p.ip4}:8080"`, `    endpoints: [{ addr: "${p.ip4}:8080", identity: ${id('bcd'[i]!)} }]`]);
    const config = (lifetime: string): string => ['trustDomain: cluster.local', `identity: { leafLifetime: ${lifetime} }`, 'services:', ...services, ''].join('\n');
    writeFileSync(join(dir, 'mesh.yaml'), config(`${LEAF_S}s`));
    writeFileSync(join(dir, 'short.yaml'), config('3s'));
    writeFileSync(join(dir, 'token'), 'any-token');
    chmodSync(join(dir, 'token'), 0o644);
    const shared = join(dir, 'state');
    const other = join(dir, 'other-state');
    const cps = new Map<LabPod, ControlPlanePod>();
    // cp generates the shared issuer; cpc generates an unrelated one; cpd shares cp's issuer with 3 s leaves.
    const cp = await mesh.controlPlanePod('cp', join(dir, 'mesh.yaml'), shared);
    cps.set(a, cp);
    cps.set(b, cp);
    cps.set(c, await mesh.controlPlanePod('cpc', join(dir, 'mesh.yaml'), other));
    cps.set(d, await mesh.controlPlanePod('cpd', join(dir, 'short.yaml'), shared));
    const anchors = readFileSync(join(shared, 'trust-anchors.pem'), 'utf8');
    const otherAnchors = readFileSync(join(other, 'trust-anchors.pem'), 'utf8');
    assert.notEqual(anchors, otherAnchors);
    // d first: its leaf has expired by the time the other proxies are up.
    for (const [pod, sa] of [[d, 'd'], [c, 'c'], [b, 'b'], [a, 'a']] as const) {
      await mesh.init(pod);
      const env = meshProxyEnv({ identity: id(sa), tokenFile: join(dir, 'token'), trustAnchorsPem: pod === c ? otherAnchors : anchors, controlPlane: cps.get(pod)! });
      proxies.push(await mesh.proxy(pod, env));
      if (pod !== a) await mesh.appServer(pod);
      // Without its identity service d cannot renew; its leaf runs out in 3 s.
      if (pod === d) cps.get(d)!.proc.child.kill('SIGTERM');
    }
  });

  after(() => {
    for (const p of proxies) if (p.child.exitCode !== null) process.stderr.write(`proxy exited ${p.child.exitCode}: ${p.stderr}\n`);
    mesh?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const metrics = (pod: LabPod): Promise<string> => mesh.curl(pod, 'http://127.0.0.1:4191/metrics');
  const expiry = async (pod: LabPod): Promise<number> => promSample(await metrics(pod), 'bpfmesh_identity_cert_expiry_timestamp_seconds') * 1000;
  const refreshes = async (pod: LabPod, result: string): Promise<number> => promSample(await metrics(pod), 'bpfmesh_identity_refreshes_total', { result });
  /** a's outbound mTLS connections opened so far. */
  const mtlsOpened = async (): Promise<number> => promSample(await metrics(a), 'tcp_open_total', { direction: 'outbound', tls: 'true' });

  test(`${LEAF_S} s leaves are renewed under continuous traffic; no request fails, new handshakes use the new leaves`, async (t) => {
    const firstExpiry = Math.max(await expiry(a), await expiry(b));
    assert.ok(firstExpiry > Date.now(), 'a and b hold valid leaves');
    const load = await mesh.load(a, `http://${b.ip4}:8080/`, 4, 200_000, 60);
    // Traffic until both first leaves have expired and both proxies renewed (70% of 20 s = 14 s in).
    const deadline = Date.now() + 45_000;
    while (Date.now() < deadline) {
      if (Date.now() > firstExpiry + 1000 && (await refreshes(a, 'ok')) >= 2 && (await refreshes(b, 'ok')) >= 2) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    const [expA, expB] = [await expiry(a), await expiry(b)];
    assert.ok(Date.now() > firstExpiry, 'the first leaves have expired');
    assert.ok(expA > firstExpiry && expB > firstExpiry, `renewed leaves expire later (${new Date(expA).toISOString()}, ${new Date(expB).toISOString()})`);
    // More connections than the pool holds, while the first load still runs: new mTLS
    // handshakes, which only the renewed leaves can pass (both ends verify each other).
    const opened = await mtlsOpened();
    const burst = await (await mesh.load(a, `http://${b.ip4}:8080/whoami`, 24, 3000, 2)).done;
    load.proc.child.kill('SIGTERM');
    const r = await load.done;
    t.diagnostic(
      `${r.ok} answers over ${((Date.now() - load.started) / 1000).toFixed(1)} s; refreshes a ${await refreshes(a, 'ok')}, b ${await refreshes(b, 'ok')}; ` +
        `burst after expiry: ${burst.ok} answers, ${(await mtlsOpened()) - opened} new mTLS connections`,
    );
    assert.equal(r.failed, 0, `failed requests: ${JSON.stringify(r.failures)}`);
    assert.ok(r.ok >= 1000, `the load ran (${r.ok})`);
    assert.equal(await refreshes(a, 'error'), 0);
    assert.equal(await refreshes(b, 'error'), 0);
    assert.equal(burst.failed, 0, `failed requests: ${JSON.stringify(burst.failures)}`);
    assert.deepEqual(Object.keys(burst.byServer), [`client-id:${id('a')}`], "b verified a's renewed client certificate on every request");
    assert.ok((await mtlsOpened()) > opened, 'the burst opened new mTLS connections');
  });

  /** curl from a (as the app); the status, the l5d-proxy-error header and a's 502 count before and after. */
  async function refused(pod: LabPod): Promise<{ status: string; error: string | undefined; counted: number }> {
    const before502 = promSample(await metrics(a), 'response_total', { direction: 'outbound', status_code: '502' });
    const r = await mesh.lab.exec(a, 'curl', ['-sS', '-i', '--max-time', '5', `http://${pod.ip4}:8080/`], APP);
    const after502 = promSample(await metrics(a), 'response_total', { direction: 'outbound', status_code: '502' });
    return {
      status: /^HTTP\/1\.1 (\d+)/.exec(r.stdout)?.[1] ?? `(none: ${r.stderr})`,
      error: /^l5d-proxy-error: (.*)$/im.exec(r.stdout)?.[1]?.trim(),
      counted: after502 - before502,
    };
  }

  test('a peer whose certificate is not from our trust anchors is refused: 502, l5d-proxy-error, counted', async (t) => {
    const r = await refused(c);
    t.diagnostic(`${r.status} l5d-proxy-error: ${r.error}`);
    assert.equal(r.status, '502');
    assert.ok(r.error !== undefined && r.error !== '', 'l5d-proxy-error is set');
    assert.match(r.error ?? '', /UNABLE_TO_GET_ISSUER_CERT|unable to get local issuer/, 'OpenSSL\'s reason');
    assert.equal(r.counted, 1, 'response_total{direction="outbound",status_code="502"} counted it');
    // c itself is healthy: its own control plane's anchors verify it.
    const ok = await mesh.lab.exec(c, 'openssl', ['s_client', '-connect', `${c.ip4}:8080`, '-servername', id('c'), '-CAfile', join(dir, 'other-state', 'trust-anchors.pem')], { uid: 2102, gid: 2102 }, 10_000, '');
    assert.match(ok.stdout, /Verify return code: 0 \(ok\)/);
  });

  test('a peer presenting an expired certificate is refused: 502, l5d-proxy-error, counted', async (t) => {
    const exp = await expiry(d);
    assert.ok(exp > 0 && exp < Date.now(), `d's leaf expired (${new Date(exp).toISOString()})`);
    assert.ok((await refreshes(d, 'error')) >= 1, 'd tried to renew and could not');
    const r = await refused(d);
    t.diagnostic(`${r.status} l5d-proxy-error: ${r.error}`);
    assert.equal(r.status, '502');
    assert.ok(r.error !== undefined && r.error !== '', 'l5d-proxy-error is set');
    assert.match(r.error ?? '', /CERT_HAS_EXPIRED/, 'OpenSSL\'s reason');
    assert.equal(r.counted, 1);
    // The same leaf is what d presents: expired, as OpenSSL sees it too.
    const s = await mesh.lab.exec(a, 'openssl', ['s_client', '-connect', `${d.ip4}:8080`, '-servername', id('d'), '-CAfile', join(dir, 'state', 'trust-anchors.pem')], { uid: 2102, gid: 2102 }, 10_000, '');
    assert.match(s.stdout, /Verify return code: 10 \(certificate has expired\)/);
  });
});
