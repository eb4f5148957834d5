// Outbound redirect (cgroup/connect4+6, sockops, cgroup/getsockopt) on the
// real kernel, with curl and nc as unmodified clients and a proxy that asks
// SO_ORIGINAL_DST. Kernel floor: 5.15 (bpf_get_netns_cookie in sockops/getsockopt, sk_lookup).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, MeshLab, PROXY } from '../helpers/mesh.js';
import type { LabPod } from '../../src/lab/lab.js';
import { closeMaps, mapsOfPinDir } from '../../src/intercept/layout.js';
import { writePolicy } from '../../src/intercept/rules.js';
import { netnsCookieOf } from '../../src/intercept/pod.js';
import { parseInitFlags } from '../../src/config/pod-flags.js';
import { inspectPod } from '../../src/admin/inspect.js';

const skip = kernelSkipReason();

describe('outbound redirect', { skip, timeout: 120_000 }, () => {
  let mesh: MeshLab;
  let a: LabPod;
  let b: LabPod;
  let c: LabPod; // 10.81.0.4, in no ignore list

  before(async () => {
    mesh = new MeshLab(81);
    a = mesh.pod('a');
    b = mesh.pod('b');
    c = mesh.pod('c');
    await mesh.init(a, ['--proxy-uid', '2102', '--proxy-gid', '2103', '--outbound-ports-to-ignore', '9001,9100-9110', '--subnets-to-ignore', '10.81.0.3/32,fd81::3/128']);
    await mesh.relay(a, 'report', false);
    await mesh.responder(b, [8080, 9001, 9105, 9200]);
    await mesh.responder(a, [7000]);
    await mesh.responder(c, [9200]);
  });
  after(() => mesh?.cleanup());

  test('curl to another pod reaches the proxy, which learns the original destination (IPv4)', async () => {
    // 10.81.0.9 does not exist: only the redirect can answer.
    assert.equal(await mesh.curl(a, 'http://10.81.0.9:8080/x'), 'outbound orig=10.81.0.9:8080');
  });

  test('IPv6 destinations are redirected to [::1] and answered with a sockaddr_in6', async () => {
    assert.equal(await mesh.curl(a, 'http://[fd81::9]:8443/'), 'outbound orig=[fd81::9]:8443');
  });

  test('nc as a client: raw TCP is redirected too', async () => {
    assert.equal(await mesh.nc(a, '10.81.0.9', 5432), 'outbound orig=10.81.0.9:5432');
  });

  test("the proxy's uid and gid are exempt", async () => {
    assert.equal(await mesh.curl(a, `http://${c.ip4}:9200/`), `outbound orig=${c.ip4}:9200`, 'an app is redirected');
    assert.equal(await mesh.curl(a, `http://${c.ip4}:9200/`, PROXY), `direct ${c.ip4}:9200`, 'proxy uid');
    assert.equal(await mesh.curl(a, `http://${c.ip4}:9200/`, { uid: 3000, gid: 2103 }), `direct ${c.ip4}:9200`, 'proxy gid');
  });

  test('loopback destinations pass untouched', async () => {
    assert.equal(await mesh.curl(a, 'http://127.0.0.1:7000/'), 'direct 127.0.0.1:7000');
    assert.equal(await mesh.curl(a, 'http://[::1]:7000/'), 'direct ::1:7000');
  });

  test('ignored ports pass untouched, single ports and ranges', async () => {
    assert.equal(await mesh.curl(a, `http://10.81.0.3:9001/`), 'direct 10.81.0.3:9001');
    assert.equal(await mesh.curl(a, `http://10.81.0.3:9105/`), 'direct 10.81.0.3:9105');
  });

  test('ignored subnets pass untouched, IPv4 and IPv6', async () => {
    assert.equal(await mesh.curl(a, `http://10.81.0.3:8080/`), 'direct 10.81.0.3:8080');
    assert.equal(await mesh.curl(a, `http://[fd81::3]:8080/`), 'direct fd81::3:8080');
  });

  test('settings changed in the maps take effect on the next connection, with no reload', async () => {
    const before = inspectPod(mesh.pinDir(a), a.netnsName).hooks.map((h) => h.progId);
    assert.equal(await mesh.curl(a, 'http://10.81.0.9:7777/'), 'outbound orig=10.81.0.9:7777');
    const maps = mapsOfPinDir(mesh.pinDir(a));
    const cookie = netnsCookieOf(a.netns);
    try {
      writePolicy(maps, cookie, parseInitFlags(['--proxy-uid', '2102', '--outbound-ports-to-ignore', '7777', '--subnets-to-ignore', '']));
      await assertFails(a, 'http://10.81.0.9:7777/', 'now passes untouched to an address nobody has');
      assert.equal(await mesh.curl(a, 'http://10.81.0.3:9001/'), 'outbound orig=10.81.0.3:9001', 'no longer ignored');
    } finally {
      writePolicy(maps, cookie, parseInitFlags(['--proxy-uid', '2102', '--proxy-gid', '2103', '--outbound-ports-to-ignore', '9001,9100-9110', '--subnets-to-ignore', '10.81.0.3/32,fd81::3/128']));
      closeMaps(maps);
    }
    assert.deepEqual(inspectPod(mesh.pinDir(a), a.netnsName).hooks.map((h) => h.progId), before, 'same programs');
  });

  test('counters and inspect explain what happened', () => {
    const state = inspectPod(mesh.pinDir(a), a.netnsName);
    assert.ok(Number(state.counters['out_redirected']) >= 4, JSON.stringify(state.counters));
    assert.ok(Number(state.counters['orig_dst_answered']) >= 4);
    assert.ok(Number(state.counters['out_pass_proxy']) >= 2);
    assert.ok(Number(state.counters['out_pass_port']) >= 2);
    assert.ok(Number(state.counters['out_pass_subnet']) >= 2);
    assert.deepEqual(state.problems, []);
    assert.equal(state.hooks.length, 9);
  });

  async function assertFails(pod: LabPod, url: string, what: string, as: { uid: number; gid: number } = APP): Promise<void> {
    const r = await mesh.lab.exec(pod, 'curl', ['-sS', '-g', '--max-time', '2', url], as);
    assert.notEqual(r.code, 0, `${what}: expected no answer, got ${r.stdout}`);
  }
});
