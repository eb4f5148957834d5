// The node agent's parts that need no kernel: its flags, which pods it
// meshes and with what policy (annotations over defaults), and finding a
// pod's netns from kubelet's cgroup layout (on a fake cgroup tree and /proc).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { linkSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNodeFlags, toPolicy } from '../../src/node/flags.js';
import { meshDecision, policyKey, policyOf } from '../../src/node/annotations.js';
import { PodNetnsFinder } from '../../src/node/pod-netns.js';
import { parseInitFlags } from '../../src/config/pod-flags.js';
import type { KubePod } from '../../src/kube/client.js';

const code = (c: string) => (err: unknown) => (err as { code?: string }).code === c;
const pod = (annotations: Record<string, string> = {}, spec: KubePod['spec'] = {}, status: KubePod['status'] = {}): KubePod => ({
  metadata: { name: 'web', namespace: 'shop', uid: '0b0e3c3a-7d7e-4a55-9d7e-3f1d2c4b5a69', annotations },
  spec: { nodeName: 'n1', ...spec },
  status,
});

describe('bpfmesh node flags', () => {
  test('defaults: admin 0.0.0.0:4192, /proc, /sys/fs/bpf, and the pod defaults of bpfmesh init', () => {
    const o = parseNodeFlags(['--node-name', 'n1'], {});
    assert.equal(o.nodeName, 'n1');
    assert.equal(o.adminHost, '0.0.0.0');
    assert.equal(o.adminPort, 4192);
    assert.equal(o.hostProc, '/proc');
    assert.equal(o.bpffs, '/sys/fs/bpf');
    assert.equal(o.bpffsExplicit, false);
    assert.equal(o.kubeconfig, undefined);
    assert.equal(o.cgroupRoot, undefined);
    assert.deepEqual(o.podDefaults, toPolicy(parseInitFlags([])));
  });

  test('NODE_NAME, pod defaults, admin address forms', () => {
    const o = parseNodeFlags(
      ['--proxy-uid', '3000', '--proxy-gid', '3001', '--incoming-proxy-port', '5143', '--outgoing-proxy-port', '5140', '--admin-port', '5191', '--control-port', '5190', '--fail-open', '--no-sockpath', '--admin-addr', '[::1]:9000', '--cgroup-root', '/sys/fs/cgroup/kubepods/', '--host-proc', '/host/proc', '--bpffs', '/b', '--log-format', 'json', '--log-level', 'DEBUG'],
      { NODE_NAME: 'from-env' },
    );
    assert.equal(o.nodeName, 'from-env');
    assert.deepEqual([o.adminHost, o.adminPort], ['::1', 9000]);
    assert.equal(o.cgroupRoot, '/sys/fs/cgroup/kubepods');
    assert.equal(o.hostProc, '/host/proc');
    assert.equal(o.bpffsExplicit, true);
    assert.equal(o.logLevel, 'debug');
    const p = o.podDefaults;
    assert.deepEqual([p.proxyUid, p.proxyGid, p.incomingProxyPort, p.outgoingProxyPort, p.adminPort, p.controlPort, p.failOpen, p.sockpath], [3000, 3001, 5143, 5140, 5191, 5190, true, false]);
  });

  test('bad flags are refused with stable codes', () => {
    assert.throws(() => parseNodeFlags([], {}), /--node-name: required/);
    assert.throws(() => parseNodeFlags(['--node-name', 'n', '--admin-addr', 'nope'], {}), code('BPFMESH_E_BAD_FLAG'));
    assert.throws(() => parseNodeFlags(['--node-name', 'n', '--incoming-proxy-port', '70000'], {}), code('BPFMESH_E_BAD_PORT'));
    assert.throws(() => parseNodeFlags(['--node-name', 'n', '--netns', '/x'], {}), code('BPFMESH_E_BAD_FLAG'));
    assert.throws(() => parseNodeFlags(['--node-name', 'n', '--log-format', 'xml'], {}), code('BPFMESH_E_BAD_FLAG'));
  });
});

