// bpfmesh observe: which ring buffers to read and which pod an event is
// about, from the pins alone. Each pin folder (a pod install, or node/ for
// the node-wide install) has its own mesh_events; an event names its pod
// by netns cookie, which the folder's rows are keyed by.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { native } from '../bpf/native.js';
import { closeMaps, mapsOfPinDir } from '../intercept/layout.js';
import { NODE_DIR_NAME, NODE_LOCK_NAME, nodePinDir, podCookie } from '../intercept/node-wide.js';
import { pinRoot } from '../intercept/pod.js';
import { hasMaps } from '../intercept/versions.js';

/** One ring buffer to read: a pin folder. */
export interface RingSource {
  pinDir: string;
  /** The pod install's name, or "node". */
  name: string;
  node: boolean;
}

/** What to read and which pods to keep. */
export interface Selection {
  sources: RingSource[];
  /** Keep only events of this netns cookie; null: every pod of the sources. */
  netnsCookie: bigint | null;
  /** What was asked for, for messages. */
  what: string;
}

export interface ObserveTarget {
  bpffs: string;
  pod: string | undefined;
  cgroup: string | undefined;
}

function podInstallCookie(pinDir: string): bigint | null {
  if (!hasMaps(pinDir)) return null;
  const maps = mapsOfPinDir(pinDir);
  try {
    return maps.settings.entries()[0]?.[0] ?? null;
  } finally {
    closeMaps(maps);
  }
}

const podInstallNames = (root: string): string[] =>
  existsSync(root) ? readdirSync(root).filter((n) => n !== NODE_DIR_NAME && n !== NODE_LOCK_NAME).sort() : [];

const nodePodIds = (bpffs: string): string[] => {
  const dir = join(nodePinDir(bpffs), 'pods');
  return existsSync(dir) ? readdirSync(dir).sort() : [];
};

/** netns cookie -> pod name ("name" for a pod install, "node/<id>" node-wide). Read again when an unknown cookie shows up. */
export function podNames(bpffs: string): Map<bigint, string> {
  const out = new Map<bigint, string>();
  const root = pinRoot(bpffs);
  for (const name of podInstallNames(root)) {
    try {
      const cookie = podInstallCookie(join(root, name));
      if (cookie !== null) out.set(cookie, name);
    } catch {
      /* removed meanwhile */
    }
  }
  for (const id of nodePodIds(bpffs)) {
    try {
      const cookie = podCookie(join(nodePinDir(bpffs), 'pods', id));
      if (cookie !== null) out.set(cookie, `${NODE_DIR_NAME}/${id}`);
    } catch {
      /* withdrawn meanwhile */
    }
  }
  return out;
}

function linkTarget(pin: string): number | null {
  if (!existsSync(pin)) return null;
  try {
    const link = native().openPinnedLink(pin);
    try {
      return link.info().targetId;
    } finally {
      link.close();
    }
  } catch {
    return null;
  }
}

/** A process in the cgroup or below it (bounded walk), for its network namespace. */
function pidIn(cgroup: string): number | null {
  const queue = [cgroup];
  for (let visited = 0; queue.length > 0 && visited < 10_000; visited++) {
    const dir = queue.shift()!;
    try {
      const pid = readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').find((l) => l.trim() !== '');
      if (pid !== undefined) return Number(pid);
      for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) queue.push(join(dir, e.name));
    } catch {
      /* raced with a removal */
    }
  }
  return null;
}

function selectPod(bpffs: string, pod: string): Selection {
  const root = pinRoot(bpffs);
  const nodeId = pod.startsWith(`${NODE_DIR_NAME}/`) ? pod.slice(NODE_DIR_NAME.length + 1) : pod;
  if (pod !== NODE_DIR_NAME && !pod.startsWith(`${NODE_DIR_NAME}/`) && podInstallNames(root).includes(pod)) {
    return { sources: [{ pinDir: join(root, pod), name: pod, node: false }], netnsCookie: podInstallCookie(join(root, pod)), what: `pod ${pod}` };
  }
  if (nodePodIds(bpffs).includes(nodeId)) {
    const cookie = podCookie(join(nodePinDir(bpffs), 'pods', nodeId));
    if (cookie !== null) return { sources: [{ pinDir: nodePinDir(bpffs), name: NODE_DIR_NAME, node: true }], netnsCookie: cookie, what: `pod ${NODE_DIR_NAME}/${nodeId}` };
  }
  throw new BpfmeshError(ErrorCodes.NOT_INSTALLED, `no intercepted pod named ${JSON.stringify(pod)} under ${root}; "bpfmesh inspect" lists them`);
}

function selectCgroup(bpffs: string, cgroup: string): Selection {
  let ino: number;
  try {
    ino = statSync(cgroup).ino;
  } catch {
    throw new BpfmeshError(ErrorCodes.NO_CGROUP, `cgroup ${cgroup} does not exist; give --cgroup <a cgroup v2 directory>`);
  }
  const root = pinRoot(bpffs);
  // A pod install attached to this very cgroup.
  for (const name of podInstallNames(root)) if (linkTarget(join(root, name, 'link_connect4')) === ino) return selectPod(bpffs, name);
  // Else the pod whose network namespace a process of the cgroup is in.
  const pid = pidIn(cgroup);
  if (pid !== null) {
    let netnsIno: number | null = null;
    try {
      netnsIno = statSync(`/proc/${pid}/ns/net`).ino;
    } catch {
      /* exited meanwhile */
    }
    if (netnsIno !== null) {
      for (const name of podInstallNames(root)) if (linkTarget(join(root, name, 'link_sk_lookup')) === netnsIno) return selectPod(bpffs, name);
      for (const id of nodePodIds(bpffs)) if (linkTarget(join(nodePinDir(bpffs), 'pods', id, 'link_sk_lookup')) === netnsIno) return selectPod(bpffs, `${NODE_DIR_NAME}/${id}`);
    }
  }
  throw new BpfmeshError(ErrorCodes.NOT_INSTALLED, `no intercepted pod for cgroup ${cgroup}: no pod install is attached to it and no process in it is in a meshed network namespace`);
}

/** The rings to read for the target; NOT_INSTALLED when there is nothing to observe. */
export function select(target: ObserveTarget): Selection {
  if (target.pod !== undefined) return selectPod(target.bpffs, target.pod);
  if (target.cgroup !== undefined) return selectCgroup(target.bpffs, target.cgroup.replace(/\/+$/, ''));
  const root = pinRoot(target.bpffs);
  const sources: RingSource[] = podInstallNames(root).map((name) => ({ pinDir: join(root, name), name, node: false }));
  if (hasMaps(nodePinDir(target.bpffs))) sources.push({ pinDir: nodePinDir(target.bpffs), name: NODE_DIR_NAME, node: true });
  if (sources.length === 0) throw new BpfmeshError(ErrorCodes.NOT_INSTALLED, `nothing is intercepted on this node (nothing under ${root}); run "bpfmesh init" or the node agent first`);
  return { sources, netnsCookie: null, what: 'every pod' };
}
