// BENCH_ONLY=bpf-cost: what one new connection pays in bpfmesh's BPF
// programs, from the kernel's own accounting (kernel.bpf_stats_enabled,
// run_time_ns / run_cnt per program), and what that buys against iptables.
// Three pods, each an app opening new connections (bench/conn-rate.ts) to
// an address steered to the same echo relay in the pod: bpfmesh with the
// socket path, bpfmesh without it, and proxy-init's iptables rules; rounds
// alternate between them, so the conn/s ratios are side by side in one run.
// Through bpfmesh every connection runs connect4, sockops (both ends, every
// callback), the sk_lookup of its SYN to the relay, getsockopt (the relay's
// SO_ORIGINAL_DST) and the socket path's sk_msg/sk_skb programs. Per
// program: calls and nanoseconds per connection; the sum against the
// connection's whole time. Then a ping-pong of 100 B messages on one
// connection prices the socket path's per-message programs (sk_msg per
// message, the ping-pong target).
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../src/config/paths.js';
import { mapsDirOf } from '../src/intercept/versions.js';
import { MapNames } from '../src/intercept/layout.js';
import type { LabPod } from '../src/lab/lab.js';
import { APP, type MeshLab } from '../test/helpers/mesh.js';
import { programsUsing, withBpfStats, type ProgStats } from './bpf-stats.js';
import { DEFAULT_RULES, proxyInitCommands } from './iptables.js';
import { median, printTable, round } from './stats.js';

const CONN_RATE = join(REPO_ROOT, 'dist', 'bench', 'conn-rate.js');
const STREAM = join(REPO_ROOT, 'dist', 'test', 'fixtures', 'stream.js');
const ROUNDS = Number(process.env['BENCH_BPF_COST_ROUNDS'] ?? 5);
const SECONDS = 4;
const CONNS = 8;
const PINGPONG_N = 20000;

type Mode = 'bpfmesh' | 'bpfmesh-nosockpath' | 'iptables';
const MODES: readonly Mode[] = ['bpfmesh', 'bpfmesh-nosockpath', 'iptables'];

export interface BpfCostRow {
  program: string;
  callsPerConn: number;
  nsPerCall: number;
  nsPerConn: number;
}

export interface BpfCostResult {
  connPerSec: Record<Mode, number>;
  vsIptables: Record<Mode, number>;
  totalNsPerConn: number;
  connUs: number;
  programs: BpfCostRow[];
  pingpong: { usPerRoundTrip: number; programs: Array<{ program: string; callsPerRoundTrip: number; nsPerCall: number; nsPerRoundTrip: number }> };
}

/** A pod whose app's connects to `target:7` reach the echo relay on 4140. */
async function setup(mesh: MeshLab, mode: Mode): Promise<{ pod: LabPod; target: string }> {
  const pod = mesh.pod(mode === 'bpfmesh' ? 'cost' : mode === 'iptables' ? 'costi' : 'costn');
  if (mode === 'iptables') {
    for (const cmd of proxyInitCommands(DEFAULT_RULES)) execFileSync('nsenter', [`--net=${pod.netns}`, '--', ...cmd], { stdio: 'pipe' });
  } else {
    await mesh.init(pod, mode === 'bpfmesh' ? [] : ['--no-sockpath']);
  }
  // The app closes first, so its ports wait in TIME_WAIT. bpfmesh's app connects to loopback, where the
  // default (2) reuses them; under iptables it connects to the pod's address, where only 1 does. Without
  // this the iptables pod runs out of ports within seconds and measures the port search, not the path.
  execFileSync('nsenter', [`--net=${pod.netns}`, '--', 'sysctl', '-q', '-w', 'net.ipv4.tcp_tw_reuse=1'], { stdio: 'pipe' });
  await mesh.relay(pod, 'echo', false, ['--quiet']);
  // Routable from the pod (iptables' REDIRECT runs after the route lookup), owned by nobody.
  return { pod, target: pod.ip4.replace(/\.\d+$/, '.250') };
}

async function connRate(mesh: MeshLab, pod: LabPod, target: string): Promise<{ ok: number; perSec: number }> {
  const r = await mesh.lab.exec(pod, process.execPath, [CONN_RATE, target, '7', String(CONNS), String(SECONDS)], APP, (SECONDS + 20) * 1000);
  if (r.code !== 0) throw new Error(`conn-rate failed: ${r.stderr}`);
  const res = JSON.parse(r.stdout) as { ok: number; errors: number; perSec: number };
  if (res.errors > 0 || res.ok === 0) throw new Error(`conn-rate: ${res.errors} connections failed, ${res.ok} ok`);
  return res;
}

type Samples = Map<string, { calls: number[]; ns: number[] }>;

function addDelta(into: Samples, before: Map<string, ProgStats>, after: Map<string, ProgStats>, per: number): void {
  for (const [name, b] of after) {
    const a: ProgStats = before.get(name) ?? { runNs: 0, runs: 0 };
    const e = into.get(name) ?? { calls: [], ns: [] };
    e.calls.push((b.runs - a.runs) / per);
    e.ns.push((b.runNs - a.runNs) / per);
    into.set(name, e);
  }
}

