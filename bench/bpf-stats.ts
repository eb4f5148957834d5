// The kernel's own accounting of BPF program run time
// (kernel.bpf_stats_enabled: run_time_ns and run_cnt per program), read
// through bpftool, for the benchmarks that price what a connection pays in
// the kernel without the noise of the whole path.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { native } from '../src/bpf/native.js';

const STATS_SYSCTL = '/proc/sys/kernel/bpf_stats_enabled';

export interface ProgStats {
  runNs: number;
  runs: number;
}

interface BpftoolProg {
  id: number;
  name?: string;
  run_time_ns?: number;
  run_cnt?: number;
  map_ids?: number[];
}

function bpftoolJson<T>(args: string[]): T {
  return JSON.parse(execFileSync('bpftool', [...args, '--json']).toString()) as T;
}

export function progStatsById(id: number): ProgStats {
  const p = bpftoolJson<BpftoolProg>(['prog', 'show', 'id', String(id)]);
  return { runNs: p.run_time_ns ?? 0, runs: p.run_cnt ?? 0 };
}

/** run_time_ns / run_cnt of the program behind a pinned link. */
export function progStats(linkPin: string): ProgStats {
  const link = native().openPinnedLink(linkPin);
  try {
    return progStatsById(link.info().progId);
  } finally {
    link.close();
  }
}

/** Every loaded program (name, id, stats) that uses one of the maps pinned at `mapPins`: one pod's programs. */
export function programsUsing(mapPins: string[]): Map<string, ProgStats & { id: number }> {
  const mapIds = new Set(mapPins.map((p) => bpftoolJson<{ id: number }>(['map', 'show', 'pinned', p]).id));
  const out = new Map<string, ProgStats & { id: number }>();
  for (const p of bpftoolJson<BpftoolProg[]>(['prog', 'show'])) {
    if (p.name === undefined || !(p.map_ids ?? []).some((m) => mapIds.has(m))) continue;
    out.set(p.name, { id: p.id, runNs: p.run_time_ns ?? 0, runs: p.run_cnt ?? 0 });
  }
  return out;
}

export const perRun = (a: ProgStats, b: ProgStats): number => (b.runs > a.runs ? (b.runNs - a.runNs) / (b.runs - a.runs) : NaN);

/** Runs `fn` with kernel.bpf_stats_enabled on, restoring what it was after. */
export async function withBpfStats<T>(fn: () => Promise<T>): Promise<T> {
  const before = readFileSync(STATS_SYSCTL, 'utf8').trim();
  writeFileSync(STATS_SYSCTL, '1');
  try {
    return await fn();
  } finally {
    writeFileSync(STATS_SYSCTL, before);
  }
}
