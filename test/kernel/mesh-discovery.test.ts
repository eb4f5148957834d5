// Discovery under traffic, end to end: a client pod and two server pods,
// each with `bpfmesh proxy` (mTLS between them), and one `bpfmesh
// control-plane` in a pod of its own, reached over the lab network with
// Linkerd's TLS (certificates over TLS, discovery over mTLS). The client calls a
// service address that only the control plane knows; mesh.yaml is edited
// under a bounded keep-alive load and the test checks where every answer
// came from, that none failed, and how long the switch took after the
// control plane logged the reload.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSkipReason } from '../helpers/root.js';
import { identityName as id, MeshLab, meshProxyEnv, PodProcess, promSample, waitLog, logRecords, type ControlPlanePod, type LoadResult } from '../helpers/mesh.js';
import type { LabPod } from '../../src/lab/lab.js';

const skip = kernelSkipReason();
const SUBNET = 91;
// Service addresses: nothing listens there; the client's proxy asks the control plane.
const WEB = `10.${SUBNET}.0.200:8080`;
const WEIGHTED = `10.${SUBNET}.0.201:8080`;
const SLOWMIX = `10.${SUBNET}.0.202:8080`;
const SLOW_MS = 100;
// These need the proxy to feed its P2C balancer (pending work and latency per
// request, and a neutral estimate for an endpoint that joins): without that
// every estimate is the 30 ms default decaying from when the endpoint joined,
// a slow endpoint gets half the traffic, and an endpoint added next to an
// older one of equal weight gets none.

interface Ep {
  addr: string;
  identity: string;
  weight?: number;
}

/** Requests (by send time) that `server` answered in [from, to). */
const sentIn = (r: LoadResult, server: string, from = 0, to = Infinity): number => (r.byServer[server] ?? []).filter(([s]) => s >= from && s < to).length;
const count = (r: LoadResult, server: string): number => r.byServer[server]?.length ?? 0;
const firstAnswer = (r: LoadResult, server: string): number => Math.min(...(r.byServer[server] ?? []).map(([, d]) => d));
const lastSent = (r: LoadResult, server: string): number => Math.max(...(r.byServer[server] ?? []).map(([s]) => s));

