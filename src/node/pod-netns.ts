// Finding a pod's network namespace on the host from its UID: kubelet puts
// every pod in a cgroup named after the UID — `pod<uid>` with the cgroupfs
// driver, `<parent>-pod<uid with _ for ->.slice` with systemd — and any
// process in it (the sandbox's pause process, a container) is in the pod's
// netns, so /proc/<pid>/ns/net (under the host's /proc) names it.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';

const POD_DIR = /^pod[0-9a-f-]{8,}$|-pod[0-9a-f_]{8,}\.slice$/;
const MAX_DEPTH = 6;

export interface PodNetns {
  cgroup: string;
  pid: number;
  /** <host-proc>/<pid>/ns/net */
  path: string;
  /** The nsfs inode: tells one netns from another without entering it. */
  ino: number;
}

export type FindResult = { found: PodNetns } | { missing: 'no_cgroup' | 'no_process' | 'host_netns' };

/** Candidate names of a pod's cgroup inside a folder that holds pod cgroups. */
function candidates(parent: string, uid: string): string[] {
  const slice = basename(parent).replace(/\.slice$/, '');
  return [join(parent, `pod${uid}`), join(parent, `${slice}-pod${uid.replace(/-/g, '_')}.slice`)];
}

const isDir = (p: string): boolean => {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
};

export class PodNetnsFinder {
  readonly cgroupRoot: string;
  readonly hostProc: string;
  /** Folders seen holding pod cgroups (kubepods/burstable, kubepods-besteffort.slice, ...). */
  readonly #parents = new Set<string>();
  #lastScan = 0;
  #hostNetnsIno: number | undefined;

  constructor(cgroupRoot: string, hostProc: string) {
    this.cgroupRoot = cgroupRoot;
    this.hostProc = hostProc;
  }

  /** The pod's cgroup folder, or null when kubelet has not made it (yet). */
  cgroupOf(uid: string): string | null {
    const hit = this.#lookup(uid);
    if (hit !== null) return hit;
    // Rescan the tree for new parents at most every 100 ms (a burst of new pods scans once).
    if (Date.now() - this.#lastScan < 100) return null;
    this.#scan();
    return this.#lookup(uid);
  }

  find(uid: string): FindResult {
    const cgroup = this.cgroupOf(uid);
    if (cgroup === null) return { missing: 'no_cgroup' };
    for (const pid of this.#pids(cgroup, 0)) {
      const path = join(this.hostProc, String(pid), 'ns', 'net');
      let ino: number;
      try {
        ino = statSync(path).ino;
      } catch {
        continue; // exited meanwhile
      }
      // A process in the node's own netns (host network, or a cgroup we misread): never steer the node.
      if (ino === this.#hostIno()) return { missing: 'host_netns' };
      return { found: { cgroup, pid, path, ino } };
    }
    return { missing: 'no_process' };
  }

  /** The nsfs inode of a netns path, or null when it is gone. */
  static inoOf(path: string): number | null {
    try {
      return statSync(path).ino;
    } catch {
      return null;
    }
  }

  #hostIno(): number | undefined {
    this.#hostNetnsIno ??= PodNetnsFinder.inoOf(join(this.hostProc, '1', 'ns', 'net')) ?? undefined;
    return this.#hostNetnsIno;
  }

  #lookup(uid: string): string | null {
    for (const parent of this.#parents) {
      for (const c of candidates(parent, uid)) if (isDir(c)) return c;
    }
    return null;
  }

  #scan(): void {
    this.#lastScan = Date.now();
    const walk = (dir: string, depth: number): void => {
      let entries: string[];
      try {
        entries = readdirSync(dir, { withFileTypes: true })
          .filter((e) => e.isDirectory())
          .map((e) => e.name);
      } catch {
        return;
      }
      let holdsPods = false;
      for (const name of entries) {
        if (POD_DIR.test(name)) {
          holdsPods = true; // a pod: its children are containers, not pods
          continue;
        }
        if (depth < MAX_DEPTH && !name.endsWith('.scope')) walk(join(dir, name), depth + 1);
      }
      if (holdsPods) this.#parents.add(dir);
    };
    walk(this.cgroupRoot, 0);
    // The usual kubelet parents, even while they hold no pod yet.
    for (const p of ['kubepods', 'kubepods/burstable', 'kubepods/besteffort', 'kubepods.slice', 'kubepods.slice/kubepods-burstable.slice', 'kubepods.slice/kubepods-besteffort.slice']) {
      if (isDir(join(this.cgroupRoot, p))) this.#parents.add(join(this.cgroupRoot, p));
    }
  }

  /** Every process of a pod's cgroup tree. */
  pidsOf(cgroup: string): number[] {
    return [...this.#pids(cgroup, 0)];
  }

  /** Processes in the cgroup and below it (containers sit in child cgroups). */
  *#pids(dir: string, depth: number): Generator<number> {
    let procs = '';
    try {
      procs = readFileSync(join(dir, 'cgroup.procs'), 'utf8');
    } catch {
      if (!isDir(dir)) return; // gone
    }
    for (const line of procs.split('\n')) {
      const pid = Number(line);
      if (pid > 0) yield pid;
    }
    if (depth >= 3) return;
    let children: string[] = [];
    try {
      children = readdirSync(dir, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return;
    }
    for (const c of children) yield* this.#pids(join(dir, c), depth + 1);
  }
}
