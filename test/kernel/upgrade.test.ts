// Upgrade in place: an install made by the previous release (its BPF objects,
// built from bpf/testdata/layout-prev/, maps pinned flat, mesh_counters of
// another size) is upgraded by this release's install while connections are
// opened through the proxy without pause, per pod (`bpfmesh init`) and
// node-wide (the next ensureNodeInstall, as a CNI ADD or the agent runs it).
// No connection may fail, connections opened before keep their
// SO_ORIGINAL_DST answers and their socket path, the old pins go, and
// `bpfmesh check` is clean afterwards. A layout this release does not know
// is refused.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, MeshLab, PodProcess, PROXY, runCli } from '../helpers/mesh.js';
import { installPrevNode, installPrevPod, prevObjects } from '../helpers/legacy-install.js';
import type { LabPod } from '../../src/lab/lab.js';
import { REPO_ROOT } from '../../src/config/paths.js';
import { parseInitFlags } from '../../src/config/pod-flags.js';
import { createLogger } from '../../src/log/logger.js';
import { native } from '../../src/bpf/native.js';
import * as c from '../../src/bpf/codecs.js';
import { TypedMap } from '../../src/bpf/typed-map.js';
import { netnsCookieOf } from '../../src/intercept/pod.js';
import { ensureBpffs } from '../../src/intercept/mounts.js';
import { LINKS } from '../../src/intercept/layout.js';
import { uninstall } from '../../src/intercept/install.js';
import { ensureNodeInstall, listEnrolled, nodePinDir, uninstallNode, verifyPod, type NodeScope } from '../../src/intercept/node-wide.js';
import { planLayout, prepareLayout } from '../../src/intercept/upgrade.js';
import { currentLayout, LAYOUT_MARKER, layoutDir, layoutIdOf, layoutsIn, pinnedShapes, readLayoutMarker, writeLayoutMarker } from '../../src/intercept/versions.js';
import { inspectAll, inspectPod } from '../../src/admin/inspect.js';
import type { CheckReport } from '../../src/check/types.js';

