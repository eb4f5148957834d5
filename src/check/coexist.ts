// Other BPF programs where bpfmesh attaches. cgroup hooks of one attach type
// all run (in attach order); where two programs rewrite the same thing (the
// connect address, the SO_ORIGINAL_DST answer) or pick a socket (sk_lookup:
// the first assignment wins), the result depends on who ran last, so those
// are failures. A foreign sockops or bind program runs beside bpfmesh's
// without conflict and is only reported. bpfmesh's own programs are named
// mesh_* (bpf/*.bpf.c).
import { ErrorCodes, errorCode } from '../errors.js';
import { native } from '../bpf/native.js';
import { LINKS } from '../intercept/layout.js';
import { withFd } from '../intercept/pod.js';
import { fail, pass, type CheckLine } from './types.js';

/** Attach types where a second program changes bpfmesh's outcome. */
const CONFLICTING = new Set(['cgroup_inet4_connect', 'cgroup_inet6_connect', 'cgroup_getsockopt', 'sk_lookup']);

export const isOwnProgram = (name: string): boolean => name.startsWith('mesh_');

function hookLine(where: string, fd: number, attachType: string, effective: boolean): CheckLine {
  const id = `foreign.${attachType}${effective ? '.pod' : ''}`;
  const title = `other ${attachType} programs on ${where}`;
  let progs: Array<{ id: number; name: string }>;
  try {
    progs = native().queryPrograms(fd, attachType, effective);
  } catch (err) {
    const code = errorCode(err) ?? ErrorCodes.SYSCALL;
    return fail(id, title, `cannot query: ${(err as Error).message}`, code, code === ErrorCodes.PERMISSION ? 'run as root' : 'use a kernel that supports this attach type (see the attach type lines)');
  }
  const own = progs.filter((p) => isOwnProgram(p.name));
  const foreign = progs.filter((p) => !isOwnProgram(p.name));
  const ownText = own.length > 0 ? `; bpfmesh's: ${own.map((p) => `${p.name}#${p.id}`).join(', ')}` : '';
  if (foreign.length === 0) return pass(id, title, `none${ownText}`);
  const list = foreign.map((p) => `${p.name || '(unnamed)'}#${p.id}`).join(', ');
  if (!CONFLICTING.has(attachType)) return pass(id, title, `${list} (runs beside bpfmesh's; no conflict for this hook)${ownText}`);
  return fail(id, title, `${list}${ownText}`, ErrorCodes.FOREIGN_PROGRAM,
    `find its owner (bpftool prog show id ${foreign[0]!.id}; bpftool ${attachType === 'sk_lookup' ? 'net' : 'cgroup tree'}) and remove it or keep it off meshed pods: both would rewrite the same connections`);
}

/** The cgroup root (node-wide hooks) and, when given, a pod's cgroup (effective programs) and netns. */
export function checkForeignPrograms(cgroupRoot: string, podCgroup: string | undefined, netns: string | undefined): CheckLine[] {
  const lines: CheckLine[] = [];
  const cgroupTypes = LINKS.filter((l) => l.target === 'cgroup').map((l) => l.attachType);
  const guarded = (what: string, fn: () => void): void => {
    try {
      fn();
    } catch (err) {
      lines.push(fail(`foreign.${what}`, `other programs on ${what}`, (err as Error).message, errorCode(err) ?? ErrorCodes.SYSCALL, 'check the path and run as root'));
    }
  };
  guarded(cgroupRoot, () => withFd(cgroupRoot, 'cgroup', (fd) => {
    for (const at of cgroupTypes) lines.push(hookLine(cgroupRoot, fd, at, false));
  }));
  if (podCgroup !== undefined) {
    guarded(podCgroup, () => withFd(podCgroup, 'cgroup', (fd) => {
      for (const at of cgroupTypes) lines.push(hookLine(`${podCgroup} (with inherited)`, fd, at, true));
    }));
  }
  if (netns !== undefined) guarded(netns, () => withFd(netns, 'network namespace', (fd) => void lines.push(hookLine(netns, fd, 'sk_lookup', false))));
  return lines;
}
