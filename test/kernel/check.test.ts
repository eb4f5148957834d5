// bpfmesh check on the real kernel: all ✓ on this machine, then each feature
// taken away gives its ✗ with its stable code and a non-zero exit. Pins go
// to a bpffs folder of this run (not /sys/fs/bpf/bpfmesh, where other
// installs may live), and everything made here is removed in after().
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSkipReason } from '../helpers/root.js';
import { CLI, MeshLab, runCli } from '../helpers/mesh.js';
import type { LabPod } from '../../src/lab/lab.js';
import { uniquePrefix } from '../../src/lab/lab.js';
import { native } from '../../src/bpf/native.js';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger } from '../../src/log/logger.js';
import { enrollPod, ensureNodeInstall, uninstallNode } from '../../src/intercept/node-wide.js';
import { DEFAULT_POLICY } from '../../src/cni/config.js';
import { LAYOUT_MARKER, readLayoutMarker, writeLayoutMarker } from '../../src/check/layout-marker.js';
import { currentLayout } from '../../src/intercept/versions.js';
import type { CheckLine, CheckReport } from '../../src/check/types.js';

const skip = kernelSkipReason();

const has = (tool: string): boolean => spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;

function parse(stdout: string): CheckReport {
  return JSON.parse(stdout) as CheckReport;
}

function line(r: CheckReport, id: string): CheckLine {
  const l = r.lines.find((x) => x.id === id);
  assert.ok(l !== undefined, `no line ${id} in ${r.lines.map((x) => x.id).join(', ')}`);
  return l;
}

/** Runs check --json; asserts the exit code matches the report. */
async function check(args: string[]): Promise<CheckReport> {
  const r = await runCli(['check', '--json', ...args]);
  const report = parse(r.stdout);
  assert.equal(r.code, report.ok ? 0 : 1, `exit code follows the ✗ lines: ${r.stderr}`);
  return report;
}

function expectFail(r: CheckReport, id: string, code: string): CheckLine {
  const l = line(r, id);
  assert.equal(l.ok, false, `${id} should fail: ${l.detail}`);
  assert.equal(l.code, code, `${id}: ${l.detail}`);
  assert.ok((l.fix ?? '').length > 0, `${id} says what to do`);
  assert.equal(r.ok, false);
  return l;
}