describe('mesh discovery: endpoint changes under traffic, weights, latency, control-plane loss', { skip, timeout: 180_000 }, () => {
  let mesh: MeshLab;
  let a: LabPod;
  let b: LabPod;
  let c: LabPod;
  let dir: string;
  let configPath: string;
  let cp: ControlPlanePod;
  let cpA: PodProcess;
  const proxies: PodProcess[] = [];
  /** Reloads the client's control plane has logged so far. */
  let reloads = 0;

  /** What mesh.yaml holds; the control plane logs a reload only when that changes. */
  let written = '';

  function writeConfig(services: Record<string, Ep[]>): void {
    const lines = ['trustDomain: cluster.local', 'services:'];
    for (const [name, eps] of Object.entries(services)) {
      lines.push(`  - name: "${name}"`, '    endpoints:');
      for (const e of eps) lines.push(`      - { addr: "${e.addr}", weight: ${e.weight ?? 10000}, identity: ${e.identity} }`);
    }
    // Write + rename, as editors do: the control plane must notice a replaced file.
    written = lines.join('\n') + '\n';
    writeFileSync(`${configPath}.tmp`, written);
    renameSync(`${configPath}.tmp`, configPath);
  }

  /** Writes the configuration and returns when (epoch ms) the client's control plane logged the reload. */
  async function reconfigure(services: Record<string, Ep[]>): Promise<number> {
    const before = written;
    writeConfig(services);
    if (written === before) return Date.now(); // nothing to reload
    const rec = await waitLog(cpA, 'configuration reloaded', 10_000, ++reloads);
    return rec['time'] as number;
  }

  const bEp = (): Ep => ({ addr: `${b.ip4}:8080`, identity: id('b') });
  const cEp = (): Ep => ({ addr: `${c.ip4}:8080`, identity: id('c') });

  before(async () => {
    mesh = new MeshLab(SUBNET);
    a = mesh.pod('a');
    b = mesh.pod('b');
    c = mesh.pod('c');
    dir = mkdtempSync(join(tmpdir(), 'bpfmesh-disc-'));
    chmodSync(dir, 0o755);
    configPath = join(dir, 'mesh.yaml');
    writeConfig({ [WEB]: [bEp()] });
    writeFileSync(join(dir, 'token'), 'any-token');
    chmodSync(join(dir, 'token'), 0o644);
    cp = await mesh.controlPlanePod('cp', configPath, join(dir, 'state'));
    cpA = cp.proc;
    assert.ok(existsSync(join(dir, 'state', 'trust-anchors.pem')));
    const anchors = readFileSync(join(dir, 'state', 'trust-anchors.pem'), 'utf8');
    for (const [pod, sa] of [[a, 'a'], [b, 'b'], [c, 'c']] as const) {
      await mesh.init(pod);
      proxies.push(await mesh.proxy(pod, meshProxyEnv({ identity: id(sa), tokenFile: join(dir, 'token'), trustAnchorsPem: anchors, controlPlane: cp })));
    }
    await mesh.appServer(b);
    await mesh.appServer(c);
    // The slow endpoint: its own port on pod c, answering like app-server's /slow/MS but for every path.
    const slow = `require('http').createServer((q, s) => setTimeout(() => s.end('hello ' + q.url + ' from ${c.ip4}:8090 1.1\\n'), ${SLOW_MS})).listen(8090, '0.0.0.0', () => console.log('ready'))`;
    await new PodProcess(mesh.lab.spawn(c, process.execPath, ['-e', slow], { uid: 1000, gid: 1000 })).waitFor((e) => e.event === 'ready');
  });

  after(() => {
    for (const p of proxies) if (p.child.exitCode !== null) process.stderr.write(`proxy exited ${p.child.exitCode}: ${p.stderr}\n`);
    mesh?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** One request through the mesh, so the client proxy holds the lookup before the load starts. */
  const warm = async (svc: string): Promise<string> => mesh.curl(a, `http://${svc}/`);

  // Where the answers of the add/remove run came from; the add's timing is checked in its own test below.
  let churn: { r: LoadResult; added: number; removed: number } | undefined;

  test('endpoints added then removed under traffic: none fails, the removal takes effect within 1 s of the reload', async (t) => {
    assert.match(await warm(WEB), new RegExp(`from ${b.ip4}:8080`));
    // 16 in flight: P2C's pending term then makes a new endpoint (30 ms default RTT) worth trying at once.
    // Bounded by time (6 s), not by count: a fast machine must not finish the load before the removal is checked.
    const load = await mesh.load(a, `http://${WEB}/`, 16, 200_000, 6);
    await new Promise((r) => setTimeout(r, 1500));
    // The reload's log time comes after the control plane pushed the change, so a
    // request can reach c a moment before it: "before" means before the file changed.
    const addWrittenAt = Date.now();
    const added = await reconfigure({ [WEB]: [bEp(), cEp()] });
    await new Promise((r) => setTimeout(r, 2000));
    const removed = await reconfigure({ [WEB]: [cEp()] });
    const r = await load.done;
    churn = { r, added, removed };
    const B = `${b.ip4}:8080`;
    const C = `${c.ip4}:8080`;
    const removeMs = lastSent(r, B) - removed;
    t.diagnostic(
      `${r.ok} answers (b ${count(r, B)}, c ${count(r, C)}); while both were listed b ${sentIn(r, B, added, removed)}, c ${sentIn(r, C, added, removed)}; ` +
        `c's first answer ${firstAnswer(r, C) - added} ms after the add; b's last request sent ${removeMs} ms after the removal`,
    );
    assert.equal(r.failed, 0, `failed requests: ${JSON.stringify(r.failures)}`);
    assert.deepEqual(Object.keys(r.byServer).sort(), [B, C].sort(), 'only the configured endpoints answered');
    assert.ok(r.ok >= 300, `the load ran (${r.ok} answers)`);
    assert.equal(sentIn(r, C, 0, addWrittenAt), 0, 'c was not used before it was added');
    assert.ok(removeMs < 1000, `the removed endpoint got requests until ${removeMs} ms after the reload`);
    assert.ok(lastSent(r, C) > removed + 1000, `the load ran until ${lastSent(r, C) - removed} ms after the removal (it must outlast it by 1 s)`);
    assert.ok(sentIn(r, C, removed + 1000) > 0, 'c served after the removal');
  });

  test('an endpoint added under traffic answers within 1 s of the reload', () => {
    assert.ok(churn !== undefined, 'the add/remove run did not complete');
    const C = `${c.ip4}:8080`;
    const addMs = firstAnswer(churn.r, C) - churn.added;
    assert.ok(addMs < 1000, `the added endpoint answered ${addMs} ms after the reload`);
    assert.ok(sentIn(churn.r, `${b.ip4}:8080`, churn.added, churn.removed) > 0 && sentIn(churn.r, C, churn.added, churn.removed) > 0, 'both served while both were listed');
  });

  test('weights: the heavier endpoint takes the clear majority, whichever it is', async (t) => {
    // P2C divides each endpoint's cost by its share of weight, so a 9:1 weight
    // is a 9x cost handicap: the light endpoint wins a draw only when the heavy
    // one has 9x its latency x load. Both orders are run, so a pod that happens
    // to be faster cannot pass the test for the weights.
    const shares: number[] = [];
    for (const [heavy, light] of [[bEp(), cEp()], [cEp(), bEp()]] as const) {
      await reconfigure({ [WEIGHTED]: [{ ...heavy, weight: 90000 }, { ...light, weight: 10000 }] });
      await warm(WEIGHTED);
      const r = await (await mesh.load(a, `http://${WEIGHTED}/`, 8, 4000, 3)).done;
      assert.equal(r.failed, 0, `failed requests: ${JSON.stringify(r.failures)}`);
      const h = count(r, heavy.addr);
      const l = count(r, light.addr);
      t.diagnostic(`weights 9:1, heavy ${heavy.addr}: ${h}, light ${light.addr}: ${l}`);
      assert.equal(h + l, r.ok);
      assert.ok(h > l, `the heavy endpoint ${heavy.addr} got ${h}, the light one ${l}`);
      shares.push(h / (h + l));
    }
    const mean = (shares[0]! + shares[1]!) / 2;
    assert.ok(mean >= 0.7, `mean share of the heavy endpoint ${mean.toFixed(2)} (expected about 0.9)`);
  });

  test('a slow endpoint gets little traffic (P2C over peak-EWMA)', async (t) => {
    const SLOW = `${c.ip4}:8090`;
    const FAST = `${b.ip4}:8080`;
    await reconfigure({ [SLOWMIX]: [{ addr: FAST, identity: id('b') }, { addr: SLOW, identity: id('c') }] });
    await warm(SLOWMIX);
    const r = await (await mesh.load(a, `http://${SLOWMIX}/`, 8, 4000, 3)).done;
    assert.equal(r.failed, 0, `failed requests: ${JSON.stringify(r.failures)}`);
    const fast = count(r, FAST);
    const slow = count(r, SLOW);
    t.diagnostic(`fast ${fast}, slow (${SLOW_MS} ms) ${slow}`);
    assert.ok(fast + slow === r.ok && fast > 100);
    // Equal weights: a blind split would give it half; with 8 in flight it wins a draw only while the fast one looks 12x slower.
    assert.ok(slow / r.ok < 0.15, `the slow endpoint got ${slow} of ${r.ok}`);
  });

  test('control plane killed mid-traffic: the last endpoints keep serving; after a restart on the same port updates resume', async (t) => {
    const B = `${b.ip4}:8080`;
    const C = `${c.ip4}:8080`;
    await reconfigure({ [WEB]: [bEp()] });
    await warm(WEB);
    const load = await mesh.load(a, `http://${WEB}/`, 4, 60000, 30);
    await new Promise((r) => setTimeout(r, 1000));
    const metrics = (): Promise<string> => mesh.curl(a, 'http://127.0.0.1:4191/metrics');
    const reconnects0 = promSample(await metrics(), 'bpfmesh_destination_reconnects_total');
    cpA.child.kill('SIGKILL');
    await new Promise<void>((r) => (cpA.child.exitCode !== null || cpA.child.signalCode !== null ? r() : cpA.child.once('exit', () => r())));
    const killed = Date.now();
    // The proxy notices the stream is gone and keeps what it knew.
    for (let i = 0; i < 100 && promSample(await metrics(), 'bpfmesh_destination_reconnects_total') <= reconnects0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(promSample(await metrics(), 'bpfmesh_destination_reconnects_total') > reconnects0, 'the proxy saw the stream end');
    await new Promise((r) => setTimeout(r, Math.max(0, 2000 - (Date.now() - killed))));
    cpA = await cp.restart();
    reloads = 0;
    const restarted = Date.now();
    // Updates resume once the proxy's stream is back (its backoff is at most 10 s).
    for (let i = 0; i < 150; i++) {
      const m = await metrics();
      if (promSample(m, 'bpfmesh_destination_streams', { state: 'streaming' }) >= 1 && promSample(m, 'bpfmesh_destination_streams', { state: 'backoff' }) === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const changeWrittenAt = Date.now(); // c cannot be used before this (the reload's log line can come after)
    const changed = await reconfigure({ [WEB]: [cEp()] });
    // Bounded at 30 s; stopped 1.5 s after the change, whenever that was.
    await new Promise((r) => setTimeout(r, 1500));
    load.proc.child.kill('SIGTERM');
    const r = await load.done;
    const moveMs = firstAnswer(r, C) - changed;
    t.diagnostic(
      `outage ${restarted - killed} ms: ${sentIn(r, B, killed, restarted)} answers from b during it; stream back ${changed - restarted} ms after the restart; c first answered ${moveMs} ms after the change; ${r.ok} answers in all`,
    );
    assert.equal(r.failed, 0, `failed requests: ${JSON.stringify(r.failures)}`);
    assert.ok(sentIn(r, B, killed, restarted) >= 50, 'requests kept flowing to the last known endpoint while the control plane was down');
    assert.equal(sentIn(r, C, 0, changeWrittenAt), 0, 'c was not used before the change');
    assert.ok(Number.isFinite(moveMs) && moveMs < 1000, `the change after the restart took effect ${moveMs} ms after the reload`);
    assert.ok(lastSent(r, B) - changed < 1000);
    assert.ok(logRecords(cpA).some((x) => x['msg'] === 'control plane listening'));
  });
});
