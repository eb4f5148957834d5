// A lab of test "pods" on this machine: each pod is a network namespace
// plus a cgroup v2, wired to a bridge that lives in a hub namespace of its
// own, so no test address is ever reachable from the host's namespace.
// Used by the tests, the benchmarks and the demo. Everything is named with
// a per-run prefix and removed by cleanup(), which is synchronous so that
// exit handlers can call it too.
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cgroup2Mount } from '../intercept/mounts.js';

export interface LabPod {
  name: string;
  /** ip netns name, also the default bpfmesh pod name. */
  netnsName: string;
  netns: string;
  cgroup: string;
  ip4: string;
  ip6: string;
}

export interface RunAs {
  uid?: number;
  gid?: number;
}

/** Waits for a spawned child (stdio pipes) to finish; kills it after timeoutMs. */
export function collect(child: ChildProcess, timeoutMs: number, input?: string): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
    if (input !== undefined) child.stdin!.end(input);
    else child.stdin!.end();
  });
}

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const quiet = (cmd: string, args: string[]): void => {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
  } catch {
    /* best effort during cleanup */
  }
};

export function uniquePrefix(tag = 'bm'): string {
  // Short: interface names are limited to 15 characters.
  return `${tag}${process.pid.toString(36)}${Math.floor(Math.random() * 36 ** 3).toString(36)}`.slice(0, 10);
}

// Labs still standing when the process ends (an exception, a signal, a
// closed pipe) are removed on the way out.
const liveLabs = new Set<{ cleanup(): void }>();
let hooked = false;
function hookProcessExit(): void {
  if (hooked) return;
  hooked = true;
  process.once('exit', () => {
    for (const lab of [...liveLabs].reverse()) lab.cleanup(); // newest first: a MeshLab before its Lab
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const lab of [...liveLabs].reverse()) lab.cleanup(); // newest first: a MeshLab before its Lab
      process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
    });
  }
}

/** Registers something to clean up when the process ends (MeshLab: pins before namespaces). */
export function cleanupOnExit(thing: { cleanup(): void }): () => void {
  hookProcessExit();
  liveLabs.add(thing);
  return () => liveLabs.delete(thing);
}

export class Lab {
  readonly prefix: string;
  readonly pods: LabPod[] = [];
  readonly #cgroupRoot: string;
  readonly #hub: string;
  readonly #children = new Set<ChildProcess>();
  #hubReady = false;
  readonly #subnet: number;

  constructor(prefix = uniquePrefix(), subnet = 77) {
    this.prefix = prefix;
    this.#subnet = subnet;
    this.#cgroupRoot = join(cgroup2Mount(), prefix);
    this.#hub = `${prefix}-hub`;
    this.#unregister = cleanupOnExit(this);
  }

  readonly #unregister: () => void;

  /** The cgroup every pod's cgroup sits under (created with the first pod). */
  get cgroupRoot(): string {
    return this.#cgroupRoot;
  }

  #ensureHub(): void {
    if (this.#hubReady) return;
    mkdirSync(this.#cgroupRoot, { recursive: true });
    sh('ip', ['netns', 'add', this.#hub]);
    this.#hubReady = true;
    sh('ip', ['-n', this.#hub, 'link', 'add', 'br0', 'type', 'bridge']);
    sh('ip', ['-n', this.#hub, 'link', 'set', 'br0', 'up']);
  }

  /** A pod: netns + cgroup + a veth to the hub bridge, addressed 10.<subnet>.0.N/24 and fd<subnet>::N/64. */
  addPod(name: string): LabPod {
    this.#ensureHub();
    const n = this.pods.length + 2;
    const netnsName = `${this.prefix}-${name}`;
    const pod: LabPod = {
      name,
      netnsName,
      netns: `/run/netns/${netnsName}`,
      cgroup: join(this.#cgroupRoot, name),
      ip4: `10.${this.#subnet}.0.${n}`,
      ip6: `fd${this.#subnet}::${n}`,
    };
    sh('ip', ['netns', 'add', netnsName]);
    this.pods.push(pod);
    mkdirSync(pod.cgroup);
    const hostSide = `${this.prefix}h${n}`.slice(-15);
    sh('ip', ['-n', this.#hub, 'link', 'add', hostSide, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netnsName]);
    sh('ip', ['-n', this.#hub, 'link', 'set', hostSide, 'master', 'br0', 'up']);
    sh('ip', ['-n', netnsName, 'link', 'set', 'lo', 'up']);
    sh('ip', ['-n', netnsName, 'addr', 'add', `${pod.ip4}/24`, 'dev', 'eth0']);
    sh('ip', ['-n', netnsName, 'addr', 'add', `${pod.ip6}/64`, 'dev', 'eth0', 'nodad']);
    sh('ip', ['-n', netnsName, 'link', 'set', 'eth0', 'up']);
    return pod;
  }

  spawn(pod: LabPod, cmd: string, args: string[], as: RunAs = {}, opts: SpawnOptions = {}): ChildProcess {
    const argv = this.#argv(pod, cmd, args, as);
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
    return child;
  }

  /** Runs a command in the pod to completion; kills it after timeoutMs. */
  exec(pod: LabPod, cmd: string, args: string[], as: RunAs = {}, timeoutMs = 20000, input?: string): Promise<ExecResult> {
    return collect(this.spawn(pod, cmd, args, as), timeoutMs, input);
  }

  #argv(pod: LabPod, cmd: string, args: string[], as: RunAs): string[] {
    const ids: string[] = [];
    if (as.gid !== undefined) ids.push(`--setgid=${as.gid}`);
    if (as.uid !== undefined) ids.push(`--setuid=${as.uid}`);
    // $0 = cgroup dir, $1 = netns file; the rest is nsenter's argv.
    const script = 'echo $$ > "$0/cgroup.procs" && ns="$1" && shift && exec nsenter --net="$ns" "$@"';
    return ['sh', '-c', script, pod.cgroup, pod.netns, ...ids, '--', cmd, ...args];
  }

  /** Kills everything the lab started and removes its namespaces and cgroups. Safe to call twice. */
  cleanup(): void {
    for (const child of this.#children) child.kill('SIGKILL');
    for (const pod of this.pods) this.#killCgroup(pod.cgroup);
    for (const pod of this.pods) quiet('ip', ['netns', 'delete', pod.netnsName]);
    if (this.#hubReady) quiet('ip', ['netns', 'delete', this.#hub]);
    for (const pod of this.pods) this.#rmdirCgroup(pod.cgroup);
    this.#rmdirCgroup(this.#cgroupRoot);
    this.pods.length = 0;
    this.#hubReady = false;
    this.#unregister();
  }

  #killCgroup(dir: string): void {
    if (!existsSync(dir)) return;
    try {
      writeFileSync(join(dir, 'cgroup.kill'), '1'); // kernel 5.14+
    } catch {
      for (const pid of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) quiet('kill', ['-9', pid]);
    }
  }

  #rmdirCgroup(dir: string): void {
    if (!existsSync(dir)) return;
    // A killed process leaves its cgroup a moment later.
    const deadline = Date.now() + 3000;
    for (;;) {
      try {
        rmdirSync(dir);
        return;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        execFileSync('sleep', ['0.05']);
      }
    }
  }
}