// Under emulation (vagrant/kernels/run.sh, TCG) each CLI run takes seconds: the bound is generous.
describe('bpfmesh check', { skip, timeout: 600_000 }, () => {
  let mesh: MeshLab;
  let pod: LabPod;
  let bpffs: string; // a folder of this run on the real bpffs
  let plainDir: string;
  let foreignDir: string;

  before(() => {
    mesh = new MeshLab(93);
    pod = mesh.pod('pod');
    bpffs = join('/sys/fs/bpf', `${uniquePrefix('chk')}`);
    mkdirSync(bpffs);
    plainDir = mkdtempSync(join(tmpdir(), 'bpfmesh-check-'));
    foreignDir = mkdtempSync(join(tmpdir(), 'bpfmesh-foreign-'));
  });
  after(async () => {
    try {
      if (existsSync(join(bpffs, 'bpfmesh', pod.netnsName))) await runCli(['reset', '--netns', pod.netns, '--bpffs', bpffs]);
      rmSync(plainDir, { recursive: true, force: true });
      rmSync(foreignDir, { recursive: true, force: true });
      if (existsSync(join(bpffs, 'foreign'))) native().unpin(join(bpffs, 'foreign'));
      const cur = `v${currentLayout().id}`;
      for (const dir of [join(bpffs, 'bpfmesh', 'old', 'vdeadbeef'), join(bpffs, 'bpfmesh', 'old'), join(bpffs, 'bpfmesh', 'new', cur), join(bpffs, 'bpfmesh', 'new'), join(bpffs, 'bpfmesh')]) {
        if (existsSync(join(dir, LAYOUT_MARKER))) native().unpin(join(dir, LAYOUT_MARKER));
        if (existsSync(dir)) rmdirSync(dir);
      }
      rmdirSync(bpffs);
    } finally {
      mesh?.cleanup();
    }
  });

  test('--pre on this machine: every line ✓, exit 0; text output has a ✓ per line', async (t) => {
    const r = await check(['--pre', '--bpffs', bpffs]);
    t.diagnostic(`${line(r, 'kernel').detail}; ${line(r, 'sockmap_fionread').detail}`);
    assert.deepEqual(r.lines.filter((l) => !l.ok), [], 'no ✗ lines');
    assert.equal(r.mode, 'pre');
    for (const id of ['kernel', 'btf', 'cgroup2', 'bpffs', 'capabilities', 'prog_type.sk_lookup', 'prog_type.cgroup_sock_addr', 'attach_type.cgroup_inet4_connect',
      'attach_type.sk_skb_verdict', 'map_type.sockhash', 'map_type.lpm_trie', 'helper.cgroup_sock_addr.get_netns_cookie', 'helper.sk_lookup.sk_assign',
      'sockmap_fionread', 'foreign.cgroup_inet4_connect', 'pins']) {
      line(r, id);
    }
    const text = await runCli(['check', '--pre', '--bpffs', bpffs]);
    assert.equal(text.code, 0, text.stdout);
    assert.equal(text.stdout.split('\n').filter((l) => l.startsWith('✓ ')).length, r.lines.length);
    assert.match(text.stdout, /all \d+ checks passed/);
  });

  test('the helper probe refuses what the verifier refuses (not "assume supported")', () => {
    assert.equal(native().probeHelper('sk_lookup', 'get_netns_cookie', 'sk_lookup'), false, 'sk_lookup programs cannot read the netns cookie (README)');
    assert.equal(native().probeHelper('cgroup_sockopt', 'sock_hash_update', 'cgroup_getsockopt'), false);
    assert.equal(native().probeHelper('cgroup_sock_addr', 'get_netns_cookie', 'cgroup_inet4_connect'), true);
    assert.equal(native().probeAttachType('sk_lookup', 'cgroup_inet4_connect'), false, 'an attach type of another program type is refused');
  });

  test('no bpffs: --bpffs at a plain folder', async () => {
    const r = await check(['--pre', '--bpffs', plainDir]);
    assert.match(expectFail(r, 'bpffs', 'BPFMESH_E_NO_BPFFS').fix!, /mount -t bpf/);
  });

  test('no cgroup v2: --cgroup-root at a folder that is not cgroup2', async () => {
    const r = await check(['--pre', '--bpffs', bpffs, '--cgroup-root', plainDir]);
    expectFail(r, 'cgroup2', 'BPFMESH_E_NO_CGROUP');
  });

  test('a missing capability: run as uid 65534 (setpriv)', async () => {
    const r = spawnSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, CLI, 'check', '--pre', '--json', '--bpffs', bpffs], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 1, r.stderr);
    const report = parse(r.stdout);
    assert.match(expectFail(report, 'capabilities', 'BPFMESH_E_PERMISSION').detail, /CAP_BPF/);
    expectFail(report, 'probes', 'BPFMESH_E_PERMISSION');
  });

  test('pins from an unknown layout are refused; a folder of this layout passes', async () => {
    const old = join(bpffs, 'bpfmesh', 'old', 'vdeadbeef');
    mkdirSync(old, { recursive: true });
    writeLayoutMarker(old, 'deadbeef');
    const r = await check(['--pre', '--bpffs', bpffs]);
    const bad = expectFail(r, 'pins.old', 'BPFMESH_E_UNKNOWN_LAYOUT');
    assert.match(bad.detail, /layout deadbeef/);
    native().unpin(join(old, LAYOUT_MARKER));
    rmdirSync(old);
    rmdirSync(join(old, '..'));

    const id = currentLayout().id;
    const fresh = join(bpffs, 'bpfmesh', 'new', `v${id}`);
    mkdirSync(fresh, { recursive: true });
    writeLayoutMarker(fresh, id);
    assert.equal(readLayoutMarker(fresh), id);
    const ok = await check(['--pre', '--bpffs', bpffs]);
    assert.equal(line(ok, 'pins').ok, true, line(ok, 'pins').detail);
    native().unpin(join(fresh, LAYOUT_MARKER));
    rmdirSync(fresh);
    rmdirSync(join(fresh, '..'));
  });

  test('leftover proxy-init rules in the pod netns', async (t) => {
    if (!has('iptables')) {
      if (process.env['CI'] === 'true') assert.fail('iptables is missing under CI=true (scripts/install-deps.sh installs it)');
      t.skip('iptables is not installed');
      return;
    }
    const ipt = (...args: string[]): void => {
      const r = spawnSync('nsenter', [`--net=${pod.netns}`, '--', 'iptables', '-t', 'nat', ...args], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
    };
    const clean = await check(['--pre', '--bpffs', bpffs, '--netns', pod.netns]);
    assert.equal(line(clean, 'proxy_init_rules').ok, true, line(clean, 'proxy_init_rules').detail);
    ipt('-N', 'PROXY_INIT_REDIRECT');
    try {
      const r = await check(['--pre', '--bpffs', bpffs, '--netns', pod.netns]);
      assert.match(expectFail(r, 'proxy_init_rules', 'BPFMESH_E_IPTABLES_LEFTOVER').detail, /PROXY_INIT_REDIRECT/);
    } finally {
      ipt('-X', 'PROXY_INIT_REDIRECT');
    }
  });

  test('installed state: ✗ before init, ✓ after (pod cgroup and netns hold only bpfmesh programs), ✗ after reset', async () => {
    const target = ['--bpffs', bpffs, '--pod-name', pod.netnsName];
    expectFail(await check(target), `installed.${pod.netnsName}`, 'BPFMESH_E_NOT_INSTALLED');
    const init = await runCli(['init', '--netns', pod.netns, '--cgroup', pod.cgroup, '--bpffs', bpffs, '--log-level', 'warn']);
    assert.equal(init.code, 0, init.stderr);
    const r = await check([...target, '--cgroup', pod.cgroup, '--netns', pod.netns]);
    assert.deepEqual(r.lines.filter((l) => !l.ok), []);
    assert.equal(r.mode, 'installed');
    assert.match(line(r, 'foreign.sk_lookup').detail, /bpfmesh's: mesh_sk_lookup#\d+/);
    assert.match(line(r, 'foreign.cgroup_inet4_connect.pod').detail, /bpfmesh's: mesh_connect4#\d+/);
    const reset = await runCli(['reset', '--netns', pod.netns, '--bpffs', bpffs]);
    assert.equal(reset.code, 0, reset.stderr);
    expectFail(await check(target), `installed.${pod.netnsName}`, 'BPFMESH_E_NOT_INSTALLED');
  });

  test('the DaemonSet readiness probe: --node with the node-wide install on a cgroup root, and the agent\'s /ready', async () => {
    const root = mesh.lab.cgroupRoot;
    const args = ['--node', '--bpffs', bpffs, '--cgroup-root', root];
    expectFail(await check(args), 'installed.node', 'BPFMESH_E_NOT_INSTALLED');
    const log = createLogger({ logFormat: 'plain', logLevel: 'silent' });
    const scope = { bpffs, bpffsExplicit: true, cgroupRoot: root };
    let status = 503;
    const agent = createServer((_req, res) => res.writeHead(status).end());
    await new Promise<void>((resolve) => agent.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(agent.address() as AddressInfo).port}/ready`;
    try {
      ensureNodeInstall(scope, log);
      const ok = await check(args);
      assert.deepEqual(ok.lines.filter((l) => !l.ok), []);
      assert.match(line(ok, 'installed.node').detail, /8 cgroup hooks/);
      assert.match(line(ok, 'capabilities').detail, /CAP_SYS_PTRACE/);
      assert.match(expectFail(await check([...args, '--agent-ready', url]), 'agent_ready', 'BPFMESH_E_NOT_READY').detail, /answers 503/);
      status = 200;
      assert.equal((await check([...args, '--agent-ready', url])).ok, true);
      expectFail(await check([...args, '--pod-name', 'node/chkpod']), 'installed.node.chkpod', 'BPFMESH_E_NOT_INSTALLED');
      enrollPod(scope, 'chkpod', pod.netns, DEFAULT_POLICY, log);
      const enrolled = await check([...args, '--pod-name', 'node/chkpod']);
      assert.equal(line(enrolled, 'installed.node.chkpod').ok, true, line(enrolled, 'installed.node.chkpod').detail);
      assert.match(line(enrolled, 'installed.node').detail, /1 pod\(s\) enrolled/);
      const elsewhere = await check(['--node', '--bpffs', bpffs, '--cgroup-root', pod.cgroup]);
      assert.match(expectFail(elsewhere, 'installed.node', 'BPFMESH_E_MISMATCH').detail, /attached to another cgroup/);
    } finally {
      await new Promise((resolve) => agent.close(resolve));
      uninstallNode(scope, log);
    }
  });

  test('a foreign connect4 program on the pod cgroup', async (t) => {
    if (!has('clang') || !has('bpftool')) {
      if (process.env['CI'] === 'true') assert.fail('clang and bpftool are build dependencies');
      t.skip('clang or bpftool missing');
      return;
    }
    const src = join(foreignDir, 'other.bpf.c');
    const obj = join(foreignDir, 'other.bpf.o');
    writeFileSync(src, [
      '__attribute__((section("cgroup/connect4"), used)) int other_connect4(void *ctx) { return 1; }',
      'char _license[] __attribute__((section("license"), used)) = "GPL";',
    ].join('\n'));
    const sh = (cmd: string, args: string[]): void => {
      const r = spawnSync(cmd, args, { encoding: 'utf8' });
      assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
    };
    sh('clang', ['-O2', '-target', 'bpf', '-c', src, '-o', obj]);
    const pin = join(bpffs, 'foreign');
    sh('bpftool', ['prog', 'load', obj, pin, 'type', 'cgroup/connect4']);
    sh('bpftool', ['cgroup', 'attach', pod.cgroup, 'connect4', 'pinned', pin, 'multi']);
    try {
      const r = await check(['--pre', '--bpffs', bpffs, '--cgroup', pod.cgroup]);
      const l = expectFail(r, 'foreign.cgroup_inet4_connect.pod', 'BPFMESH_E_FOREIGN_PROGRAM');
      assert.match(l.detail, /other_connect4#\d+/);
      assert.match(l.fix!, /bpftool prog show id \d+/);
      assert.equal(line(r, 'foreign.cgroup_inet4_connect').ok, true, 'the cgroup root is untouched');
    } finally {
      sh('bpftool', ['cgroup', 'detach', pod.cgroup, 'connect4', 'pinned', pin]);
      native().unpin(pin);
    }
  });
});
