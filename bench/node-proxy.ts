// BENCH_ONLY=node-proxy: memory of one node proxy (`bpfmesh node --proxy`)
// serving N pods against the same N pods with a `bpfmesh proxy` sidecar
// each, for N = 1, 20, 100 (BENCH_NODE_PROXY_PODS), idle and with 1000
// connections spread over the pods (opaque TCP to an echo server in an
// unmeshed pod on the same bridge). Every pod has its own identity (a
// certificate from the test control plane's identity service over TLS, for a
// token of its own service account) and its own discovery (destination over
// mTLS, the echo server resolved per pod), on both sides, as in a cluster.
// Pods are laid out as kubelet does and wired to a bridge; the agent runs as
// a child process in a cgroup under the node-wide attach root. RSS from
// /proc/<pid>/status (VmRSS). Both setups are measured in one run, one after
// the other, on the same pods. BENCH_NODE_PROXY_SIDECARS=0 measures the node
// proxy alone (quicker, for looking into its memory).
import { type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../src/config/paths.js';
import { defaultServerNames } from '../src/controlplane/server-tls.js';
import { metricValue, startTestControlPlane, type TestControlPlane } from '../test/helpers/control-plane.js';
import type { BridgedPod } from '../test/helpers/pod-bridge.js';
import { NetnsRelay } from '../test/helpers/netns-relay.js';
import { APP, APP_SERVER, PodProcess } from '../test/helpers/mesh.js';
import { killed, NodeProxyLab, rssMb, runAsMain, sleep, spawnInCgroup, until } from './node-proxy-lab.js';
import { printTable, round } from './stats.js';

const SIZES = (process.env['BENCH_NODE_PROXY_PODS'] ?? '1,20,100').split(',').map(Number);
const CONNS = Number(process.env['BENCH_NODE_PROXY_CONNS'] ?? 1000);
const SIDECARS = process.env['BENCH_NODE_PROXY_SIDECARS'] !== '0';
/** A folder: the idle node proxy writes a heap snapshot there for each size (to see where its memory goes). */
const HEAP_DIR = process.env['BENCH_NODE_PROXY_HEAP'];
const POD_CONNS = join(REPO_ROOT, 'dist', 'bench', 'pod-conns.js');
const DOMAIN = 'cluster.local';
const identityOf = (i: number): string => `sa-p${i}.bench.serviceaccount.identity.${DOMAIN}`;

async function holdConns(lab: NodeProxyLab, target: BridgedPod, pods: BridgedPod[]): Promise<ChildProcess> {
  const per = Math.ceil(CONNS / pods.length);
  const child = spawnInCgroup(join(lab.node.cgroupRoot, 'system', 'load'), [POD_CONNS, target.ip, '9000', String(per), ...pods.map((p) => p.pod.netns)]);
  lab.children.push(child);
  const p = new PodProcess(child);
  await p.waitFor((e) => e.event.startsWith('holding'), 120_000);
  return child;
}

/**
 * The control plane over TLS (identity on a port of its own, destination
 * with mTLS), as a cluster's: identity for each pod's own token, discovery
 * of the echo server.
 */
async function controlPlane(pods: BridgedPod[], echo: BridgedPod): Promise<TestControlPlane> {
  // Served on loopback here with TLS; the pods and the agent reach it through relays at a pod's address (off loopback: TLS, as in a cluster).
  const tokens = pods.map((p, i) => `  "tr.bench.sa-p${i}.${p.pod.uid}": ${identityOf(i)}`);
  const services = [`  - name: "${echo.ip}:9000"`, `    endpoints: [{ addr: "${echo.ip}:9000" }]`];
  return startTestControlPlane([`trustDomain: ${DOMAIN}`, 'tokens:', ...tokens, 'services:', ...services, ''].join('\n'), { host: '127.0.0.1', port: 0 }, { serverTls: 'tls' });
}

/** LINKERD2_PROXY_* for the control plane at cpIp; the identity's own name and token file are the caller's. */
function controlEnv(cp: TestControlPlane, cpIp: string): NodeJS.ProcessEnv {
  const names = defaultServerNames(DOMAIN);
  return {
    LINKERD2_PROXY_DESTINATION_SVC_ADDR: `${cpIp}:8086`,
    LINKERD2_PROXY_DESTINATION_SVC_NAME: names.destination,
    LINKERD2_PROXY_IDENTITY_SVC_ADDR: `${cpIp}:8080`,
    LINKERD2_PROXY_IDENTITY_SVC_NAME: names.identity,
    LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS: readFileSync(join(cp.dir, 'state', 'trust-anchors.pem'), 'utf8'),
  };
}

/** Has the node proxy write a heap snapshot into dir (it was started with --heapsnapshot-signal). */
async function heapSnapshot(child: ChildProcess, dir: string): Promise<void> {
  const before = new Set(readdirSync(dir));
  child.kill('SIGUSR2');
  await until('heap snapshot', () => readdirSync(dir).some((f) => !before.has(f) && f.endsWith('.heapsnapshot')), 120_000);
  await sleep(3000); // written in one go after it appears
}

/** Pods certified (distinct identities with an OK Certify) since `from` events. */
const certified = (cp: TestControlPlane, from: number): number => new Set(cp.certifies.slice(from).filter((e) => e.result === 'OK').map((e) => e.identity)).size;

export async function runNodeProxyBench(): Promise<Record<string, unknown>> {
  const lab = await NodeProxyLab.start('np');
  let cp: TestControlPlane | undefined;
  const relays: NetnsRelay[] = [];
  const rows: Array<Record<string, number>> = [];
  try {
    const echo = lab.bridge.attach(await lab.node.addPod());
    const app = new PodProcess(lab.node.spawn(echo.pod, process.execPath, [APP_SERVER], APP));
    lab.children.push(app.child);
    await app.waitFor((e) => e.event === 'ready');
    const max = Math.max(...SIZES);
    process.stdout.write(`\nnode-proxy: making ${max} pods on a bridge...\n`);
    const pods: BridgedPod[] = [];
    for (let i = 0; i < max; i++) pods.push(lab.bridge.attach(await lab.node.addPod()));
    cp = await controlPlane(pods, echo);
    // The control plane's pod and the agent's own (a DaemonSet pod without hostNetwork), both on the bridge.
    const cpPod = lab.bridge.attach(lab.node.createPod());
    const agentPod = lab.bridge.attach(lab.node.createPod());
    relays.push(await NetnsRelay.start(cpPod.pod.netns, cpPod.ip, 8086, cp.cp.address.port));
    relays.push(await NetnsRelay.start(cpPod.pod.netns, cpPod.ip, 8080, cp.cp.identityAddress.port));
    const kubePort = Number(new URL(lab.kube.url).port);
    relays.push(await NetnsRelay.start(agentPod.pod.netns, '127.0.0.1', kubePort, kubePort));
    lab.agentNetns = agentPod.pod.netns;
    const env = controlEnv(cp, cpPod.ip);
    // The sidecars' projected tokens, readable by the proxy uid.
    const tokenDir = join(cp.dir, 'tokens');
    mkdirSync(tokenDir);
    chmodSync(cp.dir, 0o755);
    pods.forEach((p, i) => writeFileSync(join(tokenDir, `p${i}`), `tr.bench.sa-p${i}.${p.pod.uid}`, { mode: 0o644 }));
    for (const n of SIZES) {
      const some = pods.slice(0, n);
      lab.announce(some.map((p) => p.pod));
      const row: Record<string, number> = { pods: n };

      if (SIDECARS) {
        // Sidecars: the agent enrolls (no --proxy), a `bpfmesh proxy` runs in each pod as the proxy uid, certified as its pod.
        const agent = lab.agent(false);
        await until(`${n} pods enrolled`, () => agent.enrolled >= n, 60_000);
        const seen = cp.certifies.length;
        const sidecars: ChildProcess[] = [];
        for (const [i, p] of some.entries()) {
          const own = { ...env, LINKERD2_PROXY_IDENTITY_LOCAL_NAME: identityOf(i), LINKERD2_PROXY_IDENTITY_TOKEN_FILE: join(tokenDir, `p${i}`) };
          sidecars.push(...(await lab.sidecars([p.pod], own)));
        }
        await until(`${n} sidecars certified`, () => certified(cp!, seen) >= n, 120_000);
        await sleep(2000);
        row['agentWithoutProxyMb'] = round(rssMb(agent.child.pid!));
        row['sidecarsIdleMb'] = round(sidecars.reduce((a, c) => a + rssMb(c.pid!), 0));
        const load = await holdConns(lab, echo, some);
        await sleep(1000);
        row['sidecarsConnsMb'] = round(sidecars.reduce((a, c) => a + rssMb(c.pid!), 0));
        await killed(load);
        for (const c of sidecars) await killed(c);
        await agent.stop();
      }

      // The node proxy: the same pods, one process; each pod certified with a token of its own service account.
      const seen = cp.certifies.length;
      const heap = HEAP_DIR === undefined ? {} : { NODE_OPTIONS: `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${HEAP_DIR}` };
      const agent = lab.agent(true, [], { ...heap, ...env, LINKERD2_PROXY_IDENTITY_LOCAL_NAME: `bpfmesh-node.bpfmesh.serviceaccount.identity.${DOMAIN}`, LINKERD2_PROXY_IDENTITY_TOKEN_FILE: join(cp.dir, 'no-such-token') });
      await until(`${n} pods served by the node proxy`, () => agent.count('serving pod') >= n || agent.child.exitCode !== null, 120_000);
      if (agent.child.exitCode !== null) throw new Error(`node proxy exited: ${agent.last(/./, 5)}`);
      if (certified(cp, seen) < n) throw new Error(`node proxy: only ${certified(cp, seen)} of ${n} pods certified: ${agent.last(/certify failed|token/i)}`);
      await sleep(2000);
      row['nodeProxyIdleMb'] = round(rssMb(agent.child.pid!));
      if (HEAP_DIR !== undefined) await heapSnapshot(agent.child, HEAP_DIR);
      const load = await holdConns(lab, echo, some);
      await sleep(1000);
      row['nodeProxyConnsMb'] = round(rssMb(agent.child.pid!));
      // Discovery per pod: each pod's outbound resolved the echo server over its own destination stream.
      row['controlStreams'] = await metricValue(cp.registry, 'bpfmesh_controlplane_streams');
      await killed(load);
      await agent.stop();
      rows.push(row);
    }
    const r = (x: Record<string, number>, k: string): number | string => x[k] ?? '-';
    const ratio = (a: number | undefined, b: number | undefined): number | string => (a === undefined || b === undefined ? '-' : round(a / b));
    printTable(
      `node proxy vs a sidecar per pod, each pod with its own identity and discovery: RSS in MB, idle and with ${CONNS} connections spread over the pods (target: 100 pods under 150 MB)`,
      ['pods', 'sidecars idle', 'node proxy idle', 'ratio', `sidecars ${CONNS} conns`, `node proxy ${CONNS} conns`, 'ratio', 'agent alone', 'control streams'],
      rows.map((x) => [x['pods']!, r(x, 'sidecarsIdleMb'), x['nodeProxyIdleMb']!, ratio(x['sidecarsIdleMb'], x['nodeProxyIdleMb']), r(x, 'sidecarsConnsMb'), x['nodeProxyConnsMb']!, ratio(x['sidecarsConnsMb'], x['nodeProxyConnsMb']), r(x, 'agentWithoutProxyMb'), x['controlStreams']!]),
    );
    return { conns: CONNS, identity: true, discovery: true, rows, targetMb100Pods: 150 };
  } finally {
    try {
      for (const r of relays) await r.close();
      await cp?.cleanup();
    } finally {
      await lab.close();
    }
  }
}

runAsMain(module, runNodeProxyBench);
