// BENCH_ONLY=node-proxy-load: HTTP/1.1 throughput and latency between two
// pods of a node, pod a -> pod b, through (1) a `bpfmesh proxy` sidecar in
// each pod, (2) the node proxy (`bpfmesh node --proxy`), (3) the node proxy
// with one worker process (`--proxy-workers 1`), alternated ROUNDS times in
// one run. h2load --h1 in pod a (as the app uid), plaintext, 16 connections.
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../src/log/logger.js';
import { ensureBpffs } from '../src/intercept/mounts.js';
import { uninstallNode, type NodeScope } from '../src/intercept/node-wide.js';
import { cleanupOnExit } from '../src/lab/lab.js';
import { startFakeKube } from '../test/helpers/fake-kube.js';
import { KubeletNode } from '../test/helpers/kube-pods.js';
import { PodBridge } from '../test/helpers/pod-bridge.js';
import { APP, APP_SERVER, CLI, PROXY, PodProcess } from '../test/helpers/mesh.js';
import { AgentProc, killed, sleep, until } from './node-proxy.js';
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
  const kube = await startFakeKube();
  const node = new KubeletNode();
  const bridge = new PodBridge(node);
  const bpffs = mkdtempSync(join(tmpdir(), 'bpfmesh-bench-npl-'));
  ensureBpffs(bpffs, false);
  const scope: NodeScope = { bpffs, bpffsExplicit: true, cgroupRoot: node.cgroupRoot };
  const children: ChildProcess[] = [];
  let tornDown = false;
  const teardown = (): void => {
    if (tornDown) return;
    tornDown = true;
    for (const c of children) c.kill('SIGKILL');
    try {
      uninstallNode(scope, createLogger({ logFormat: 'plain', logLevel: 'warn' }));
    } finally {
      node.cleanup();
      bridge.cleanup();
      execFileSync('umount', [bpffs]);
      rmdirSync(bpffs);
    }
  };
  const unregister = cleanupOnExit({ cleanup: teardown });
  const agentCgroup = join(node.cgroupRoot, 'system', 'agent');
  const results: Record<string, { rps: number[]; meanMs: number[] }> = Object.fromEntries(MODES.map((m) => [m, { rps: [], meanMs: [] }]));
  try {
    const a = bridge.attach(await node.addPod());
    const b = bridge.attach(await node.addPod());
    const app = new PodProcess(node.spawn(b.pod, process.execPath, [APP_SERVER], APP));
    children.push(app.child);
    await app.waitFor((e) => e.event === 'ready');
    for (const [i, p] of [a, b].entries()) kube.setPod({ metadata: { name: `p${i}`, namespace: 'bench', uid: p.pod.uid, annotations: { 'linkerd.io/inject': 'enabled' } }, spec: { nodeName: 'bench-np' } });
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
        const agent = new AgentProc(agentCgroup, kube, scope, proxy, mode === 'node proxy + 1 worker' ? ['--proxy-workers', '1'] : []);
        children.push(agent.child);
        const sidecars: ChildProcess[] = [];
        if (proxy) {
          await until('both pods served', () => agent.count('serving pod') >= 2 || agent.child.exitCode !== null, 60_000);
        } else {
          await until('both pods enrolled', () => agent.count('interception in place') + agent.count('interception updated') + agent.count('interception adopted') >= 2, 60_000);
          for (const p of [a, b]) {
            const c = node.spawn(p.pod, process.execPath, [CLI, 'proxy'], PROXY);
            sidecars.push(c);
            children.push(c);
            let err = '';
            c.stdout!.resume();
            c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
            await until('sidecar listening', () => err.includes('admin listening') || c.exitCode !== null, 60_000);
          }
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
    await Promise.all(children.map((c) => killed(c)));
    try {
      teardown();
    } finally {
      unregister();
      await kube.close();
    }
  }
}

if (require.main === module) {
  runNodeProxyLoadBench().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