function medians(s: Samples): BpfCostRow[] {
  return [...s]
    .map(([program, e]) => {
      const calls = median(e.calls);
      const ns = median(e.ns);
      return { program, callsPerConn: round(calls, 2), nsPerCall: calls > 0 ? round(ns / calls, 0) : 0, nsPerConn: round(ns, 0) };
    })
    .sort((x, y) => y.nsPerConn - x.nsPerConn);
}

export async function runBpfCostBench(mesh: MeshLab): Promise<BpfCostResult> {
  const pods = new Map<Mode, { pod: LabPod; target: string }>();
  for (const m of MODES) pods.set(m, await setup(mesh, m));
  const meshed = pods.get('bpfmesh')!;
  const maps = mapsDirOf(mesh.pinDir(meshed.pod));
  const pins = [MapNames.settings, MapNames.counters, MapNames.sockPairs].map((m) => join(maps, m));
  const perConn: Samples = new Map();
  const perRoundTrip: Samples = new Map();
  const rates = new Map<Mode, number[]>(MODES.map((m) => [m, []]));
  const pingpongUs: number[] = [];
  await withBpfStats(async () => {
    for (const { pod, target } of pods.values()) await connRate(mesh, pod, target); // warm-up (JIT, caches), not counted
    for (let i = 0; i < ROUNDS; i++) {
      for (const m of MODES) {
        const { pod, target } = pods.get(m)!;
        const before = m === 'bpfmesh' ? programsUsing(pins) : null;
        const res = await connRate(mesh, pod, target);
        if (before) addDelta(perConn, before, programsUsing(pins), res.ok);
        rates.get(m)!.push(res.perSec);
      }
      const before = programsUsing(pins);
      const r = await mesh.lab.exec(meshed.pod, process.execPath, [STREAM, 'pingpong', meshed.target, '7', String(PINGPONG_N)], APP, 120_000);
      const out = JSON.parse(r.stdout || '{}') as { usPerRoundTrip?: number; error?: string };
      if (r.code !== 0 || out.usPerRoundTrip === undefined) throw new Error(`pingpong: ${out.error ?? r.stderr}`);
      addDelta(perRoundTrip, before, programsUsing(pins), PINGPONG_N);
      pingpongUs.push(out.usPerRoundTrip);
    }
  });
  const programs = medians(perConn);
  const connPerSec = Object.fromEntries(MODES.map((m) => [m, round(median(rates.get(m)!), 0)])) as Record<Mode, number>;
  const vsIptables = Object.fromEntries(MODES.map((m) => [m, round(connPerSec[m] / connPerSec.iptables)])) as Record<Mode, number>;
  const totalNsPerConn = programs.reduce((s, p) => s + p.nsPerConn, 0);
  // A connection's own time: CONNS loops in parallel, so each one takes CONNS / rate.
  const connUs = round((CONNS / connPerSec.bpfmesh) * 1e6, 0);
  printTable(
    `new connections/s to the same echo relay, ${CONNS} loops, rounds alternated, median of ${ROUNDS} x ${SECONDS} s (higher is better)`,
    ['steering', 'conn/s', 'vs iptables'],
    MODES.map((m) => [m, connPerSec[m], vsIptables[m]]),
  );
  printTable(
    `BPF run time per new connection through bpfmesh (kernel.bpf_stats_enabled); ${connPerSec.bpfmesh} conn/s`,
    ['program', 'calls/conn', 'ns/call', 'ns/conn'],
    [...programs.map((p) => [p.program, p.callsPerConn, p.nsPerCall, p.nsPerConn]), ['all', '', '', round(totalNsPerConn, 0)]],
  );
  process.stdout.write(`  ${round(totalNsPerConn / 1000, 2)} µs of BPF per connection, ${round((100 * totalNsPerConn) / 1000 / connUs, 2)} % of a connection's ${connUs} µs\n`);
  const rt = medians(perRoundTrip).filter((p) => p.callsPerConn > 0);
  const usPerRoundTrip = round(median(pingpongUs), 1);
  printTable(
    `BPF run time per round trip of a 100 B ping-pong on one connection (socket path), ${PINGPONG_N} round trips, median of ${ROUNDS}; ${usPerRoundTrip} µs per round trip`,
    ['program', 'calls/round trip', 'ns/call', 'ns/round trip'],
    rt.map((p) => [p.program, p.callsPerConn, p.nsPerCall, p.nsPerConn]),
  );
  return {
    connPerSec,
    vsIptables,
    totalNsPerConn: round(totalNsPerConn, 0),
    connUs,
    programs,
    pingpong: { usPerRoundTrip, programs: rt.map((p) => ({ program: p.program, callsPerRoundTrip: p.callsPerConn, nsPerCall: p.nsPerCall, nsPerRoundTrip: p.nsPerConn })) },
  };
}
