// bpfmesh reset: remove everything init installed for a pod.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseResetFlags } from '../config/pod-flags.js';
import { createLogger } from '../log/logger.js';
import { uninstall } from '../intercept/install.js';
import { nodePinDir, uninstallNode } from '../intercept/node-wide.js';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { checkNetns, defaultPodName, netnsCookieOf, pinRoot } from '../intercept/pod.js';

export const usage = `bpfmesh reset [flags]   remove a pod's interception: links, programs, maps and pins

  --netns PATH       the pod's network namespace (default: this process's); names the pod
  --pod-name NAME    the pod's pin folder name, when the netns is gone or was named at init
  --cgroup DIR       accepted for symmetry with init; the pinned links know their cgroup
  --node             instead: remove the node-wide install (CNI plugin, bpfmesh node) and every pod in it
  --bpffs DIR        bpf filesystem (default /sys/fs/bpf)
  --log-format plain|json, --log-level LEVEL
`;

export async function run(argv: string[]): Promise<number> {
  const opts = parseResetFlags(argv);
  const log = createLogger(opts).child({ component: 'reset' });
  if (opts.node) {
    const { removed } = uninstallNode({ bpffs: opts.bpffs, bpffsExplicit: true, cgroupRoot: '/' }, log);
    if (removed.length === 0) throw new BpfmeshError(ErrorCodes.NOT_INSTALLED, `no node-wide install under ${nodePinDir(opts.bpffs)}`);
    log.info({ removed: removed.length }, 'node-wide interception removed');
    return 0;
  }
  const netnsPath = opts.netns ?? '/proc/self/ns/net';
  // The pod may be gone already: its netns is then only needed for the name.
  const netnsAlive = existsSync(netnsPath);
  if (netnsAlive) checkNetns(netnsPath);
  const podName = opts.podName ?? defaultPodName(netnsPath);
  const pinDir = join(pinRoot(opts.bpffs), podName);
  const cookie = netnsAlive && existsSync(pinDir) ? netnsCookieOf(netnsPath) : null;
  const result = uninstall(pinDir, podName, cookie, log);
  log.info({ pod: podName, removed: result.removed.length }, 'interception removed');
  return 0;
}
