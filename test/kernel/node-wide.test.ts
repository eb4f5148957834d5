// Node-wide interception (CNI and DaemonSet modes): the programs attached once
// at a cgroup above the pods, pods enrolled by netns cookie. Pins live in a
// private bpffs and the programs on the lab's cgroup, so nothing else on the
// machine sees them.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, MeshLab, PROXY, runCli } from '../helpers/mesh.js';
import type { LabPod } from '../../src/lab/lab.js';
import { ensureBpffs } from '../../src/intercept/mounts.js';
import { parseInitFlags } from '../../src/config/pod-flags.js';
import { createLogger } from '../../src/log/logger.js';
import { closeMaps } from '../../src/intercept/layout.js';
import { netnsCookieOf } from '../../src/intercept/pod.js';
import { ErrorCodes } from '../../src/errors.js';
import {
  adoptListeners,
  enrollPod,
  ensureNodeInstall,
  listEnrolled,
  nodePinDir,
  openNodeMaps,
  removeStalePodInstalls,
  uninstallNode,
  verifyPod,
  withdrawPod,
  type NodeScope,
} from '../../src/intercept/node-wide.js';

const skip = kernelSkipReason();
const log = createLogger({ logFormat: 'plain', logLevel: 'error' });
const policy = (extra: string[] = []) => parseInitFlags(['--proxy-uid', String(PROXY.uid), ...extra]);

/** Programs attached directly to a cgroup, per bpftool. */
function cgroupProgs(cgroup: string): Array<{ attach_type: string; name: string }> {
  return JSON.parse(execFileSync('bpftool', ['-j', 'cgroup', 'show', cgroup], { encoding: 'utf8' }).trim() || '[]') as Array<{ attach_type: string; name: string }>;
}