const skip = kernelSkipReason();
const log = createLogger({ logFormat: 'plain', logLevel: 'error' });
const TRAFFIC = join(REPO_ROOT, 'dist', 'test', 'fixtures', 'upgrade-traffic.js');
const HOLDER = join(REPO_ROOT, 'dist', 'test', 'fixtures', 'lock-holder.js');
const HELD = 16;
const PORT_BASE = 9000;
const policy = () => parseInitFlags(['--proxy-uid', String(PROXY.uid)]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Kernel ids of a pinned link and of its program. */
function linkIds(path: string): { id: number; progId: number } {
  const l = native().openPinnedLink(path);
  try {
    const i = l.info();
    return { id: i.id, progId: i.progId };
  } finally {
    l.close();
  }
}

interface Held {
  ok: number;
  failed: string[];
  localPorts: number[];
}

interface TrafficReport {
  held: Held;
  pinged: { ok: number; failed: number };
  answers: Record<string, string | null>;
  done: { ok: number; failed: number; failures: unknown[]; times: number[] };
  t0: number;
  t1: number;
}

/**
 * Runs the proxy and the app of test/fixtures/upgrade-traffic.ts in pod,
 * HELD connections held open, new ones opened back to back; calls upgrade
 * in the middle, then checks the held ones and stops.
 */
async function underTraffic(mesh: MeshLab, pod: LabPod, dst: string, upgrade: () => Promise<void>, aroundPing: { before?: () => void; after?: () => void } = {}): Promise<TrafficReport> {
  const proxy = new PodProcess(mesh.lab.spawn(pod, process.execPath, [TRAFFIC, 'proxy'], PROXY));
  let client: PodProcess | undefined;
  try {
    await proxy.waitFor((e) => e.event === 'listening');
    client = new PodProcess(mesh.lab.spawn(pod, process.execPath, [TRAFFIC, 'client', dst, String(PORT_BASE), String(HELD), '50000', '120'], APP));
    const held = (await client.waitFor((e) => e.event === 'held', 30_000)) as unknown as Held;
    await sleep(300);
    const t0 = Date.now();
    await upgrade();
    const t1 = Date.now();
    await sleep(300);
    aroundPing.before?.();
    client.child.stdin!.write('ping\n');
    const pinged = (await client.waitFor((e) => e.event === 'pinged')) as unknown as TrafficReport['pinged'];
    aroundPing.after?.();
    proxy.child.stdin!.write('query\n');
    const answers = (await proxy.waitFor((e) => e.event === 'query')) as unknown as { answers: Record<string, string | null> };
    client.child.stdin!.write('stop\n');
    const done = (await client.waitFor((e) => e.event === 'done', 30_000)) as unknown as TrafficReport['done'];
    return { held, pinged, answers: answers.answers, done, t0, t1 };
  } finally {
    client?.stop();
    proxy.stop();
  }
}

function assertTraffic(r: TrafficReport, dst: string): void {
  assert.equal(r.held.ok, HELD, `held connections before the upgrade: ${JSON.stringify(r.held.failed)}`);
  assert.equal(r.done.failed, 0, `no connection fails across the upgrade: ${JSON.stringify(r.done.failures)}`);
  const during = r.done.times.filter((t) => t >= r.t0 && t <= r.t1).length;
  assert.ok(during >= 1, `connections were opened while the upgrade ran (${r.done.ok} in all, none in ${r.t1 - r.t0} ms)`);
  assert.ok(r.done.times.some((t) => t > r.t1), 'and after it');
  assert.deepEqual({ ok: r.pinged.ok, failed: r.pinged.failed }, { ok: HELD, failed: 0 }, 'connections opened before still carry bytes (their socket path stays)');
  for (const [i, port] of r.held.localPorts.entries()) {
    assert.equal(r.answers[String(port)], `${dst}:${PORT_BASE + i}`, `SO_ORIGINAL_DST of held connection ${i} after the upgrade`);
  }
}

async function checkReport(args: string[]): Promise<CheckReport> {
  const r = await runCli(['check', '--json', ...args]);
  return JSON.parse(r.stdout) as CheckReport;
}

function assertLinesOk(report: CheckReport, prefixes: string[]): void {
  const lines = report.lines.filter((l) => prefixes.some((p) => l.id === p || l.id.startsWith(`${p}.`)));
  assert.ok(lines.length >= prefixes.length, JSON.stringify(report.lines.map((l) => l.id)));
  for (const l of lines) assert.ok(l.ok, `${l.id}: ${l.detail} (${l.code}: ${l.fix})`);
}

/** Pins that an upgraded folder must no longer hold at its top: the old flat maps and any marker. */
const flatMaps = (dir: string): string[] => readdirSync(dir).filter((n) => n.startsWith('mesh_') || n === LAYOUT_MARKER);

describe('upgrade in place from the previous layout', { skip, timeout: 300_000 }, () => {
  let mesh: MeshLab;
  let app: LabPod;
  let nodePod: LabPod;
  let small: LabPod;
  let peer: LabPod;
  let bpffs: string | undefined;
  let scope: NodeScope | undefined;
  const init = (pod: LabPod): Promise<unknown> => mesh.init(pod, ['--bpffs', bpffs!]);

  // A private bpffs: `bpfmesh check` sees only this test's pins.
  const podDir = (): string => join(bpffs!, 'bpfmesh', app.netnsName);

  before(() => {
    mesh = new MeshLab(97);
    app = mesh.pod('app');
    nodePod = mesh.pod('nodepod');
    small = mesh.pod('small');
    peer = mesh.pod('peer');
    bpffs = mkdtempSync(join(tmpdir(), 'bpfmesh-upgrade-'));
    ensureBpffs(bpffs, false);
    scope = { bpffs, bpffsExplicit: true, cgroupRoot: mesh.lab.cgroupRoot };
  });
  after(() => {
    try {
      if (scope !== undefined) uninstallNode(scope, log);
      if (bpffs !== undefined && existsSync(podDir())) uninstall(podDir(), app.netnsName, null, log);
      const smallDir = bpffs === undefined ? undefined : join(bpffs, 'bpfmesh', small.netnsName);
      if (smallDir !== undefined && existsSync(smallDir)) uninstall(smallDir, small.netnsName, null, log);
    } finally {
      try {
        mesh?.cleanup();
      } finally {
        if (bpffs !== undefined) {
          execFileSync('umount', [bpffs]);
          rmdirSync(bpffs);
        }
      }
    }
  });

  test('the fixture is the previous layout: another layout id, mesh_counters of another size', () => {
    const prev = pinnedShapes(prevObjects().intercept);
    assert.notEqual(layoutIdOf(prev), currentLayout().id);
    const counters = prev.find((m) => m.name === 'mesh_counters')!;
    assert.notEqual(counters.maxEntries, currentLayout().shapes.get('mesh_counters')!.maxEntries);
  });

  test('a pod install of the previous release, upgraded by bpfmesh init under traffic', async (t) => {
    const dir = podDir();
    installPrevPod(dir, app.cgroup, app.netns, policy());
    assert.deepEqual(layoutsIn(dir).map((l) => l.id), ['legacy']);
    const plan = planLayout(dir);
    assert.deepEqual(plan.copy.map((c) => c.name), ['mesh_counters'], 'only the map that changed is copied');
    for (const n of ['mesh_settings', 'mesh_dst_cookie', 'mesh_dst_tuple', 'mesh_sock_pairs', 'mesh_listeners', 'mesh_sock_dst']) {
      assert.ok(plan.reuse.some((r) => r.name === n), `${n} is reused as it is`);
    }
    const pre = (await checkReport(['--pod-name', app.netnsName, '--bpffs', bpffs!])).lines.find((l) => l.id === `pins.${app.netnsName}`);
    assert.equal(pre?.code, 'BPFMESH_E_INCOMPATIBLE_PINS', JSON.stringify(pre));
    assert.match(pre.fix ?? '', /upgrades them in place/, 'check says the next init upgrades the old layout');
    const before = LINKS.map((l) => linkIds(join(dir, l.pin)));
    const prevProgs = new Set(before.map((b) => b.progId));

    // The old counters map stays open here: the old programs that held sockets keep (their psock holds them) count into it.
    const cookie = netnsCookieOf(app.netns);
    const oldCounters = new TypedMap(native().openPinnedMap(join(dir, 'mesh_counters')), c.counterKey, c.u64Sum);
    const sockpathId = c.COUNTER_NAMES.indexOf('sockpath_redirected');
    const oldRedirected: bigint[] = [];
    let redirectedBefore = 0n;
    let r: TrafficReport;
    try {
      r = await underTraffic(
        mesh,
        app,
        peer.ip4,
        async () => {
          redirectedBefore = BigInt(inspectPod(dir, app.netnsName).counters['out_redirected'] ?? 0);
          await init(app);
        },
        {
          before: () => void oldRedirected.push(oldCounters.get({ netnsCookie: cookie, id: sockpathId }) ?? 0n),
          after: () => void oldRedirected.push(oldCounters.get({ netnsCookie: cookie, id: sockpathId }) ?? 0n),
        },
      );
    } finally {
      oldCounters.close();
    }
    assertTraffic(r, peer.ip4);
    const settings = inspectPod(dir, app.netnsName).settings;
    t.diagnostic(`${r.done.ok} connections, ${r.done.times.filter((x) => x >= r.t0 && x <= r.t1).length} during the ${r.t1 - r.t0} ms upgrade; socket path ${settings?.socketPath === true && !settings.socketPathRefused ? 'on' : 'off'}, old programs' redirects around the pings: ${oldRedirected.join(' -> ')}`);
    if (settings?.socketPath === true && !settings.socketPathRefused) {
      assert.ok(oldRedirected[1]! - oldRedirected[0]! >= BigInt(HELD), `held connections' bytes still take the socket path of the programs they were paired by: ${oldRedirected.join(' -> ')}`);
    }

    const id = currentLayout().id;
    assert.deepEqual(flatMaps(dir), [], 'the old flat map pins are gone');
    assert.deepEqual(layoutsIn(dir).map((l) => l.id), [id]);
    assert.equal(readLayoutMarker(layoutDir(dir, id)), id, 'the maps folder carries its layout marker');
    const after = LINKS.map((l) => linkIds(join(dir, l.pin)));
    for (const [i, spec] of LINKS.entries()) {
      assert.equal(after[i]!.id, before[i]!.id, `${spec.pin}: the same link, its program swapped (BPF_LINK_UPDATE), never detached`);
      assert.ok(!prevProgs.has(after[i]!.progId), `${spec.pin} runs a program of this release`);
    }
    const redirected = BigInt(inspectPod(dir, app.netnsName).counters['out_redirected'] ?? 0);
    assert.ok(redirected >= redirectedBefore && redirectedBefore >= BigInt(HELD), `counters carried over: ${redirectedBefore} before, ${redirected} after`);

    const report = await checkReport(['--pod-name', app.netnsName, '--bpffs', bpffs!]);
    assertLinesOk(report, ['pins', 'installed']);
    await init(app);
    assert.deepEqual(layoutsIn(dir).map((l) => l.id), [id], 'a re-run on the upgraded folder is a plain update');
  });

  test('a re-run of init on this layout keeps open connections on the socket path', async (t) => {
    const dir = podDir();
    const id = currentLayout().id;
    // The same kernel map before and after the re-run (reused, not copied): its count covers both programs.
    const counters = new TypedMap(native().openPinnedMap(join(layoutDir(dir, id), 'mesh_counters')), c.counterKey, c.u64Sum);
    const key = { netnsCookie: netnsCookieOf(app.netns), id: c.COUNTER_NAMES.indexOf('sockpath_redirected') };
    const around: bigint[] = [];
    let r: TrafficReport;
    try {
      r = await underTraffic(mesh, app, peer.ip4, async () => void (await init(app)), {
        before: () => void around.push(counters.get(key) ?? 0n),
        after: () => void around.push(counters.get(key) ?? 0n),
      });
    } finally {
      counters.close();
    }
    assertTraffic(r, peer.ip4);
    const settings = inspectPod(dir, app.netnsName).settings;
    t.diagnostic(`redirects around the pings: ${around.join(' -> ')}`);
    if (settings?.socketPath === true && !settings.socketPathRefused) {
      assert.ok(around[1]! - around[0]! >= BigInt(HELD), `connections paired before the re-run are still redirected: ${around.join(' -> ')}`);
    }
  });

  test('an unknown (newer) layout is refused with BPFMESH_E_UNKNOWN_LAYOUT and the install is left as it was', async () => {
    const dir = podDir();
    const future = join(dir, 'vdeadbeef');
    mkdirSync(future);
    try {
      writeLayoutMarker(future, 'deadbeef');
      const linksBefore = LINKS.map((l) => linkIds(join(dir, l.pin)).progId);
      const r = await runCli(['init', '--netns', app.netns, '--cgroup', app.cgroup, '--log-level', 'warn', '--bpffs', bpffs!]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /BPFMESH_E_UNKNOWN_LAYOUT/);
      assert.match(r.stderr, /layout deadbeef/);
      assert.match(r.stderr, /reset/, 'says what to do');
      assert.deepEqual(LINKS.map((l) => linkIds(join(dir, l.pin)).progId), linksBefore, 'nothing swapped');
      const report = await checkReport(['--pod-name', app.netnsName, '--bpffs', bpffs!]);
      const line = report.lines.find((l) => l.id === `pins.${app.netnsName}`);
      assert.equal(line?.code, 'BPFMESH_E_UNKNOWN_LAYOUT', JSON.stringify(line));
    } finally {
      if (existsSync(join(future, LAYOUT_MARKER))) native().unpin(join(future, LAYOUT_MARKER));
      rmdirSync(future);
    }
  });

  test('a node-wide install of the previous release, upgraded by the next ensureNodeInstall under traffic', async () => {
    const dir = nodePinDir(bpffs!);
    installPrevNode(dir, scope!.cgroupRoot, 'pod-n', nodePod.netns, policy());
    assert.deepEqual(layoutsIn(dir).map((l) => l.id), ['legacy']);
    const skLookup = join(dir, 'pods', 'pod-n', 'link_sk_lookup');
    const cgroupLinks = LINKS.filter((l) => l.target === 'cgroup');
    const before = [...cgroupLinks.map((l) => linkIds(join(dir, l.pin))), linkIds(skLookup)];

    let links: string[] = [];
    const r = await underTraffic(mesh, nodePod, peer.ip4, async () => {
      // Without refresh, as a CNI ADD calls it: maps of another layout make it install anyway.
      links = ensureNodeInstall(scope!, log).links.map((l) => l.action);
      return Promise.resolve();
    });
    assertTraffic(r, peer.ip4);
    assert.deepEqual(links, Array(cgroupLinks.length).fill('updated'));

    const id = currentLayout().id;
    assert.deepEqual(flatMaps(dir), []);
    assert.deepEqual(layoutsIn(dir).map((l) => l.id), [id]);
    assert.equal(readLayoutMarker(layoutDir(dir, id)), id);
    const after = [...cgroupLinks.map((l) => linkIds(join(dir, l.pin))), linkIds(skLookup)];
    for (const [i, b] of before.entries()) {
      assert.equal(after[i]!.id, b.id, 'the same link');
      assert.notEqual(after[i]!.progId, b.progId, 'its program swapped');
    }
    assert.deepEqual(listEnrolled(scope!).map((p) => [p.id, p.alive]), [['pod-n', true]]);
    verifyPod(scope!, 'pod-n', nodePod.netns, policy());
    const states = inspectAll(join(bpffs!, 'bpfmesh'));
    assert.ok(Number(states.find((s) => s.pod === 'node/pod-n')?.counters['out_redirected'] ?? 0) >= HELD, JSON.stringify(states.map((s) => s.counters)));
    const report = await checkReport(['--node', '--bpffs', bpffs!, '--cgroup-root', scope!.cgroupRoot]);
    assertLinesOk(report, ['pins', 'installed']);
    assert.deepEqual(ensureNodeInstall(scope!, log).links.map((l) => l.action), Array(cgroupLinks.length).fill('kept'), 'upgraded: the CNI ADD path only checks again');
  });

  test('maps of another size: their rows are copied, and the proxy\'s inbound listener is carried into the new sockhash in the kernel', async (t) => {
    const dir = join(bpffs!, 'bpfmesh', small.netnsName);
    installPrevPod(dir, small.cgroup, small.netns, policy(), 'layout-prev-small');
    const plan = planLayout(dir);
    assert.deepEqual(plan.copy.map((x) => x.name).sort(), ['mesh_counters', 'mesh_settings']);
    assert.deepEqual(plan.sockets.map((x) => x.name), ['mesh_listeners'], 'the listeners sockhash changed size: copied by the iterator');
    // An upgrade that stopped after pinning the maps it reuses (a crash): the next install completes it.
    prepareLayout(plan);
    assert.equal(layoutsIn(dir).length, 2);
    await mesh.responder(peer, [8080]);
    let relay = await mesh.relay(small, 'report', true); // its inbound listener registers in the old mesh_listeners
    try {
      assert.equal(await mesh.curl(peer, `http://${small.ip4}:9999/`), `inbound local=${small.ip4}:9999`, 'steered before the upgrade');
      const out = (await init(small)) as { stderr: string };
      assert.deepEqual(layoutsIn(dir).map((l) => l.id), [currentLayout().id]);
      assert.equal(await mesh.curl(small, `http://${peer.ip4}:8080/`), `outbound orig=${peer.ip4}:8080`, 'its settings row was copied');
      if (native().probeProgType('tracing')) {
        t.diagnostic('this kernel has BPF iterators: the listener is copied in the kernel');
        assert.equal(await mesh.curl(peer, `http://${small.ip4}:9999/`), `inbound local=${small.ip4}:9999`, 'still steered: the listener the proxy registered before is in the new map');
      } else {
        // The documented fallback: said in the log; steered again once the proxy listens anew.
        t.diagnostic('this kernel has no BPF tracing programs: the documented fallback');
        assert.match(out.stderr, /no BPF tracing programs[^\n]*mesh_listeners|mesh_listeners[^\n]*no BPF tracing programs/);
        await assert.rejects(mesh.curl(peer, `http://${small.ip4}:9999/`), 'fail-closed: not steered to a listener the new map does not hold');
        const exited = new Promise((res) => relay.child.once('exit', res));
        relay.stop();
        await exited; // its port is free again
        relay = await mesh.relay(small, 'report', true);
        assert.equal(await mesh.curl(peer, `http://${small.ip4}:9999/`), `inbound local=${small.ip4}:9999`, 'steered again once the proxy listens anew');
      }
    } finally {
      relay.stop();
    }
    const report = await checkReport(['--pod-name', small.netnsName, '--bpffs', bpffs!]);
    assertLinesOk(report, ['pins', 'installed']);
    uninstall(dir, small.netnsName, netnsCookieOf(small.netns), log);
  });

  test('an upgrade waits for the node lock: held by another process, init gives up with BPFMESH_E_BUSY and touches nothing', async () => {
    const pod = mesh.pod('locked');
    const dir = join(bpffs!, 'bpfmesh', pod.netnsName);
    installPrevPod(dir, pod.cgroup, pod.netns, policy());
    const holder = new PodProcess(spawn(process.execPath, [HOLDER, join(bpffs!, 'bpfmesh', 'node_lock'), '5000'], { stdio: ['pipe', 'pipe', 'pipe'] }));
    try {
      await holder.waitFor((e) => e.event === 'locked');
      const r = await runCli(['init', '--netns', pod.netns, '--cgroup', pod.cgroup, '--log-level', 'warn', '--bpffs', bpffs!]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /BPFMESH_E_BUSY/);
      assert.deepEqual(layoutsIn(dir).map((l) => l.id), ['legacy'], 'nothing upgraded without the lock');
      holder.child.stdin!.write('release\n');
      await holder.waitFor((e) => e.event === 'released');
    } finally {
      holder.stop();
    }
    await init(pod);
    assert.deepEqual(layoutsIn(dir).map((l) => l.id), [currentLayout().id], 'upgraded once the lock is free');
    uninstall(dir, pod.netnsName, netnsCookieOf(pod.netns), log);
  });

  test('bpfmesh reset removes every pin of an upgraded install, the layout folder and marker included', async () => {
    const pod = await runCli(['reset', '--netns', app.netns, '--bpffs', bpffs!]);
    assert.equal(pod.code, 0, pod.stderr);
    assert.equal(existsSync(podDir()), false);
    const node = await runCli(['reset', '--node', '--bpffs', bpffs!]);
    assert.equal(node.code, 0, node.stderr);
    assert.deepEqual(existsSync(join(bpffs!, 'bpfmesh')) ? readdirSync(join(bpffs!, 'bpfmesh')) : [], []);
  });
});
