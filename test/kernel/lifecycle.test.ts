// init / reset / inspect as an operator uses them: idempotent init, a reset
// that leaves nothing bpftool can find, --simulate, fail-closed and
// --fail-open, and the proxy ports reserved for the proxy's uid.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, MeshLab, PROXY, runCli } from '../helpers/mesh.js';
import type { LabPod } from '../../src/lab/lab.js';
import { inspectPod } from '../../src/admin/inspect.js';
import { closeMaps, mapsOfPinDir } from '../../src/intercept/layout.js';
import { bpftool, cgroupPrograms } from '../helpers/bpftool.js';

const skip = kernelSkipReason();

interface BpftoolProg {
  id: number;
  name?: string;
  map_ids?: number[];
}


function mapIds(pinDir: string): number[] {
  const maps = mapsOfPinDir(pinDir);
  try {
    return Object.values(maps).map((m: { info: { id: number } }) => m.info.id);
  } finally {
    closeMaps(maps);
  }
}

describe('init, reset and inspect', { skip, timeout: 180_000 }, () => {
  let mesh: MeshLab;
  let pod: LabPod;
  let peer: LabPod;

  before(async () => {
    mesh = new MeshLab(83);
    pod = mesh.pod('pod');
    peer = mesh.pod('peer');
    await mesh.responder(peer, [8080]);
  });
  after(() => mesh?.cleanup());

  test('--simulate prints the plan and touches nothing', async () => {
    const r = await runCli(['init', '--simulate', '--netns', pod.netns, '--cgroup', pod.cgroup, '--outbound-ports-to-ignore', '443']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /mesh_connect4/);
    assert.match(r.stdout, /outbound ignored\s+443/);
    assert.equal(existsSync(mesh.pinDir(pod)), false);
    assert.equal(cgroupPrograms(pod.cgroup).length, 0);
  });

  test('fail-closed by default: with no proxy, steered connections are refused both ways', async () => {
    await mesh.init(pod);
    const out = await mesh.lab.exec(pod, 'curl', ['-sS', '--max-time', '3', `http://${peer.ip4}:8080/`], APP);
    assert.notEqual(out.code, 0, 'outbound must not bypass the missing proxy');
    await mesh.responder(pod, [8080]);
    const inb = await mesh.lab.exec(peer, 'curl', ['-sS', '--max-time', '3', `http://${pod.ip4}:8080/`], APP);
    assert.notEqual(inb.code, 0, 'inbound must not bypass the missing proxy');
    const state = inspectPod(mesh.pinDir(pod), pod.netnsName);
    assert.ok(Number(state.counters['in_drop_no_proxy']) >= 1, JSON.stringify(state.counters));
  });

  test('--fail-open passes traffic untouched until the proxy listens, then steers it', async () => {
    await mesh.init(pod, ['--fail-open']);
    assert.equal(await mesh.curl(pod, `http://${peer.ip4}:8080/`), `direct ${peer.ip4}:8080`);
    assert.equal(await mesh.curl(peer, `http://${pod.ip4}:8080/`), `direct ${pod.ip4}:8080`);
    const relay = await mesh.relay(pod, 'report');
    assert.equal(await mesh.curl(pod, `http://${peer.ip4}:8080/`), `outbound orig=${peer.ip4}:8080`);
    assert.equal(await mesh.curl(peer, `http://${pod.ip4}:8080/`), `inbound local=${pod.ip4}:8080`);
    relay.stop();
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(await mesh.curl(pod, `http://${peer.ip4}:8080/`), `direct ${peer.ip4}:8080`, 'proxy gone: open again');
  });

  test('init twice leaves one set of programs, with the new settings', async () => {
    const before = inspectPod(mesh.pinDir(pod), pod.netnsName);
    await mesh.init(pod, ['--outbound-ports-to-ignore', '8080']);
    const again = inspectPod(mesh.pinDir(pod), pod.netnsName);
    assert.deepEqual(again.hooks.map((h) => h.linkId), before.hooks.map((h) => h.linkId), 'same links, updated in place');
    assert.equal(again.settings?.mode, 'fail-closed');
    assert.deepEqual(again.outboundPortsIgnored, ['8080']);
    const attached = cgroupPrograms(pod.cgroup);
    assert.equal(attached.length, 8, 'connect4, connect6, sockops, getsockopt, bind4, bind6, getpeername4, getpeername6: once each');
    assert.equal(await mesh.curl(pod, `http://${peer.ip4}:8080/`), `direct ${peer.ip4}:8080`, 'new setting in force');
  });

  test('only the proxy uid may bind the proxy ports', async () => {
    for (const port of [4143, 4140, 4191, 4190]) {
      const denied = await mesh.lab.exec(pod, 'nc', ['-l', '-p', String(port)], APP, 1500);
      assert.match(denied.stderr, /Operation not permitted|Permission denied/, `app binding ${port}: ${denied.stderr}`);
    }
    const allowed = await mesh.lab.exec(pod, process.execPath, ['-e', "require('net').createServer().listen(4191,()=>{console.log('bound');process.exit(0)})"], PROXY);
    assert.equal(allowed.stdout.trim(), 'bound', allowed.stderr);
    const other = await mesh.lab.exec(pod, process.execPath, ['-e', "require('net').createServer().listen(4192,()=>{console.log('bound');process.exit(0)})"], APP);
    assert.equal(other.stdout.trim(), 'bound', 'other ports are free for the app');
    const state = inspectPod(mesh.pinDir(pod), pod.netnsName);
    assert.ok(Number(state.counters['bind_denied']) >= 4);
  });

  test('inspect --json and the table describe the pod', async () => {
    const json = await runCli(['inspect', '--json', '--pod-name', pod.netnsName]);
    assert.equal(json.code, 0, json.stderr);
    const parsed = JSON.parse(json.stdout) as { pods: Array<{ pod: string; hooks: Array<{ target: string }> }> };
    assert.equal(parsed.pods.length, 1);
    assert.equal(parsed.pods[0]!.hooks.length, 9);
    assert.ok(parsed.pods[0]!.hooks.some((h) => h.target === pod.cgroup), 'cgroup attach point resolved to its path');
    assert.ok(parsed.pods[0]!.hooks.some((h) => h.target === pod.netns), 'netns attach point resolved to its path');
    const table = await runCli(['inspect', '--pod-name', pod.netnsName]);
    assert.match(table.stdout, /cgroup_inet4_connect\s+mesh_connect4/);
  });

  test('reset removes every program, link, map and pin of the pod', async () => {
    const state = inspectPod(mesh.pinDir(pod), pod.netnsName);
    const progIds = new Set(state.hooks.map((h) => h.progId));
    const linkIds = new Set(state.hooks.map((h) => h.linkId));
    const maps = new Set(mapIds(mesh.pinDir(pod)));
    const r = await runCli(['reset', '--netns', pod.netns, '--cgroup', pod.cgroup]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(existsSync(mesh.pinDir(pod)), false);
    assert.equal(cgroupPrograms(pod.cgroup).length, 0);
    // Programs and maps are freed after an RCU grace period.
    let left: string[] = [];
    for (let i = 0; i < 40; i++) {
      const progs = bpftool<BpftoolProg[]>(['prog', 'show']);
      const links = bpftool<Array<{ id: number }>>(['link', 'show']);
      const mapsNow = bpftool<Array<{ id: number }>>(['map', 'show']);
      left = [
        ...progs.filter((p) => progIds.has(p.id) || (p.map_ids ?? []).some((m) => maps.has(m))).map((p) => `prog ${p.id} ${p.name}`),
        ...links.filter((l) => linkIds.has(l.id)).map((l) => `link ${l.id}`),
        ...mapsNow.filter((m) => maps.has(m.id)).map((m) => `map ${m.id}`),
      ];
      if (left.length === 0) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    assert.deepEqual(left, []);
    assert.equal(await mesh.curl(pod, `http://${peer.ip4}:8080/`), `direct ${peer.ip4}:8080`, 'traffic is plain again');
    const again = await runCli(['reset', '--netns', pod.netns]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /BPFMESH_E_NOT_INSTALLED/);
  });
});
