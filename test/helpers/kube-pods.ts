// Pods as kubelet lays them out on a node, for the node agent's tests and
// benchmark: a network namespace (loopback only: outbound steering happens
// at connect(), before any route lookup), a cgroup named like kubelet's
// under a per-run cgroup root (<root>/kubepods/pod<uid>, or the systemd
// driver's <root>/kubepods.slice/kubepods-pod<uid_>.slice), and a `sleep`
// in both, standing for the sandbox's pause process. Everything is removed
// by cleanup(), also when the process exits early.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cgroup2Mount } from '../../src/intercept/mounts.js';
import { cleanupOnExit, collect, uniquePrefix, type ExecResult, type RunAs } from '../../src/lab/lab.js';

export interface NodePod {
  uid: string;
  netnsName: string;
  netns: string;
  cgroup: string;
  /** The stand-in for the pause process, while it runs. */
  sandbox: ChildProcess | undefined;
}

const sh = (cmd: string, args: string[]): void => void execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });

export class KubeletNode {
  readonly prefix: string;
  readonly cgroupRoot: string;
  readonly pods: NodePod[] = [];
  readonly #children = new Set<ChildProcess>();
  #made = 0;
  readonly #unregister: () => void;

  constructor(prefix = uniquePrefix('kn')) {
    this.prefix = prefix;
    this.cgroupRoot = join(cgroup2Mount(), prefix);
    mkdirSync(join(this.cgroupRoot, 'kubepods'), { recursive: true });
    this.#unregister = cleanupOnExit(this);
  }

  /** Netns + cgroup, no process yet (kubelet has not started the sandbox). */
  createPod(opts: { uid?: string; systemd?: boolean } = {}): NodePod {
    const uid = opts.uid ?? randomUUID();
    const netnsName = `${this.prefix}-${this.#made++}`;
    const cgroup = opts.systemd
      ? join(this.cgroupRoot, 'kubepods.slice', `kubepods-pod${uid.replace(/-/g, '_')}.slice`)
      : join(this.cgroupRoot, 'kubepods', `pod${uid}`);
    sh('ip', ['netns', 'add', netnsName]);
    const pod: NodePod = { uid, netnsName, netns: `/run/netns/${netnsName}`, cgroup, sandbox: undefined };
    this.pods.push(pod);
    sh('ip', ['-n', netnsName, 'link', 'set', 'lo', 'up']);
    mkdirSync(cgroup, { recursive: true });
    return pod;
  }

  /** Starts the pod's "pause" process (a sleep in its cgroup and netns); resolves once it is in the cgroup. */
  async startSandbox(pod: NodePod): Promise<void> {
    pod.sandbox = this.spawn(pod, 'sleep', ['infinity']);
    const deadline = Date.now() + 5000;
    while (readFileSync(join(pod.cgroup, 'cgroup.procs'), 'utf8').trim() === '') {
      if (Date.now() > deadline) throw new Error(`sandbox of ${pod.uid} never joined ${pod.cgroup}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    // nsenter has exec'd sleep once the netns differs from ours.
    const host = statSync('/proc/self/ns/net').ino;
    const pid = Number(readFileSync(join(pod.cgroup, 'cgroup.procs'), 'utf8').trim().split('\n')[0]);
    while (statSync(`/proc/${pid}/ns/net`).ino === host) {
      if (Date.now() > deadline) throw new Error(`sandbox of ${pod.uid} never entered its netns`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  async addPod(opts: { uid?: string; systemd?: boolean } = {}): Promise<NodePod> {
    const pod = this.createPod(opts);
    await this.startSandbox(pod);
    return pod;
  }

  spawn(pod: NodePod, cmd: string, args: string[], as: RunAs = {}): ChildProcess {
    const ids: string[] = [];
    if (as.gid !== undefined) ids.push(`--setgid=${as.gid}`);
    if (as.uid !== undefined) ids.push(`--setuid=${as.uid}`);
    const script = 'echo $$ > "$0/cgroup.procs" && ns="$1" && shift && exec nsenter --net="$ns" "$@"';
    const child = spawn('sh', ['-c', script, pod.cgroup, pod.netns, ...ids, '--', cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
    return child;
  }

  exec(pod: NodePod, cmd: string, args: string[], as: RunAs = {}, timeoutMs = 10_000): Promise<ExecResult> {
    return collect(this.spawn(pod, cmd, args, as), timeoutMs);
  }

  /** The pod goes away as kubelet removes it: processes killed, netns and cgroup deleted. */
  removePod(pod: NodePod): void {
    this.#kill(pod.cgroup);
    try {
      execFileSync('ip', ['netns', 'delete', pod.netnsName], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
    this.#rmdir(pod.cgroup);
    this.pods.splice(this.pods.indexOf(pod), 1);
  }

  cleanup(): void {
    for (const c of this.#children) c.kill('SIGKILL');
    // Anything still in the node's cgroups (an agent's proxy worker that
    // outlived it) would keep them busy and its connections open.
    this.#kill(this.cgroupRoot);
    for (const pod of [...this.pods]) this.removePod(pod);
    for (const dir of ['kubepods.slice', 'kubepods', '']) this.#rmdir(join(this.cgroupRoot, dir));
    this.#unregister();
  }

  #kill(dir: string): void {
    if (!existsSync(dir)) return;
    try {
      writeFileSync(join(dir, 'cgroup.kill'), '1');
    } catch {
      /* an old kernel: the children are killed by cleanup() */
    }
  }

  #rmdir(dir: string): void {
    if (!existsSync(dir)) return;
    const deadline = Date.now() + 3000;
    for (;;) {
      try {
        for (const sub of readdirSync(dir, { withFileTypes: true })) if (sub.isDirectory()) this.#rmdir(join(dir, sub.name));
        rmdirSync(dir);
        return;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        execFileSync('sleep', ['0.05']);
      }
    }
  }
}