describe('which pods are meshed, and how', () => {
  test('linkerd.io/inject: enabled, or a linkerd-proxy container; disabled wins; host network and completed pods never', () => {
    assert.deepEqual(meshDecision(pod({ 'linkerd.io/inject': 'enabled' })), { mesh: true });
    assert.deepEqual(meshDecision(pod()), { mesh: false, reason: 'not_annotated' });
    assert.deepEqual(meshDecision(pod({}, { containers: [{ name: 'app' }, { name: 'linkerd-proxy' }] })), { mesh: true });
    assert.deepEqual(meshDecision(pod({}, { initContainers: [{ name: 'linkerd-proxy', restartPolicy: 'Always' }] })), { mesh: true });
    assert.deepEqual(meshDecision(pod({ 'linkerd.io/inject': 'disabled' }, { containers: [{ name: 'linkerd-proxy' }] })), { mesh: false, reason: 'disabled' });
    assert.deepEqual(meshDecision(pod({ 'linkerd.io/inject': 'enabled' }, { hostNetwork: true })), { mesh: false, reason: 'host_network' });
    assert.deepEqual(meshDecision(pod({ 'linkerd.io/inject': 'enabled' }, {}, { phase: 'Succeeded' })), { mesh: false, reason: 'completed' });
  });

  test('annotations override the defaults', () => {
    const defaults = ['--proxy-uid', '2102', '--fail-open'];
    const p = policyOf(
      pod({
        'config.linkerd.io/skip-inbound-ports': '25, 8000-8100',
        'config.linkerd.io/skip-outbound-ports': '443',
        'config.linkerd.io/skip-subnets': '10.0.0.0/8,fd00::/8',
        'config.linkerd.io/proxy-uid': '3000',
        'config.linkerd.io/proxy-gid': '3001',
      }),
      defaults,
    );
    assert.deepEqual(p.inboundPortsToIgnore, [{ lo: 25, hi: 25 }, { lo: 8000, hi: 8100 }]);
    assert.deepEqual(p.outboundPortsToIgnore, [{ lo: 443, hi: 443 }]);
    assert.equal(p.subnetsToIgnore.length, 2);
    assert.equal(p.proxyUid, 3000);
    assert.equal(p.proxyGid, 3001);
    assert.equal(p.failOpen, true, 'defaults the pod does not override stay');
    assert.equal(policyOf(pod(), defaults).proxyUid, 2102);
    assert.notEqual(policyKey(p), policyKey(policyOf(pod(), defaults)));
    assert.equal(policyKey(policyOf(pod(), defaults)), policyKey(policyOf(pod(), defaults)));
  });

  test('a bad annotation is BPFMESH_E_BAD_ANNOTATION and names the annotation and the pod', () => {
    for (const [name, value] of [
      ['config.linkerd.io/skip-outbound-ports', '80,http'],
      ['config.linkerd.io/skip-inbound-ports', '90-80'],
      ['config.linkerd.io/skip-subnets', '10.0.0.0/33'],
      ['config.linkerd.io/proxy-uid', 'root'],
      ['config.linkerd.io/proxy-gid', '-5'],
    ] as const) {
      assert.throws(
        () => policyOf(pod({ [name]: value }), []),
        (err: Error & { code?: string }) => err.code === 'BPFMESH_E_BAD_ANNOTATION' && err.message.includes(name) && err.message.includes('shop/web'),
        name,
      );
    }
  });
});

describe('PodNetnsFinder on a kubelet-shaped tree', () => {
  let dir: string;
  let cg: string;
  let proc: string;
  const uid1 = '11111111-2222-3333-4444-555555555555';
  const uid2 = '66666666-7777-8888-9999-000000000000';
  const uid3 = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee';
  const uid4 = 'abababab-bbbb-cccc-dddd-eeeeeeeeeeee';

  const procEntry = (pid: number, nsFile?: string): void => {
    mkdirSync(join(proc, String(pid), 'ns'), { recursive: true });
    if (nsFile === undefined) writeFileSync(join(proc, String(pid), 'ns', 'net'), `netns of ${pid}`);
    else linkSync(nsFile, join(proc, String(pid), 'ns', 'net')); // same inode = same netns
  };
  const cgroupDir = (path: string, pids: number[] = []): void => {
    mkdirSync(join(cg, path), { recursive: true });
    writeFileSync(join(cg, path, 'cgroup.procs'), pids.map((p) => `${p}\n`).join(''));
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'bpfmesh-finder-'));
    cg = join(dir, 'cgroup');
    proc = join(dir, 'proc');
    procEntry(1);
    procEntry(100);
    procEntry(200);
    procEntry(300, join(proc, '1', 'ns', 'net'));
    cgroupDir('system.slice/sshd.service', [7]);
    // cgroupfs driver: processes in container cgroups below the pod's.
    cgroupDir(`kubepods/burstable/pod${uid1}`);
    cgroupDir(`kubepods/burstable/pod${uid1}/0123abcd`, [100]);
    // systemd driver.
    cgroupDir(`kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${uid2.replace(/-/g, '_')}.slice/cri-containerd-x.scope`, [200]);
    // a pod in the node's netns, and one with no process yet.
    cgroupDir(`kubepods/pod${uid3}`, [300]);
    cgroupDir(`kubepods/pod${uid4}`);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('finds both layouts and the netns file of a process in the pod', () => {
    const f = new PodNetnsFinder(cg, proc);
    const r1 = f.find(uid1);
    assert.ok('found' in r1);
    assert.equal(r1.found.cgroup, join(cg, `kubepods/burstable/pod${uid1}`));
    assert.equal(r1.found.pid, 100);
    assert.equal(r1.found.path, join(proc, '100', 'ns', 'net'));
    const r2 = f.find(uid2);
    assert.ok('found' in r2);
    assert.equal(r2.found.pid, 200);
    assert.notEqual(r1.found.ino, r2.found.ino);
  });

  test('no cgroup, no process, and the node netns are told apart', async () => {
    const f = new PodNetnsFinder(cg, proc);
    assert.deepEqual(f.find('99999999-0000-0000-0000-000000000000'), { missing: 'no_cgroup' });
    assert.deepEqual(f.find(uid4), { missing: 'no_process' });
    assert.deepEqual(f.find(uid3), { missing: 'host_netns' });
    // A pod cgroup that appears later, under a parent not seen yet, is found on a later try.
    const uid5 = 'cdcdcdcd-bbbb-cccc-dddd-eeeeeeeeeeee';
    cgroupDir(`kubepods/guaranteed-ish/pod${uid5}`, [200]);
    await new Promise((r) => setTimeout(r, 120));
    assert.ok('found' in f.find(uid5));
  });
});
