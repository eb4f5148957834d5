// bpftool's JSON output, as an operator would read it. An empty answer
// (bpftool prints nothing for a cgroup with no programs) is an empty list.
import { execFileSync } from 'node:child_process';

export function bpftool<T>(args: string[]): T {
  const out = execFileSync('bpftool', ['-j', ...args]).toString().trim();
  return (out === '' ? [] : JSON.parse(out)) as T;
}

export const cgroupPrograms = (cgroup: string): unknown[] => bpftool<unknown[]>(['cgroup', 'show', cgroup]);
