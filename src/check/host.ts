// The host side: cgroup v2, bpffs, and the capabilities this process holds
// (CapEff in /proc/self/status, so a container's dropped capabilities show).
import { readFileSync } from 'node:fs';
import { ErrorCodes } from '../errors.js';
import { cgroup2Mount, isBpffs, isCgroup2 } from '../intercept/mounts.js';
import { fail, pass, type CheckLine } from './types.js';

export function checkCgroup2(cgroupRoot: string | undefined): CheckLine {
  const title = 'cgroup v2';
  let root = cgroupRoot;
  if (root === undefined) {
    try {
      root = cgroup2Mount();
    } catch (err) {
      return fail('cgroup2', title, (err as Error).message, ErrorCodes.NO_CGROUP, 'mount cgroup2 (mount -t cgroup2 none /sys/fs/cgroup) or boot with systemd.unified_cgroup_hierarchy=1');
    }
  }
  if (isCgroup2(root)) return pass('cgroup2', title, `${root} is a cgroup2 filesystem`);
  return fail('cgroup2', title, `${root} is not a cgroup2 filesystem`, ErrorCodes.NO_CGROUP, 'give --cgroup-root the cgroup2 mount (see /proc/mounts)');
}

/**
 * pre: before install, a default bpffs that is not mounted yet is fine
 * (init, node and cni mount it); an explicit one must be there, and after
 * install so must the default one, since the pins live on it.
 */
export function checkBpffs(dir: string, explicit: boolean, pre: boolean): CheckLine {
  const title = 'bpffs';
  if (isBpffs(dir)) return pass('bpffs', title, `${dir} is a bpf filesystem`);
  if (!explicit && pre) return pass('bpffs', title, `${dir} is not mounted yet; init, node and cni mount the default one`);
  return fail('bpffs', title, `${dir} is not a bpf filesystem`, ErrorCodes.NO_BPFFS, `mount one: mount -t bpf bpf ${dir} (in a pod: mount the host's /sys/fs/bpf)`);
}

/** Capability numbers (linux/capability.h). */
export const CAPS = { CAP_NET_ADMIN: 12, CAP_SYS_PTRACE: 19, CAP_SYS_ADMIN: 21, CAP_BPF: 39 } as const;
export type CapName = keyof typeof CAPS;

export function effectiveCaps(status = readFileSync('/proc/self/status', 'utf8')): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return m === null ? 0n : BigInt(`0x${m[1]}`);
}

export function checkCapabilities(node: boolean, capEff = effectiveCaps()): CheckLine {
  const need: CapName[] = ['CAP_BPF', 'CAP_NET_ADMIN', 'CAP_SYS_ADMIN', ...(node ? (['CAP_SYS_PTRACE'] as const) : [])];
  const missing = need.filter((c) => (capEff & (1n << BigInt(CAPS[c]))) === 0n);
  const title = 'capabilities';
  if (missing.length === 0) return pass('capabilities', title, `${need.join(', ')} held (CapEff ${capEff.toString(16)})`);
  return fail('capabilities', title, `missing ${missing.join(', ')} (CapEff ${capEff.toString(16)})`, ErrorCodes.PERMISSION,
    `run as root, or grant ${missing.join(', ')} (README "Deploy" says why each is needed)`);
}
