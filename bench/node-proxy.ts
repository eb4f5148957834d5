// BENCH_ONLY=node-proxy: memory of one node proxy (`bpfmesh node --proxy`)
// serving N pods against the same N pods with a `bpfmesh proxy` sidecar
// each, for N = 1, 20, 100 (BENCH_NODE_PROXY_PODS), idle and with 1000
// connections spread over the pods (opaque TCP to an echo server in an
// unmeshed pod on the same bridge). Pods are laid out as kubelet does and
// wired to a bridge; the agent runs as a child process in a cgroup under the
// node-wide attach root. RSS from /proc/<pid>/status (VmRSS). Both setups
// are measured in one run, one after the other, on the same pods.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../src/config/paths.js';
import { createLogger } from '../src/log/logger.js';
import { ensureBpffs } from '../src/intercept/mounts.js';
import { uninstallNode, type NodeScope } from '../src/intercept/node-wide.js';
import { startFakeKube, type FakeKube } from '../test/helpers/fake-kube.js';
import { KubeletNode } from '../test/helpers/kube-pods.js';
import { PodBridge, type BridgedPod } from '../test/helpers/pod-bridge.js';
import { APP, APP_SERVER, CLI, PROXY, PodProcess } from '../test/helpers/mesh.js';
import { cleanupOnExit } from '../src/lab/lab.js';
import { printTable, round } from './stats.js';

const SIZES = (process.env['BENCH_NODE_PROXY_PODS'] ?? '1,20,100').split(',').map(Number);
const CONNS = Number(process.env['BENCH_NODE_PROXY_CONNS'] ?? 1000);
const NODE = 'bench-np';
const POD_CONNS = join(REPO_ROOT, 'dist', 'bench', 'pod-conns.js');

