// BENCH_ONLY=node-attach: the DaemonSet agent's time from a pod's
// appearance in the Kubernetes API to its interception in place, with 100
// pods on the node (each a netns + a kubelet-named cgroup + a process; no
// veth: enrollment does not need one). The agent runs in this process
// against the fake API server, so both ends of the measurement read one clock.
//   paced: pods announced one after the other, each once the previous one is
//          in place (latency as a pod sees it on a node with up to 100 pods).
//   burst: all 100 announced at once (queueing included: the agent enrolls one pod at a time).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { KubeClient } from '../src/kube/client.js';
import { loadKubeAccess } from '../src/kube/config.js';
import { createLogger } from '../src/log/logger.js';
import { ensureBpffs } from '../src/intercept/mounts.js';
import { listEnrolled, uninstallNode, type NodeScope } from '../src/intercept/node-wide.js';
import { NodeAgent } from '../src/node/agent.js';
import { createNodeMetrics } from '../src/node/metrics.js';
import { startFakeKube } from '../test/helpers/fake-kube.js';
import { KubeletNode, type NodePod } from '../test/helpers/kube-pods.js';
import { median, printTable, round } from './stats.js';

const PODS = Number(process.env['BENCH_NODE_PODS'] ?? 100);
const NODE = 'bench-node';

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] ?? NaN;
}

const summary = (xs: number[]) => ({ medianMs: round(median(xs)), p90Ms: round(quantile(xs, 0.9)), maxMs: round(Math.max(...xs)) });

export async function runNodeAttachBench(): Promise<Record<string, unknown>> {
  const kube = await startFakeKube();
  const node = new KubeletNode();
  const bpffs = mkdtempSync(join(tmpdir(), 'bpfmesh-bench-node-'));
  ensureBpffs(bpffs, false);
  const scope: NodeScope = { bpffs, bpffsExplicit: true, cgroupRoot: node.cgroupRoot };
  const log = createLogger({ logFormat: 'plain', logLevel: 'warn' });
  const client = new KubeClient(loadKubeAccess({ kubeconfig: kube.kubeconfigPath }));
  const waiters = new Map<string, (t: number) => void>();
  const withdrawn = new Map<string, () => void>();
  const agent = new NodeAgent({
    nodeName: NODE,
    scope,
    hostProc: '/proc',
    podDefaultArgs: [],
    client,
    log,
    metrics: createNodeMetrics(NODE),
    onEnrolled: (uid) => waiters.get(uid)?.(performance.now()),
    onWithdrawn: (uid) => withdrawn.get(uid)?.(),
  });
  try {
    process.stdout.write(`\nnode-attach: making ${PODS} pods (netns + cgroup + process)...\n`);
    const pods: NodePod[] = [];
    for (let i = 0; i < PODS; i++) pods.push(await node.addPod({ systemd: i % 2 === 1 }));
    agent.start();
    while (!agent.ready) await new Promise((r) => setTimeout(r, 10));

    const inPlace = (p: NodePod): Promise<number> => new Promise((resolve) => waiters.set(p.uid, resolve));
    const announce = (p: NodePod, i: number): void =>
      void kube.setPod({ metadata: { name: `p${i}`, namespace: 'bench', uid: p.uid, annotations: { 'linkerd.io/inject': 'enabled', 'config.linkerd.io/skip-outbound-ports': '443' } }, spec: { nodeName: NODE } });

    const paced: number[] = [];
    for (const [i, p] of pods.entries()) {
      const done = inPlace(p);
      const t0 = performance.now();
      announce(p, i);
      paced.push((await done) - t0);
    }
    if (listEnrolled(scope).length !== PODS) throw new Error(`expected ${PODS} pods enrolled, found ${listEnrolled(scope).length}`);

    // Take them all away, then announce all at once.
    const gone = Promise.all(pods.map((p) => new Promise<void>((r) => withdrawn.set(p.uid, r))));
    for (const i of pods.keys()) kube.deletePod('bench', `p${i}`);
    await gone;
    const t0 = performance.now();
    const all = pods.map((p) => inPlace(p));
    for (const [i, p] of pods.entries()) announce(p, i);
    const burst = (await Promise.all(all)).map((t) => t - t0);

    const result = { pods: PODS, paced: summary(paced), burst: summary(burst), burstTotalMs: round(Math.max(...burst)), targetMedianMs: 50 };
    printTable(`node agent: pod announced -> interception in place, ${PODS} pods on the node (lower is better; target: median < 50 ms)`, ['arrival', 'median ms', 'p90 ms', 'max ms'], [
      ['paced (one pod at a time)', result.paced.medianMs, result.paced.p90Ms, result.paced.maxMs],
      [`burst (${PODS} pods at once)`, result.burst.medianMs, result.burst.p90Ms, result.burst.maxMs],
    ]);
    return result;
  } finally {
    await agent.stop();
    client.close();
    try {
      uninstallNode(scope, log);
    } finally {
      node.cleanup();
      execFileSync('umount', [bpffs]);
      rmdirSync(bpffs);
      await kube.close();
    }
  }
}

if (require.main === module) {
  runNodeAttachBench().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
