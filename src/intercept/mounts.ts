// Finding and checking the cgroup2 and bpffs mounts.
import { mkdirSync, readFileSync, statfsSync } from 'node:fs';
import { BpfmeshError, ErrorCodes } from '../errors.js';

const CGROUP2_SUPER_MAGIC = 0x63677270;
const BPF_FS_MAGIC = 0xcafe4a11;

function fsType(path: string): number | null {
  try {
    return statfsSync(path).type;
  } catch {
    return null;
  }
}

export const isCgroup2 = (path: string): boolean => fsType(path) === CGROUP2_SUPER_MAGIC;
export const isBpffs = (path: string): boolean => fsType(path) === BPF_FS_MAGIC;

/** The cgroup2 mount point (/sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid ones). */
export function cgroup2Mount(): string {
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const [, mountPoint, type] = line.split(' ');
    if (type === 'cgroup2' && mountPoint !== undefined) return mountPoint;
  }
  throw new BpfmeshError(
    ErrorCodes.NO_CGROUP,
    'no cgroup2 filesystem is mounted; bpfmesh attaches to cgroup v2 (mount -t cgroup2 none /sys/fs/cgroup, or boot with systemd.unified_cgroup_hierarchy=1)',
  );
}

/** The caller's own cgroup v2 directory, from /proc/self/cgroup ("0::/path"). */
export function ownCgroup(): string {
  const line = readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'));
  if (line === undefined) throw new BpfmeshError(ErrorCodes.NO_CGROUP, 'this process is in no cgroup v2; give --cgroup');
  return cgroup2Mount() + line.slice(3).replace(/\/$/, '');
}

/**
 * Make sure `dir` is a bpffs. The default place is mounted when it is not
 * (docs/kernel-notes.md, "bpffs": mounting); an explicit --bpffs must
 * already be one.
 */
export function ensureBpffs(dir: string, explicit: boolean): void {
  if (isBpffs(dir)) return;
  if (explicit) {
    throw new BpfmeshError(ErrorCodes.NO_BPFFS, `${dir} is not a bpf filesystem; mount one (mount -t bpf bpf ${dir}) or leave --bpffs out`);
  }
  try {
    mkdirSync(dir, { recursive: true });
    // child_process (with dgram and its socket list) loads only here, not on every `init`.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { execFileSync } = require('node:child_process') as typeof import('node:child_process');
    execFileSync('mount', ['-t', 'bpf', 'bpf', dir], { stdio: 'pipe' });
  } catch (err) {
    const detail = (err as { stderr?: Buffer }).stderr?.toString().trim() || (err as Error).message;
    throw new BpfmeshError(ErrorCodes.NO_BPFFS, `${dir} is not a bpf filesystem and mounting one failed (${detail}); mount it as root: mount -t bpf bpf ${dir}`);
  }
  if (!isBpffs(dir)) throw new BpfmeshError(ErrorCodes.NO_BPFFS, `${dir} is still not a bpf filesystem after mounting`);
}