const rssMb = (pid: number): number => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
};
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function until(what: string, pred: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`node-proxy bench: timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A child in a cgroup under the attach root (the node-wide hooks cover its sockets). */
function spawnInCgroup(cgroup: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  mkdirSync(cgroup, { recursive: true });
  return spawn('sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
}

export class AgentProc {
  readonly child: ChildProcess;
  readonly msgs: string[] = [];
  #buf = '';
  constructor(cgroup: string, kube: FakeKube, scope: NodeScope, proxy: boolean, extra: string[] = []) {
    const args = [CLI, 'node', ...(proxy ? ['--proxy'] : []), ...extra, '--kubeconfig', kube.kubeconfigPath, '--node-name', NODE, '--cgroup-root', scope.cgroupRoot, '--bpffs', scope.bpffs, '--admin-addr', '127.0.0.1:0', '--log-format', 'json'];
    this.child = spawnInCgroup(cgroup, args, { LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD: '1s' });
    this.child.stdout!.resume();
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => {
      this.#buf += d;
      for (let i = this.#buf.indexOf('\n'); i >= 0; i = this.#buf.indexOf('\n')) {
        const line = this.#buf.slice(0, i);
        this.#buf = this.#buf.slice(i + 1);
        try {
          this.msgs.push((JSON.parse(line) as { msg: string }).msg);
        } catch {
          this.msgs.push(line);
        }
      }
    });
  }
  count(msg: string): number {
    return this.msgs.filter((m) => m === msg).length;
  }
  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await exited;
  }
}

async function holdConns(cgroup: string, target: BridgedPod, pods: BridgedPod[], children: ChildProcess[]): Promise<ChildProcess> {
  const per = Math.ceil(CONNS / pods.length);
  const child = spawnInCgroup(cgroup, [POD_CONNS, target.ip, '9000', String(per), ...pods.map((p) => p.pod.netns)]);
  children.push(child);
  const p = new PodProcess(child);
  await p.waitFor((e) => e.event.startsWith('holding'), 120_000);
  return child;
}

export async function killed(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise((r) => c.once('exit', r));
  c.kill('SIGKILL');
  await exited;
}

export async function runNodeProxyBench(): Promise<Record<string, unknown>> {
  const kube = await startFakeKube();
  const node = new KubeletNode();
  const bridge = new PodBridge(node);
  const bpffs = mkdtempSync(join(tmpdir(), 'bpfmesh-bench-np-'));
  ensureBpffs(bpffs, false);
  const scope: NodeScope = { bpffs, bpffsExplicit: true, cgroupRoot: node.cgroupRoot };
  const agentCgroup = join(node.cgroupRoot, 'system', 'agent');
  const loadCgroup = join(node.cgroupRoot, 'system', 'load');
  const children: ChildProcess[] = [];
  const rows: Array<Record<string, number>> = [];
  let tornDown = false;
  // Also on a signal (cleanupOnExit): the agent and load children, pins, pods, hub, bpffs.
  const teardown = (): void => {
    if (tornDown) return;
    tornDown = true;
    for (const c of children) c.kill('SIGKILL');
    try {
      uninstallNode(scope, createLogger({ logFormat: 'plain', logLevel: 'warn' }));
    } finally {
      node.cleanup();
      bridge.cleanup();
      execFileSync('umount', [bpffs]);
      rmdirSync(bpffs);
    }
  };
  const unregister = cleanupOnExit({ cleanup: teardown });
  try {
    const echo = bridge.attach(await node.addPod());
    const app = new PodProcess(node.spawn(echo.pod, process.execPath, [APP_SERVER], APP));
    children.push(app.child);
    await app.waitFor((e) => e.event === 'ready');
    const max = Math.max(...SIZES);
    process.stdout.write(`\nnode-proxy: making ${max} pods on a bridge...\n`);
    const pods: BridgedPod[] = [];
    for (let i = 0; i < max; i++) pods.push(bridge.attach(await node.addPod()));
    for (const n of SIZES) {
      const some = pods.slice(0, n);
      for (const [i, p] of some.entries()) kube.setPod({ metadata: { name: `p${i}`, namespace: 'bench', uid: p.pod.uid, annotations: { 'linkerd.io/inject': 'enabled' } }, spec: { nodeName: NODE } });

      // Sidecars: the agent enrolls (no --proxy), a `bpfmesh proxy` runs in each pod as the proxy uid.
      let agent = new AgentProc(agentCgroup, kube, scope, false);
      children.push(agent.child);
      await until(`${n} pods enrolled`, () => agent.count('interception in place') + agent.count('interception updated') + agent.count('interception adopted') >= n, 60_000);
      const sidecars: ChildProcess[] = [];
      for (let i = 0; i < n; i += 10) {
        const batch = some.slice(i, i + 10).map((p) => node.spawn(p.pod, process.execPath, [CLI, 'proxy'], PROXY));
        sidecars.push(...batch);
        children.push(...batch);
        await Promise.all(batch.map((c) => new Promise<void>((resolve, reject) => {
          let err = '';
          c.stderr!.on('data', (d: Buffer) => {
            err += d.toString();
            if (err.includes('admin listening')) resolve();
          });
          c.stdout!.resume();
          c.once('exit', () => reject(new Error(`sidecar exited: ${err.slice(-500)}`)));
        })));
      }
      await sleep(2000);
      const agentAloneMb = rssMb(agent.child.pid!);
      const sidecarIdleMb = sidecars.reduce((a, c) => a + rssMb(c.pid!), 0);
      let load = await holdConns(loadCgroup, echo, some, children);
      await sleep(1000);
      const sidecarConnsMb = sidecars.reduce((a, c) => a + rssMb(c.pid!), 0);
      await killed(load);
      for (const c of sidecars) await killed(c);
      await agent.stop();

      // The node proxy: the same pods, one process.
      agent = new AgentProc(agentCgroup, kube, scope, true);
      children.push(agent.child);
      await until(`${n} pods served by the node proxy`, () => agent.count('serving pod') >= n || agent.child.exitCode !== null, 60_000);
      if (agent.child.exitCode !== null) throw new Error(`node proxy exited: ${agent.msgs.slice(-5).join(' | ')}`);
      await sleep(2000);
      const nodeIdleMb = rssMb(agent.child.pid!);
      load = await holdConns(loadCgroup, echo, some, children);
      await sleep(1000);
      const nodeConnsMb = rssMb(agent.child.pid!);
      await killed(load);
      await agent.stop();
      rows.push({ pods: n, sidecarsIdleMb: round(sidecarIdleMb), agentWithoutProxyMb: round(agentAloneMb), nodeProxyIdleMb: round(nodeIdleMb), sidecarsConnsMb: round(sidecarConnsMb), nodeProxyConnsMb: round(nodeConnsMb) });
    }
    printTable(`node proxy vs a sidecar per pod: RSS in MB, idle and with ${CONNS} connections spread over the pods (target: 100 pods under 150 MB)`, ['pods', 'sidecars idle', 'node proxy idle', 'ratio', `sidecars ${CONNS} conns`, `node proxy ${CONNS} conns`, 'ratio', 'agent alone'], rows.map((r) => [
      r['pods']!, r['sidecarsIdleMb']!, r['nodeProxyIdleMb']!, round(r['sidecarsIdleMb']! / r['nodeProxyIdleMb']!), r['sidecarsConnsMb']!, r['nodeProxyConnsMb']!, round(r['sidecarsConnsMb']! / r['nodeProxyConnsMb']!), r['agentWithoutProxyMb']!,
    ]));
    return { conns: CONNS, rows, targetMb100Pods: 150 };
  } finally {
    await Promise.all(children.map((c) => killed(c)));
    try {
      teardown();
    } finally {
      unregister();
      await kube.close();
    }
  }
}

if (require.main === module) {
  runNodeProxyBench().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