describe('node-wide interception', { skip, timeout: 180_000 }, () => {
  let mesh: MeshLab;
  let a: LabPod;
  let b: LabPod;
  let scope: NodeScope;
  let bpffs: string;

  before(async () => {
    mesh = new MeshLab(89);
    a = mesh.pod('a');
    b = mesh.pod('b');
    bpffs = mkdtempSync(join(tmpdir(), 'bpfmesh-nodewide-'));
    ensureBpffs(bpffs, false);
    scope = { bpffs, bpffsExplicit: true, cgroupRoot: mesh.lab.cgroupRoot };
    await mesh.responder(b, [8080]);
  });
  after(() => {
    try {
      if (scope !== undefined) uninstallNode(scope, log);
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

  test('ensureNodeInstall attaches eight programs once at the cgroup, and is idempotent', () => {
    const first = ensureNodeInstall(scope, log);
    assert.equal(first.fresh, true);
    assert.deepEqual(first.links.map((l) => l.action), Array(8).fill('attached'));
    assert.equal(cgroupProgs(scope.cgroupRoot).length, 8);
    assert.deepEqual(ensureNodeInstall(scope, log).links.map((l) => l.action), Array(8).fill('kept'));
    const refreshed = ensureNodeInstall(scope, log, { refresh: true });
    assert.equal(refreshed.fresh, false);
    assert.deepEqual(refreshed.links.map((l) => l.action), Array(8).fill('updated'));
    assert.equal(cgroupProgs(scope.cgroupRoot).length, 8, 'a refresh swaps programs, it attaches nothing new');
    assert.equal(cgroupProgs(a.cgroup).length, 0, 'nothing on the pod cgroup itself');
  });

  test('an enrolled pod is intercepted both ways; a pod not enrolled is not', async () => {
    const r = enrollPod(scope, 'pod-a', a.netns, policy(), log);
    assert.equal(r.fresh, true);
    assert.equal(r.netnsCookie, netnsCookieOf(a.netns));
    // After enrolling: sockops registers the proxy's listener as it listens.
    await mesh.relay(a, 'report', true);
    assert.equal(await mesh.curl(a, `http://${b.ip4}:8080/`), `outbound orig=${b.ip4}:8080`, 'outbound steered');
    assert.equal(await mesh.curl(b, `http://${a.ip4}:9999/`), `inbound local=${a.ip4}:9999`, 'inbound steered');
    assert.equal(await mesh.curl(b, `http://${b.ip4}:8080/`), `direct ${b.ip4}:8080`, 'b has no rows: untouched');
    assert.equal(await mesh.curl(a, `http://${b.ip4}:8080/`, PROXY), `direct ${b.ip4}:8080`, 'the proxy uid is exempt');
  });

  test("a proxy in a node-wide pod finds its own counters (by its netns's sk_lookup link)", async () => {
    const script = `
      const { podCounterReader } = require(${JSON.stringify(join(__dirname, '../../src/admin/kernel-counters.js'))});
      const r = podCounterReader({ bpffs: ${JSON.stringify(bpffs)} });
      if (!r.read) { console.log(JSON.stringify(r)); process.exit(1); }
      console.log(JSON.stringify({ pinDir: r.pinDir, counters: r.read() }, (_, v) => (typeof v === 'bigint' ? Number(v) : v)));`;
    const r = await mesh.lab.exec(a, process.execPath, ['-e', script]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const out = JSON.parse(r.stdout) as { pinDir: string; counters: Record<string, number> };
    assert.equal(out.pinDir, nodePinDir(bpffs));
    assert.ok(out.counters['out_redirected']! >= 1, r.stdout);
    assert.ok(out.counters['in_steered']! >= 1, r.stdout);
  });

  test('bpfmesh init on a pod enrolled node-wide does nothing (no second set of programs)', async () => {
    const r = await runCli(['init', '--netns', a.netns, '--cgroup', a.cgroup, '--bpffs', bpffs, '--log-format', 'json']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout + r.stderr, /intercepted node-wide already/);
    assert.deepEqual(readdirSync(join(bpffs, 'bpfmesh')).sort(), ['node']);
    assert.equal(cgroupProgs(a.cgroup).length, 0);
  });

  test('enrolling again writes only the difference; verifyPod checks rows and link', async () => {
    const again = enrollPod(scope, 'pod-a', a.netns, policy(), log);
    assert.equal(again.fresh, false);
    assert.equal(again.policy.ports.added + again.policy.ports.removed, 0);
    verifyPod(scope, 'pod-a', a.netns, policy());
    assert.throws(() => verifyPod(scope, 'pod-a', a.netns, policy(['--outbound-ports-to-ignore', '8080'])), { code: ErrorCodes.MISMATCH });
    assert.throws(() => verifyPod(scope, 'pod-a', b.netns, policy()), { code: ErrorCodes.MISMATCH });
    assert.throws(() => verifyPod(scope, 'pod-b', b.netns, policy()), { code: ErrorCodes.NOT_INSTALLED });

    const changed = enrollPod(scope, 'pod-a', a.netns, policy(['--outbound-ports-to-ignore', '8080']), log);
    assert.equal(changed.policy.ports.added, 1);
    verifyPod(scope, 'pod-a', a.netns, policy(['--outbound-ports-to-ignore', '8080']));
    assert.equal(await mesh.curl(a, `http://${b.ip4}:8080/`), `direct ${b.ip4}:8080`, 'the new ignore applies at once');
    enrollPod(scope, 'pod-a', a.netns, policy(), log);
  });

  test('the same id with a new netns (a recreated sandbox) moves the pod', async () => {
    enrollPod(scope, 'pod-a', b.netns, policy(['--inbound-ports-to-ignore', '8080']), log);
    assert.deepEqual(listEnrolled(scope).map((p) => [p.id, p.netnsCookie]), [['pod-a', netnsCookieOf(b.netns)]]);
    assert.equal(await mesh.curl(a, `http://${b.ip4}:8080/`), `direct ${b.ip4}:8080`, "a's rows went with the old netns");
    const maps = openNodeMaps(scope);
    try {
      assert.equal(maps.settings.get(netnsCookieOf(a.netns)), null);
    } finally {
      closeMaps(maps);
    }
    withdrawPod(scope, 'pod-a', log);
    enrollPod(scope, 'pod-a', a.netns, policy(), log);
  });

  test('withdraw removes rows and link; a second withdraw is a no-op', async () => {
    const cookie = netnsCookieOf(a.netns);
    assert.equal(withdrawPod(scope, 'pod-a', log), true);
    assert.equal(withdrawPod(scope, 'pod-a', log), false);
    assert.equal(await mesh.curl(a, `http://${b.ip4}:8080/`), `direct ${b.ip4}:8080`);
    const maps = openNodeMaps(scope);
    try {
      assert.equal(maps.settings.get(cookie), null);
      assert.equal([...maps.portRules.keys()].filter((k) => k.netnsCookie === cookie).length, 0);
      assert.equal([...maps.counters.keys()].filter((k) => k.netnsCookie === cookie).length, 0);
    } finally {
      closeMaps(maps);
    }
    assert.deepEqual(readdirSync(join(nodePinDir(bpffs), 'pods')), []);
  });

  test('a proxy listening before its pod was enrolled is adopted (pidfd_getfd)', async () => {
    const relay = await mesh.relay(b, 'report', true);
    try {
      const cookie = enrollPod(scope, 'pod-b', b.netns, policy(), log).netnsCookie;
      await assert.rejects(mesh.curl(a, `http://${b.ip4}:9999/`), /curl/, 'fail-closed: no registered listener, no way in');
      const pids = readFileSync(join(b.cgroup, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
      assert.ok(adoptListeners(scope, cookie, 4143, pids) >= 1, 'its listener (one per family) registered');
      assert.equal(await mesh.curl(a, `http://${b.ip4}:9999/`), `inbound local=${b.ip4}:9999`);
    } finally {
      relay.stop();
      withdrawPod(scope, 'pod-b', log);
    }
  });

  test('a pod whose netns is gone shows as dead and can still be withdrawn by id', () => {
    const ns = `${mesh.lab.prefix}-gone`;
    execFileSync('ip', ['netns', 'add', ns]);
    let cookie: bigint;
    try {
      cookie = enrollPod(scope, 'pod-gone', `/run/netns/${ns}`, policy(), log).netnsCookie;
    } finally {
      execFileSync('ip', ['netns', 'del', ns]);
    }
    // The netns is freed asynchronously; its sk_lookup link detaches then.
    const deadline = Date.now() + 10_000;
    while (listEnrolled(scope).find((p) => p.id === 'pod-gone')?.alive !== false && Date.now() < deadline) execFileSync('sleep', ['0.1']);
    assert.deepEqual(listEnrolled(scope), [{ id: 'pod-gone', netnsCookie: cookie, alive: false }]);
    assert.equal(withdrawPod(scope, 'pod-gone', log), true);
    const maps = openNodeMaps(scope);
    try {
      assert.equal(maps.settings.get(cookie), null, 'rows deleted by the recorded cookie');
    } finally {
      closeMaps(maps);
    }
  });

  test('bad ids and missing netns are refused with stable codes', () => {
    assert.throws(() => enrollPod(scope, '../x', a.netns, policy(), log), { code: ErrorCodes.BAD_FLAG });
    assert.throws(() => enrollPod(scope, 'x', '/run/netns/nope-bpfmesh', policy(), log), { code: ErrorCodes.NO_NETNS });
    assert.throws(() => ensureNodeInstall({ ...scope, cgroupRoot: '/nonexistent' }, log), { code: ErrorCodes.NO_CGROUP });
  });

  test('concurrent installers (separate processes) attach the programs once', async () => {
    uninstallNode(scope, log);
    assert.equal(cgroupProgs(scope.cgroupRoot).length, 0);
    const script = `
      const { ensureNodeInstall } = require(${JSON.stringify(join(__dirname, '../../src/intercept/node-wide.js'))});
      const { createLogger } = require(${JSON.stringify(join(__dirname, '../../src/log/logger.js'))});
      ensureNodeInstall(${JSON.stringify(scope)}, createLogger({ logFormat: 'plain', logLevel: 'error' }));`;
    const runs = Array.from({ length: 4 }, () => new Promise<number | null>((resolve) => spawn(process.execPath, ['-e', script], { stdio: 'inherit' }).once('close', resolve)));
    assert.deepEqual(await Promise.all(runs), [0, 0, 0, 0]);
    assert.equal(cgroupProgs(scope.cgroupRoot).length, 8);
  });

  test('pod installs (bpfmesh init) whose netns is gone are found and removed; live ones stay', async () => {
    const ns = `${mesh.lab.prefix}-initpod`;
    const cg = join(mesh.lab.cgroupRoot, 'initpod');
    execFileSync('ip', ['netns', 'add', ns]);
    mkdirSync(cg);
    try {
      for (const [netns, name] of [[`/run/netns/${ns}`, 'stale-pod'], [a.netns, 'live-pod']] as const) {
        const r = await runCli(['init', '--netns', netns, '--cgroup', netns === a.netns ? a.cgroup : cg, '--pod-name', name, '--bpffs', bpffs, '--log-level', 'warn']);
        assert.equal(r.code, 0, r.stderr);
      }
    } finally {
      execFileSync('ip', ['netns', 'del', ns]);
    }
    const deadline = Date.now() + 10_000;
    let removed: string[] = [];
    while (removed.length === 0 && Date.now() < deadline) {
      removed = removeStalePodInstalls(bpffs, log); // the netns is freed asynchronously
      if (removed.length === 0) execFileSync('sleep', ['0.1']);
    }
    assert.deepEqual(removed, ['stale-pod']);
    assert.equal(existsSync(join(bpffs, 'bpfmesh', 'stale-pod')), false);
    assert.equal(cgroupProgs(cg).length, 0, 'its cgroup hooks are detached');
    rmdirSync(cg);
    assert.deepEqual(removeStalePodInstalls(bpffs, log), []);
    const reset = await runCli(['reset', '--pod-name', 'live-pod', '--netns', a.netns, '--bpffs', bpffs]);
    assert.equal(reset.code, 0, reset.stderr);
  });

  test('inspect shows node-wide pods; reset --node leaves no pins and no programs on the cgroup', async () => {
    ensureNodeInstall(scope, log);
    enrollPod(scope, 'pod-a', a.netns, policy(['--outbound-ports-to-ignore', '7000-7001']), log);
    const inspected = await runCli(['inspect', '--bpffs', bpffs, '--json']);
    assert.equal(inspected.code, 0, inspected.stderr);
    const pods = (JSON.parse(inspected.stdout) as { pods: Array<{ pod: string; hooks: unknown[]; netnsCookie: string; outboundPortsIgnored: string[]; problems: string[] }> }).pods;
    assert.deepEqual(pods.map((p) => p.pod), ['node/pod-a']);
    assert.equal(pods[0]!.hooks.length, 9);
    assert.equal(pods[0]!.netnsCookie, netnsCookieOf(a.netns).toString());
    assert.deepEqual(pods[0]!.outboundPortsIgnored, ['7000-7001']);
    assert.deepEqual(pods[0]!.problems, []);

    const reset = await runCli(['reset', '--node', '--bpffs', bpffs]);
    assert.equal(reset.code, 0, reset.stderr);
    assert.equal(cgroupProgs(scope.cgroupRoot).length, 0);
    assert.equal(existsSync(join(bpffs, 'bpfmesh')), false);
    const again = await runCli(['reset', '--node', '--bpffs', bpffs]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /BPFMESH_E_NOT_INSTALLED/);
  });

  test('apps keep working untouched after uninstall', async () => {
    assert.equal(await mesh.curl(a, `http://${b.ip4}:8080/`, APP), `direct ${b.ip4}:8080`);
  });
});
