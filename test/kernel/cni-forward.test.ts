// The CNI fast path: bin/bpfmesh-cni hands the call to a running node agent
// (`bpfmesh node --cni-socket`) over a unix socket, so an ADD starts no
// Node.js process; without the agent (no socket, or nobody listening on
// it) the call runs in a process of its own as before. Real plugin binary,
// real kernel, a private bpffs and cgroup root, the fake Kubernetes API.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, rmdirSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSkipReason } from '../helpers/root.js';
import { CLI } from '../helpers/mesh.js';
import { startFakeKube, type FakeKube } from '../helpers/fake-kube.js';
import { KubeletNode, type NodePod } from '../helpers/kube-pods.js';
import { execPlugin, type CniRuntime, type Json } from '../helpers/cni-runtime.js';
import { REPO_ROOT } from '../../src/config/paths.js';
import { ensureBpffs } from '../../src/intercept/mounts.js';
import { listEnrolled, uninstallNode, type NodeScope } from '../../src/intercept/node-wide.js';
import { createLogger } from '../../src/log/logger.js';

const skip = kernelSkipReason();

describe('bpfmesh-cni forwarded to the node agent', { skip, timeout: 300_000 }, () => {
  let kube: FakeKube;
  let node: KubeletNode;
  let bpffs: string;
  let tmp: string;
  let scope: NodeScope;
  let agent: ChildProcess | undefined;
  let agentLog = '';
  let rt: CniRuntime;
  let sock: string;
  const log = createLogger({ logFormat: 'plain', logLevel: 'error' });

  const conf = (): string =>
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'fwd-net',
      type: 'bpfmesh-cni',
      log_level: 'debug',
      linkerd: { 'incoming-proxy-port': 4143, 'outgoing-proxy-port': 4140, 'proxy-uid': 2102, 'inbound-ports-to-ignore': ['4191', '4190'] },
      bpfmesh: { cgroup_root: scope.cgroupRoot, bpffs },
      prevResult: { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: 'x' }], ips: [{ address: '10.99.0.2/24', interface: 0 }] },
    });
  const call = (command: string, pod: NodePod, id: string) => execPlugin(rt, 'bpfmesh-cni', command, { containerId: id, netns: pod.netns, ifname: 'eth0' }, conf());
  const served = (): number => agentLog.split('\n').filter((l) => l.includes('CNI call served by the agent')).length;
  const enrolled = (id: string): boolean => listEnrolled(scope).some((e) => e.id === id);

  before(async () => {
    kube = await startFakeKube();
    node = new KubeletNode();
    bpffs = mkdtempSync(join(tmpdir(), 'bpfmesh-cni-fwd-'));
    ensureBpffs(bpffs, false);
    scope = { bpffs, bpffsExplicit: true, cgroupRoot: node.cgroupRoot };
    tmp = mkdtempSync(join(tmpdir(), 'bpfmesh-cni-fwd-bin-'));
    mkdirSync(join(tmp, 'bin'));
    symlinkSync(join(REPO_ROOT, 'bin', 'bpfmesh-cni'), join(tmp, 'bin', 'bpfmesh-cni'));
    sock = join(tmp, 'run', 'cni.sock');
    rt = { cniPath: [join(tmp, 'bin')], env: { BPFMESH_NODE: process.execPath, BPFMESH_CNI_SOCKET: sock } };
    agent = spawn(process.execPath, [CLI, 'node', '--kubeconfig', kube.kubeconfigPath, '--node-name', 'n1', '--cgroup-root', node.cgroupRoot, '--bpffs', bpffs, '--admin-addr', '127.0.0.1:0', '--log-format', 'json', '--log-level', 'debug', '--cni-socket', sock], { stdio: ['ignore', 'ignore', 'pipe'] });
    agent.stderr!.setEncoding('utf8');
    agent.stderr!.on('data', (d: string) => (agentLog += d));
    // Generous: under emulation (vagrant/kernels, TCG) the agent's start alone takes seconds.
    const deadline = Date.now() + 90_000;
    while (!agentLog.includes('reconciled; ready')) {
      if (Date.now() > deadline || agent.exitCode !== null) throw new Error(`agent not ready: ${agentLog.slice(-800)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  });

  after(async () => {
    try {
      if (agent !== undefined && agent.exitCode === null && agent.signalCode === null) {
        const gone = new Promise((r) => agent!.once('exit', r));
        agent.kill('SIGKILL');
        await gone;
      }
      if (scope !== undefined) uninstallNode(scope, log);
    } finally {
      node?.cleanup();
      if (bpffs !== undefined) {
        execFileSync('umount', [bpffs]);
        rmdirSync(bpffs);
      }
      if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
      await kube?.close();
    }
  });

  test('with the agent listening, ADD and DEL are served by it (no Node.js process per call)', async () => {
    const pod = node.createPod();
    const before = served();
    const add = await call('ADD', pod, 'fwd-a');
    assert.equal(add.code, 0, add.stdout + add.stderr);
    assert.equal((JSON.parse(add.stdout) as Json)['cniVersion'], '1.0.0');
    assert.deepEqual((JSON.parse(add.stdout) as { ips: unknown })['ips'], [{ address: '10.99.0.2/24', interface: 0 }], 'prevResult not passed through');
    assert.ok(enrolled('fwd-a'), 'not enrolled');
    assert.equal(served(), before + 1, 'the agent did not serve the ADD');
    assert.doesNotMatch(add.stderr, /did not answer/, 'the forwarder fell back to a process of its own');
    const del = await call('DEL', pod, 'fwd-a');
    assert.equal(del.code, 0, del.stdout + del.stderr);
    assert.ok(!enrolled('fwd-a'), 'DEL did not withdraw');
    assert.equal(served(), before + 2);
    assert.doesNotMatch(del.stderr, /did not answer/);
  });

  test('errors come back as the CNI error object and exit code', async () => {
    const pod = node.createPod();
    const r = await execPlugin(rt, 'bpfmesh-cni', 'ADD', { containerId: 'fwd-bad', netns: pod.netns, ifname: 'eth0' }, JSON.stringify({ ...(JSON.parse(conf()) as Json), prevResult: undefined }));
    assert.equal(r.code, 1);
    assert.equal((JSON.parse(r.stdout) as { code: number }).code, 7, r.stdout);
    assert.doesNotMatch(r.stderr, /did not answer/);
  });

  test('with the agent gone (its socket left behind), the plugin runs in a process of its own', async () => {
    const gone = new Promise((r) => agent!.once('exit', r));
    agent!.kill('SIGKILL');
    await gone;
    const pod = node.createPod();
    const before = served();
    const add = await call('ADD', pod, 'fwd-b');
    assert.equal(add.code, 0, add.stdout + add.stderr);
    assert.ok(enrolled('fwd-b'), 'not enrolled by the fallback');
    assert.equal(served(), before);
    const del = await call('DEL', pod, 'fwd-b');
    assert.equal(del.code, 0, del.stdout + del.stderr);
  });
});
