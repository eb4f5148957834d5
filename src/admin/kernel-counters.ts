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

/** The pin folder of the pod whose sk_lookup link sits on this process's netns. */
function ownPinDir(root: string): string | null {
  const ino = statSync('/proc/self/ns/net').ino;
  for (const pod of readdirSync(root)) {
    const link = join(root, pod, 'link_sk_lookup');
    if (!existsSync(link)) continue;
    const l = native().openPinnedLink(link);
    try {
      if (l.info().targetId === ino) return join(root, pod);
    } finally {
      l.close();
    }
  }
  return null;
}

export type CounterReader = () => Record<string, bigint> | null;

/** A reader of the pod's counters, or the reason there is none. */
export function podCounterReader(flags: ProxyFlags): { read: CounterReader; pinDir: string } | { reason: string } {
  try {
    const root = pinRoot(flags.bpffs);
    const pinDir =
      flags.podName !== undefined ? join(root, flags.podName) : flags.netns !== undefined ? join(root, defaultPodName(flags.netns)) : ownPinDir(root);
    if (pinDir === null || !existsSync(pinDir)) return { reason: `no bpfmesh pins for this pod under ${root}` };
    const maps = mapsOfPinDir(pinDir);
    const read: CounterReader = () => {
      const first = maps.settings.entries()[0];
      if (first === undefined) return null;
      const out: Record<string, bigint> = {};
      COUNTER_NAMES.forEach((name, id) => (out[name] = maps.counters.get({ netnsCookie: first[0], id }) ?? 0n));
      return out;
    };
    process.once('exit', () => closeMaps(maps));
    return { read, pinDir };
  } catch (err) {
    return { reason: `${(err as Error).message} (reading pins needs CAP_BPF and access to the bpffs)` };
  }
}
