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
import { join } from 'node:path';
import { REPO_ROOT } from '../src/config/paths.js';
import { perRun, progStats, withBpfStats } from './bpf-stats.js';
import { APP, BPFFS, type MeshLab } from '../test/helpers/mesh.js';
import { select } from '../src/observe/sources.js';
import { Observation } from '../src/observe/session.js';
import { median, printTable, round } from './stats.js';

const CONN_RATE = join(REPO_ROOT, 'dist', 'bench', 'conn-rate.js');
const ROUNDS = Number(process.env['BENCH_OBSERVE_ROUNDS'] ?? 3);
const SECONDS = 4;
const CONNS = 8;

export async function runObserveBench(mesh: MeshLab): Promise<Record<string, number>> {
  const pod = mesh.pod('obs');
  await mesh.init(pod);
  await mesh.relay(pod, 'echo', false, ['--quiet']);
  const pinDir = mesh.pinDir(pod);
  const rate: Record<'off' | 'on', number[]> = { off: [], on: [] };
  const connectNs: Record<'off' | 'on', number[]> = { off: [], on: [] };
  const sockopsNs: Record<'off' | 'on', number[]> = { off: [], on: [] };
  let events = 0;
  let lost = 0n;
  let onConns = 0;
  await withBpfStats(async () => {
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
  });
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
