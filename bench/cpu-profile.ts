// Where a proxy's CPU goes: a V8 .cpuprofile (node --cpu-prof) summed by
// self time, per function and per part of the process (bpfmesh's code, its
// npm packages, Node's JavaScript, native work and system calls, GC).
// The .cpuprofile itself opens as a flame graph in Chrome DevTools or
// speedscope; this is the table the README quotes.
import { readFileSync } from 'node:fs';
import { REPO_ROOT } from '../src/config/paths.js';
import { printTable, round } from './stats.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  totalMs: number;
  parts: Array<{ part: string; share: number }>;
  functions: Array<{ fn: string; where: string; part: string; share: number }>;
}

/** The part of the process a frame belongs to. */
export function partOf(url: string, fn: string): string {
  if (url === '') return fn === '(garbage collector)' ? 'GC' : fn === '(idle)' ? 'idle' : fn === '(program)' ? 'native (libuv, syscalls, V8)' : `native: ${fn}`;
  if (url.startsWith('node:')) return 'Node JavaScript';
  if (url.includes('/node_modules/')) return `npm: ${/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1] ?? '?'}`;
  if (url.includes('/dist/src/')) return 'bpfmesh';
  return 'other';
}

export function summarizeProfile(file: string, top = 20): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) selfUs.set(p.samples[i]!, (selfUs.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0));
  const fns = new Map<string, { fn: string; where: string; part: string; us: number }>();
  const parts = new Map<string, number>();
  let busy = 0;
  for (const [id, us] of selfUs) {
    const f = byId.get(id)!.callFrame;
    const part = partOf(f.url, f.functionName);
    if (part === 'idle') continue;
    busy += us;
    parts.set(part, (parts.get(part) ?? 0) + us);
    const where = f.url === '' ? '' : `${f.url.replace(`file://${REPO_ROOT}/dist/`, '').replace(/^file:\/\/.*node_modules\//, '')}:${f.lineNumber + 1}`;
    const key = `${f.functionName}@${where}`;
    const e = fns.get(key) ?? { fn: f.functionName || '(anonymous)', where, part, us: 0 };
    e.us += us;
    fns.set(key, e);
  }
  const share = (us: number): number => round((100 * us) / busy, 1);
  return {
    totalMs: round(busy / 1000, 0),
    parts: [...parts].sort((a, b) => b[1] - a[1]).map(([part, us]) => ({ part, share: share(us) })),
    functions: [...fns.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((e) => ({ fn: e.fn, where: e.where, part: e.part, share: share(e.us) })),
  };
}

export function printProfile(title: string, s: ProfileSummary): void {
  printTable(`${title}: ${s.totalMs} ms of CPU sampled, by part`, ['part', '% of busy'], s.parts.map((p) => [p.part, p.share]));
  printTable(`${title}: top functions by self time`, ['function', 'where', 'part', '%'], s.functions.map((f) => [f.fn, f.where, f.part, f.share]));
}
