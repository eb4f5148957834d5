// BENCH_ONLY=node-proxy-load: HTTP/1.1 throughput and latency between two
// pods of a node, pod a -> pod b, through (1) a `bpfmesh proxy` sidecar in
// each pod, (2) the node proxy (`bpfmesh node --proxy`), (3) the node proxy
// with one worker process (`--proxy-workers 1`), alternated ROUNDS times in
// one run. h2load --h1 in pod a (as the app uid), plaintext, 16 connections.
import type { ChildProcess } from 'node:child_process';
import { APP, APP_SERVER, PodProcess } from '../test/helpers/mesh.js';
import { killed, NodeProxyLab, runAsMain, sleep, until } from './node-proxy-lab.js';
import { median, printTable, round } from './stats.js';

const ROUNDS = Number(process.env['BENCH_NODE_LOAD_ROUNDS'] ?? 2);
const REQUESTS = Number(process.env['BENCH_NODE_LOAD_REQUESTS'] ?? 20000);
const MODES = ['sidecars', 'node proxy', 'node proxy + 1 worker'] as const;

/** h2load's "finished in …, N req/s" and "time for request: min max mean". */
function parseH2load(out: string): { rps: number; meanMs: number } {
  const rps = Number(/finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(out)?.[1]);
  const m = /time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)/.exec(out);
  const mean = m === null ? NaN : Number(m[1]) * (m[2] === 'us' ? 1e-3 : m[2] === 's' ? 1e3 : 1);
  return { rps, meanMs: mean };
}

export async function runNodeProxyLoadBench(): Promise<Record<string, unknown>> {
  const lab = await NodeProxyLab.start('npl');
  const { node, bridge } = lab;
  const results: Record<string, { rps: number[]; meanMs: number[] }> = Object.fromEntries(MODES.map((m) => [m, { rps: [], meanMs: [] }]));
  try {
    const a = bridge.attach(await node.addPod());
    const b = bridge.attach(await node.addPod());
    const app = new PodProcess(node.spawn(b.pod, process.execPath, [APP_SERVER], APP));
    lab.children.push(app.child);
    await app.waitFor((e) => e.event === 'ready');
    lab.announce([a.pod, b.pod]);
    const load = async (mode: (typeof MODES)[number]): Promise<void> => {
      const r = await node.exec(a.pod, 'h2load', ['--h1', '-n', String(REQUESTS), '-c', '16', '-t', '1', `http://${b.ip}:8080/`], APP, 180_000);
      const parsed = parseH2load(r.stdout);
      // Every request must have succeeded, or the figures mean nothing.
      if (!Number.isFinite(parsed.rps) || !new RegExp(`${REQUESTS} succeeded, 0 failed`).test(r.stdout)) {
        throw new Error(`node-proxy-load: ${mode}: h2load failed: ${r.stdout.slice(-600)} ${r.stderr.slice(-300)}`);
      }
      results[mode]!.rps.push(parsed.rps);
      results[mode]!.meanMs.push(parsed.meanMs);
    };
    for (let round_ = 0; round_ < ROUNDS; round_++) {
      for (const mode of MODES) {
        const proxy = mode !== 'sidecars';
        const agent = lab.agent(proxy, mode === 'node proxy + 1 worker' ? ['--proxy-workers', '1'] : []);
        let sidecars: ChildProcess[] = [];
        if (proxy) {
          await until('both pods served', () => agent.count('serving pod') >= 2 || agent.child.exitCode !== null, 60_000);
        } else {
          await until('both pods enrolled', () => agent.enrolled >= 2, 60_000);
          sidecars = await lab.sidecars([a.pod, b.pod]);
        }
        await sleep(mode === 'node proxy + 1 worker' ? 2000 : 500);
        await load(mode);
        for (const c of sidecars) await killed(c);
        await agent.stop();
      }
    }
    const rows = MODES.map((m) => ({ mode: m, rps: round(median(results[m]!.rps)), meanMs: round(median(results[m]!.meanMs)) }));
    const base = rows[0]!.rps;
    printTable(`pod a -> pod b, HTTP/1.1 (h2load --h1, ${REQUESTS} requests, 16 connections), median of ${ROUNDS} alternated rounds`, ['through', 'req/s', 'mean latency ms', 'vs sidecars'], rows.map((r) => [r.mode, r.rps, r.meanMs, round(r.rps / base)]));
    return { rounds: ROUNDS, requests: REQUESTS, rows };
  } finally {
    await lab.close();
  }
}

runAsMain(module, runNodeProxyLoadBench);
