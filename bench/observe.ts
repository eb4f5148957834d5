// BENCH_ONLY=observe: what `bpfmesh observe` costs. One pod, an app that
// opens new connections (bench/conn-rate.ts: connect, one line, first
// answer byte, close) to an address the connect program redirects to an
// echo proxy in the pod; rounds alternate observation off and on (an
// Observation in this process reading the ring on its event loop, as the
// CLI does). Each connection is five events: out_redirected, in_pass_local
// (its SYN to the proxy on loopback), two sockpath_paired (or _refused),
// orig_dst_answered.
// Also, with kernel.bpf_stats_enabled on for the run (restored after), the
// connect4 and sockops programs' own run time per call, off vs on: the
// in-kernel price of one event, without the noise of the whole path.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../src/config/paths.js';
import { native } from '../src/bpf/native.js';
import { APP, BPFFS, type MeshLab } from '../test/helpers/mesh.js';
import { select } from '../src/observe/sources.js';
import { Observation } from '../src/observe/session.js';
import { median, printTable, round } from './stats.js';

const CONN_RATE = join(REPO_ROOT, 'dist', 'bench', 'conn-rate.js');
const ROUNDS = Number(process.env['BENCH_OBSERVE_ROUNDS'] ?? 3);
const SECONDS = 4;
const CONNS = 8;
const STATS_SYSCTL = '/proc/sys/kernel/bpf_stats_enabled';

interface ProgStats {
  runNs: number;
  runs: number;
}

/** run_time_ns / run_cnt of the program behind a pinned link (needs bpf_stats_enabled). */
function progStats(linkPin: string): ProgStats {
  const link = native().openPinnedLink(linkPin);
  let progId: number;
  try {
    progId = link.info().progId;
  } finally {
    link.close();
  }
  const info = JSON.parse(execFileSync('bpftool', ['prog', 'show', 'id', String(progId), '--json']).toString()) as { run_time_ns?: number; run_cnt?: number };
  return { runNs: info.run_time_ns ?? 0, runs: info.run_cnt ?? 0 };
}

const perRun = (a: ProgStats, b: ProgStats): number => (b.runs > a.runs ? (b.runNs - a.runNs) / (b.runs - a.runs) : NaN);

export async function runObserveBench(mesh: MeshLab): Promise<Record<string, number>> {
  const pod = mesh.pod('obs');
  await mesh.init(pod);
  await mesh.relay(pod, 'echo', false, ['--quiet']);
  const pinDir = mesh.pinDir(pod);
  const statsBefore = readFileSync(STATS_SYSCTL, 'utf8').trim();
  writeFileSync(STATS_SYSCTL, '1');
  const rate: Record<'off' | 'on', number[]> = { off: [], on: [] };
  const connectNs: Record<'off' | 'on', number[]> = { off: [], on: [] };
  const sockopsNs: Record<'off' | 'on', number[]> = { off: [], on: [] };
  let events = 0;
  let lost = 0n;
  let onConns = 0;
  try {
    for (let i = 0; i < ROUNDS * 2; i++) {
      const mode = i % 2 === 0 ? 'off' : 'on';
      const obs = mode === 'on' ? new Observation(select({ bpffs: BPFFS, pod: pod.netnsName, cgroup: undefined }), { bpffs: BPFFS, onEvent: () => events++ }) : null;
      obs?.start();
      const c0 = progStats(join(pinDir, 'link_connect4'));
      const s0 = progStats(join(pinDir, 'link_sockops'));
      const r = await mesh.lab.exec(pod, process.execPath, [CONN_RATE, '10.90.0.77', '7', String(CONNS), String(SECONDS)], APP, (SECONDS + 20) * 1000);
      const c1 = progStats(join(pinDir, 'link_connect4'));
      const s1 = progStats(join(pinDir, 'link_sockops'));
      if (obs !== null) {
        await new Promise((res) => setTimeout(res, 200)); // the last events
        obs.close();
        lost += obs.dropped();
      }
      if (r.code !== 0) throw new Error(`conn-rate failed: ${r.stderr}`);
      const res = JSON.parse(r.stdout) as { ok: number; errors: number; perSec: number };
      if (res.errors > 0) throw new Error(`conn-rate: ${res.errors} connections failed`);
      rate[mode].push(res.perSec);
      if (mode === 'on') onConns += res.ok;
      connectNs[mode].push(perRun(c0, c1));
      sockopsNs[mode].push(perRun(s0, s1));
    }
  } finally {
    writeFileSync(STATS_SYSCTL, statsBefore);
  }
  const off = median(rate.off);
  const on = median(rate.on);
  const eventsPerConn = events / Math.max(onConns, 1);
  // Extra wall time per connection (the machine's, at CONNS in parallel), spread over its events.
  const perEventUs = ((1 / on - 1 / off) * 1e6) / Math.max(eventsPerConn, 1);
  const result = {
    connPerSecOff: round(off, 0),
    connPerSecOn: round(on, 0),
    ratio: round(on / off, 3),
    eventsPerConn: round(eventsPerConn, 2),
    perEventUs: round(perEventUs, 2),
    lostEvents: Number(lost),
    connect4NsOff: round(median(connectNs.off), 0),
    connect4NsOn: round(median(connectNs.on), 0),
    sockopsNsOff: round(median(sockopsNs.off), 0),
    sockopsNsOn: round(median(sockopsNs.on), 0),
  };
  printTable(`bpfmesh observe: new connections/s, ${CONNS} loops, median of ${ROUNDS} x ${SECONDS} s each, off and on alternating`, ['observation', 'conn/s', 'connect4 ns/call', 'sockops ns/call'], [
    ['off', result.connPerSecOff, result.connect4NsOff, result.sockopsNsOff],
    ['on (events read by an observer)', result.connPerSecOn, result.connect4NsOn, result.sockopsNsOn],
  ]);
  process.stdout.write(
    `  on/off ${result.ratio}; ${result.eventsPerConn} events per connection, ${result.lostEvents} lost; ` +
      `about ${result.perEventUs} µs of wall time per event at ${CONNS} loops; in the connect program ${result.connect4NsOn - result.connect4NsOff} ns per call (one event)\n`,
  );
  return result;
}
