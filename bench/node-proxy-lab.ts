// What the node proxy's benches share: a node of kubelet-style pods on a
// bridge with a private bpffs and the fake Kubernetes API, the agent as a
// child in a cgroup under the attach root, sidecars in pods, and teardown of
// all of it (also on a signal), so each bench only says what it measures.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../src/log/logger.js';
import { ensureBpffs } from '../src/intercept/mounts.js';
import { uninstallNode, type NodeScope } from '../src/intercept/node-wide.js';
import { cleanupOnExit } from '../src/lab/lab.js';
import { startFakeKube, type FakeKube } from '../test/helpers/fake-kube.js';
import { KubeletNode, type NodePod } from '../test/helpers/kube-pods.js';
import { PodBridge } from '../test/helpers/pod-bridge.js';
import { CLI, PROXY } from '../test/helpers/mesh.js';
import { AgentProcess } from '../test/helpers/node-agent-proc.js';

export const NODE = 'bench-np';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function until(what: string, pred: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`node-proxy bench: timed out waiting for ${what}`);
    await sleep(50);
  }
}

export const rssMb = (pid: number): number => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
};

export async function killed(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise((r) => c.once('exit', r));
  c.kill('SIGKILL');
  await exited;
}

/** A node child in a cgroup under the attach root (the node-wide hooks cover its sockets); in netns when given. */
export function spawnInCgroup(cgroup: string, args: string[], env: NodeJS.ProcessEnv = {}, netns?: string): ChildProcess {
  mkdirSync(cgroup, { recursive: true });
  const enter = netns === undefined ? [] : ['nsenter', `--net=${netns}`, '--'];
  return spawn('sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, ...enter, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
}

export class AgentProc extends AgentProcess {
  constructor(cgroup: string, kube: FakeKube, scope: NodeScope, proxy: boolean, extra: string[] = [], env: NodeJS.ProcessEnv = {}, netns?: string) {
    const args = [...(proxy ? ['--proxy'] : []), ...extra, '--kubeconfig', kube.kubeconfigPath, '--node-name', NODE, '--cgroup-root', scope.cgroupRoot, '--bpffs', scope.bpffs, '--admin-addr', '127.0.0.1:0', '--log-format', 'json'];
    super(args, { cgroup, env: { LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD: '1s', ...env }, ...(netns === undefined ? {} : { netns }) });
  }
  /** Pods whose interception is in place (new, updated or adopted). */
  get enrolled(): number {
    return this.count('interception in place') + this.count('interception updated') + this.count('interception adopted');
  }
  /** The last log records whose text matches, for errors. */
  last(re: RegExp, n = 3): string {
    return this.records
      .map((r) => JSON.stringify(r))
      .filter((l) => re.test(l))
      .slice(-n)
      .join(' | ');
  }
  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    this.child.kill('SIGTERM');
    await this.exited();
  }
}

export class NodeProxyLab {
  readonly kube: FakeKube;
  readonly node = new KubeletNode();
  readonly bridge: PodBridge;
  readonly bpffs: string;
  readonly scope: NodeScope;
  readonly agentCgroup: string;
  /** The agent's network namespace (a DaemonSet pod's own, on the bridge); undefined: this process's. */
  agentNetns: string | undefined;
  /** Every child of the bench: killed at close. */
  readonly children: ChildProcess[] = [];
  #tornDown = false;
  readonly #unregister: () => void;

  static async start(name: string): Promise<NodeProxyLab> {
    return new NodeProxyLab(await startFakeKube(), name);
  }

  private constructor(kube: FakeKube, name: string) {
    this.kube = kube;
    this.bridge = new PodBridge(this.node);
    this.bpffs = mkdtempSync(join(tmpdir(), `bpfmesh-bench-${name}-`));
    ensureBpffs(this.bpffs, false);
    this.scope = { bpffs: this.bpffs, bpffsExplicit: true, cgroupRoot: this.node.cgroupRoot };
    this.agentCgroup = join(this.node.cgroupRoot, 'system', 'agent');
    // Also on a signal: the children, pins, pods, hub, bpffs.
    this.#unregister = cleanupOnExit({ cleanup: () => this.#teardown() });
  }

  agent(proxy: boolean, extra: string[] = [], env: NodeJS.ProcessEnv = {}): AgentProc {
    const a = new AgentProc(this.agentCgroup, this.kube, this.scope, proxy, extra, env, this.agentNetns);
    this.children.push(a.child);
    return a;
  }

  /** Meshed pods in the fake API, named p<i>, service account sa-p<i>. */
  announce(pods: NodePod[], namespace = 'bench'): void {
    for (const [i, p] of pods.entries()) this.kube.setPod({ metadata: { name: `p${i}`, namespace, uid: p.uid, annotations: { 'linkerd.io/inject': 'enabled' } }, spec: { nodeName: NODE, serviceAccountName: `sa-p${i}` } });
  }

  /** A `bpfmesh proxy` sidecar in each pod as the proxy uid, started ten at a time; resolves once all listen. */
  async sidecars(pods: NodePod[], env: NodeJS.ProcessEnv = {}): Promise<ChildProcess[]> {
    const all: ChildProcess[] = [];
    for (let i = 0; i < pods.length; i += 10) {
      const batch = pods.slice(i, i + 10).map((p) => this.node.spawn(p, 'env', [...Object.entries(env).map(([k, v]) => `${k}=${v}`), process.execPath, CLI, 'proxy'], PROXY));
      all.push(...batch);
      this.children.push(...batch);
      await Promise.all(
        batch.map(
          (c) =>
            new Promise<void>((resolve, reject) => {
              let err = '';
              c.stderr!.on('data', (d: Buffer) => {
                err += d.toString();
                if (err.includes('admin listening')) resolve();
              });
              c.stdout!.resume();
              c.once('exit', () => reject(new Error(`sidecar exited: ${err.slice(-500)}`)));
            }),
        ),
      );
    }
    return all;
  }

  async close(): Promise<void> {
    await Promise.all(this.children.map((c) => killed(c)));
    try {
      this.#teardown();
    } finally {
      this.#unregister();
      await this.kube.close();
    }
  }

  #teardown(): void {
    if (this.#tornDown) return;
    this.#tornDown = true;
    for (const c of this.children) c.kill('SIGKILL');
    try {
      uninstallNode(this.scope, createLogger({ logFormat: 'plain', logLevel: 'warn' }));
    } finally {
      this.node.cleanup();
      this.bridge.cleanup();
      execFileSync('umount', [this.bpffs]);
      rmdirSync(this.bpffs);
    }
  }
}

/** `node dist/bench/<file>.js`: runs one bench and exits with its outcome. */
export function runAsMain(mod: NodeJS.Module, bench: () => Promise<unknown>): void {
  if (require.main !== mod) return;
  bench().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
