// The BPF counters of the proxy's own pod, for /metrics. Reading pins needs
// CAP_BPF and access to /sys/fs/bpf (root in the pod, or a pin folder made
// readable to the proxy); without them the proxy runs on and says why once.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { native } from '../bpf/native.js';
import { COUNTER_NAMES } from '../bpf/codecs.js';
import { closeMaps, mapsOfPinDir } from '../intercept/layout.js';
import { defaultPodName, pinRoot } from '../intercept/pod.js';
import type { ProxyFlags } from '../config/pod-flags.js';
import { nodePinDir, podCookie } from '../intercept/node-wide.js';
import { mapsDirOf } from '../intercept/versions.js';

/** Where a pod's rows are: its own pin folder (cookie null: the one pod in it), or the node-wide maps. */
interface PodRows {
  mapsDir: string;
  cookie: bigint | null;
}

function linkedToThisNetns(linkPin: string, ino: number): boolean {
  if (!existsSync(linkPin)) return false;
  const l = native().openPinnedLink(linkPin);
  try {
    return l.info().targetId === ino;
  } finally {
    l.close();
  }
}

/** The pod whose sk_lookup link sits on this process's netns: a pod install, or a node-wide one. */
function ownPodRows(bpffs: string): PodRows | null {
  const root = pinRoot(bpffs);
  const ino = statSync('/proc/self/ns/net').ino;
  for (const pod of readdirSync(root)) {
    if (linkedToThisNetns(join(root, pod, 'link_sk_lookup'), ino)) return { mapsDir: join(root, pod), cookie: null };
  }
  const nodeDir = nodePinDir(bpffs);
  const podsDir = join(nodeDir, 'pods');
  for (const id of existsSync(podsDir) ? readdirSync(podsDir) : []) {
    if (linkedToThisNetns(join(podsDir, id, 'link_sk_lookup'), ino)) return { mapsDir: nodeDir, cookie: podCookie(join(podsDir, id)) };
  }
  return null;
}

export type CounterReader = () => Record<string, bigint> | null;

/** A reader of the pod's counters, or the reason there is none. */
export function podCounterReader(flags: ProxyFlags): { read: CounterReader; pinDir: string } | { reason: string } {
  try {
    const root = pinRoot(flags.bpffs);
    const named = flags.podName ?? (flags.netns !== undefined ? defaultPodName(flags.netns) : undefined);
    const rows: PodRows | null = named !== undefined ? { mapsDir: join(root, named), cookie: null } : ownPodRows(flags.bpffs);
    if (rows === null || !existsSync(rows.mapsDir)) return { reason: `no bpfmesh pins for this pod under ${root}` };
    let maps = mapsOfPinDir(rows.mapsDir);
    let opened = mapsDirOf(rows.mapsDir);
    const read: CounterReader = () => {
      // An upgrade in place moves the maps to another layout's folder (README "Upgrading").
      const now = mapsDirOf(rows.mapsDir);
      if (now !== opened && existsSync(now)) {
        closeMaps(maps);
        maps = mapsOfPinDir(rows.mapsDir);
        opened = now;
      }
      const cookie = rows.cookie ?? maps.settings.entries()[0]?.[0];
      if (cookie === undefined) return null;
      const out: Record<string, bigint> = {};
      COUNTER_NAMES.forEach((name, id) => (out[name] = maps.counters.get({ netnsCookie: cookie, id }) ?? 0n));
      return out;
    };
    process.once('exit', () => closeMaps(maps));
    return { read, pinDir: rows.mapsDir };
  } catch (err) {
    return { reason: `${(err as Error).message} (reading pins needs CAP_BPF and access to the bpffs)` };
  }
}
