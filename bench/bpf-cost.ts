// BENCH_ONLY=bpf-cost: what one new connection pays in bpfmesh's BPF
// programs, from the kernel's own accounting (kernel.bpf_stats_enabled,
// run_time_ns / run_cnt per program). One pod, an app opening new
// connections (bench/conn-rate.ts) to an address the connect program
// redirects to an echo proxy in the pod, the socket path on: every
// connection runs connect4, sockops (both ends, each state change), the
// sk_lookup of its SYN to the proxy, getsockopt (the proxy's
// SO_ORIGINAL_DST) and the socket path's sk_msg/sk_skb programs. Per
// program: calls and nanoseconds per connection; the sum against the
// connection's whole time. This is where a cut in per-connection cost
// (issue: new connections/s against iptables) must come from.
import { join } from 'node:path';
import { REPO_ROOT } from '../src/config/paths.js';
import { mapsDirOf } from '../src/intercept/versions.js';
import { MapNames } from '../src/intercept/layout.js';
import { APP, type MeshLab } from '../test/helpers/mesh.js';
import { programsUsing, withBpfStats, type ProgStats } from './bpf-stats.js';
import { median, printTable, round } from './stats.js';

const CONN_RATE = join(REPO_ROOT, 'dist', 'bench', 'conn-rate.js');
const ROUNDS = Number(process.env['BENCH_BPF_COST_ROUNDS'] ?? 3);
const SECONDS = 4;
const CONNS = 8;

export interface BpfCostRow {
  program: string;
  callsPerConn: number;
  nsPerCall: number;
  nsPerConn: number;
}

export async function runBpfCostBench(mesh: MeshLab): Promise<{ connPerSec: number; totalNsPerConn: number; connUs: number; programs: BpfCostRow[] }> {
  const pod = mesh.pod('cost');
  await mesh.init(pod);
  await mesh.relay(pod, 'echo', false, ['--quiet']);
  const maps = mapsDirOf(mesh.pinDir(pod));
  const pins = [MapNames.settings, MapNames.counters, MapNames.sockPairs].map((m) => join(maps, m));
  const perConn = new Map<string, { calls: number[]; ns: number[] }>();
  const rates: number[] = [];
  await withBpfStats(async () => {
    for (let i = 0; i < ROUNDS; i++) {
      const before = programsUsing(pins);
      const r = await mesh.lab.exec(pod, process.execPath, [CONN_RATE, '10.91.0.77', '7', String(CONNS), String(SECONDS)], APP, (SECONDS + 20) * 1000);
      const after = programsUsing(pins);
      if (r.code !== 0) throw new Error(`conn-rate failed: ${r.stderr}`);
      const res = JSON.parse(r.stdout) as { ok: number; errors: number; perSec: number };
      if (res.errors > 0 || res.ok === 0) throw new Error(`conn-rate: ${res.errors} connections failed, ${res.ok} ok`);
      rates.push(res.perSec);
      for (const [name, b] of after) {
        const a: ProgStats = before.get(name) ?? { runNs: 0, runs: 0 };
        const e = perConn.get(name) ?? { calls: [], ns: [] };
        e.calls.push((b.runs - a.runs) / res.ok);
        e.ns.push((b.runNs - a.runNs) / res.ok);
        perConn.set(name, e);
      }
    }
  });
  const programs: BpfCostRow[] = [...perConn]
    .map(([program, e]) => {
      const calls = median(e.calls);
      const ns = median(e.ns);
      return { program, callsPerConn: round(calls, 2), nsPerCall: calls > 0 ? round(ns / calls, 0) : 0, nsPerConn: round(ns, 0) };
    })
    .sort((x, y) => y.nsPerConn - x.nsPerConn);
  const connPerSec = median(rates);
  const totalNsPerConn = programs.reduce((s, p) => s + p.nsPerConn, 0);
  // A connection's own time: CONNS loops in parallel, so each one takes CONNS / rate.
  const connUs = round((CONNS / connPerSec) * 1e6, 0);
  printTable(
    `BPF run time per new connection (kernel.bpf_stats_enabled), ${CONNS} loops, median of ${ROUNDS} x ${SECONDS} s; ${round(connPerSec, 0)} conn/s`,
    ['program', 'calls/conn', 'ns/call', 'ns/conn'],
    [...programs.map((p) => [p.program, p.callsPerConn, p.nsPerCall, p.nsPerConn]), ['all', '', '', round(totalNsPerConn, 0)]],
  );
  process.stdout.write(`  ${round(totalNsPerConn / 1000, 2)} µs of BPF per connection, ${round((100 * totalNsPerConn) / 1000 / connUs, 2)} % of a connection's ${connUs} µs\n`);
  return { connPerSec: round(connPerSec, 0), totalNsPerConn: round(totalNsPerConn, 0), connUs, programs };
}
