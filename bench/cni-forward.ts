// BENCH_ONLY=cni-forward: CNI ADD latency of bin/bpfmesh-cni, forwarded to a
// running node agent (`bpfmesh node --cni-socket`) against run in a Node.js
// process of its own (no agent socket), alternated in one run: ROUNDS pods
// each way, every ADD followed by its DEL. Wall time of the plugin binary as
// a runtime runs it (execPlugin), node-wide programs already installed.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, rmdirSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { REPO_ROOT } from '../src/config/paths.js';
import { createLogger } from '../src/log/logger.js';
import { ensureBpffs } from '../src/intercept/mounts.js';
import { uninstallNode, type NodeScope } from '../src/intercept/node-wide.js';
import { startFakeKube } from '../test/helpers/fake-kube.js';
import { KubeletNode } from '../test/helpers/kube-pods.js';
import { execPlugin, type CniRuntime } from '../test/helpers/cni-runtime.js';
import { CLI } from '../test/helpers/mesh.js';
import { median, printTable, round } from './stats.js';

const ROUNDS = Number(process.env['BENCH_CNI_ROUNDS'] ?? 20);

export async function runCniForwardBench(): Promise<Record<string, unknown>> {
  const kube = await startFakeKube();
  const node = new KubeletNode();
  const bpffs = mkdtempSync(join(tmpdir(), 'bpfmesh-bench-cni-'));
  ensureBpffs(bpffs, false);
  const scope: NodeScope = { bpffs, bpffsExplicit: true, cgroupRoot: node.cgroupRoot };
  const tmp = mkdtempSync(join(tmpdir(), 'bpfmesh-bench-cni-bin-'));
  let agent: ChildProcess | undefined;
  try {
    mkdirSync(join(tmp, 'bin'));
    symlinkSync(join(REPO_ROOT, 'bin', 'bpfmesh-cni'), join(tmp, 'bin', 'bpfmesh-cni'));
    const sock = join(tmp, 'run', 'cni.sock');
    let agentLog = '';
    agent = spawn(process.execPath, [CLI, 'node', '--kubeconfig', kube.kubeconfigPath, '--node-name', 'n1', '--cgroup-root', node.cgroupRoot, '--bpffs', bpffs, '--admin-addr', '127.0.0.1:0', '--log-format', 'json', '--cni-socket', sock], { stdio: ['ignore', 'ignore', 'pipe'] });
    agent.stderr!.setEncoding('utf8');
    agent.stderr!.on('data', (d: string) => (agentLog += d));
    const deadline = Date.now() + 15_000;
    while (!agentLog.includes('reconciled; ready')) {
      if (Date.now() > deadline || agent.exitCode !== null) throw new Error(`cni-forward bench: agent not ready: ${agentLog.slice(-500)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const conf = JSON.stringify({
      cniVersion: '1.0.0',
      name: 'bench-net',
      type: 'bpfmesh-cni',
      log_level: 'warn',
      linkerd: { 'incoming-proxy-port': 4143, 'outgoing-proxy-port': 4140, 'proxy-uid': 2102 },
      bpfmesh: { cgroup_root: node.cgroupRoot, bpffs },
      prevResult: { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: 'x' }], ips: [{ address: '10.99.0.2/24', interface: 0 }] },
    });
    const forwarded: CniRuntime = { cniPath: [join(tmp, 'bin')], env: { BPFMESH_NODE: process.execPath, BPFMESH_CNI_SOCKET: sock } };
    const inProcess: CniRuntime = { cniPath: [join(tmp, 'bin')], env: { BPFMESH_NODE: process.execPath, BPFMESH_CNI_SOCKET: join(tmp, 'no-agent.sock') } };
    const times = { forwarded: [] as number[], inProcess: [] as number[] };
    for (let i = 0; i < ROUNDS; i++) {
      for (const [name, rt] of [['forwarded', forwarded], ['inProcess', inProcess]] as const) {
        const pod = node.createPod();
        const id = `b${i}${name[0]}`;
        const t0 = performance.now();
        const add = await execPlugin(rt, 'bpfmesh-cni', 'ADD', { containerId: id, netns: pod.netns, ifname: 'eth0' }, conf);
        times[name].push(performance.now() - t0);
        if (add.code !== 0) throw new Error(`cni-forward bench: ADD ${name} failed: ${add.stdout} ${add.stderr}`);
        await execPlugin(rt, 'bpfmesh-cni', 'DEL', { containerId: id, netns: pod.netns, ifname: 'eth0' }, conf);
        node.removePod(pod);
      }
    }
    const result = { rounds: ROUNDS, forwardedMedianMs: round(median(times.forwarded)), inProcessMedianMs: round(median(times.inProcess)), forwardedMaxMs: round(Math.max(...times.forwarded)), inProcessMaxMs: round(Math.max(...times.inProcess)) };
    printTable(`CNI ADD, bin/bpfmesh-cni as a runtime runs it: forwarded to the node agent vs a Node.js process per call (${ROUNDS} each, alternated)`, ['path', 'median ms', 'max ms'], [
      ['forwarded (bpfmesh node --cni-socket)', result.forwardedMedianMs, result.forwardedMaxMs],
      ['in a process of its own', result.inProcessMedianMs, result.inProcessMaxMs],
      ['ratio in-process / forwarded', round(result.inProcessMedianMs / result.forwardedMedianMs), ''],
    ]);
    return result;
  } finally {
    if (agent !== undefined && agent.exitCode === null) {
      const gone = new Promise((r) => agent!.once('exit', r));
      agent.kill('SIGKILL');
      await gone;
    }
    try {
      uninstallNode(scope, createLogger({ logFormat: 'plain', logLevel: 'warn' }));
    } finally {
      node.cleanup();
      execFileSync('umount', [bpffs]);
      rmdirSync(bpffs);
      rmSync(tmp, { recursive: true, force: true });
      await kube.close();
    }
  }
}

if (require.main === module) {
  runCniForwardBench().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
