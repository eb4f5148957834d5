// npm run bench: side-by-side measurements in one run, reported as ratios.
// Not a test: it asserts nothing and the numbers depend on the machine.
//   1. init wall time: `bpfmesh init` vs proxy-init's iptables rules.
//   2. the app<->proxy hop: loopback TCP (direct) vs bpfmesh's socket path
//      vs bpfmesh without it vs iptables REDIRECT, for a Node client/server
//      pair: ping-pong latency of 100-byte messages and bulk throughput, with
//      a client that hashes every byte (it reads slower than the echo writes)
//      and with one that only counts them (it keeps up); a row with a 64 MiB
//      high mark (reached late in a run, if at all) shows what the bound costs.
//      Plus a reader that stops: the memory the pair holds once the writer
//      is pushed back (the socket path is bounded; loopback TCP is the baseline).
//   3. the proxy: direct vs bpfmesh vs iptables under HTTP/1.1, HTTP/2,
//      new connections, opaque TCP, a fixed rate, and 1000 open connections;
//      HAProxy behind the same rules as a reference for the HTTP loads
//      (BENCH_PROFILE=keep-alive|new-connection|http2: that load alone, with
//      CPU profiles of the bpfmesh proxies).
//   4. mTLS between the proxies vs plaintext between the same proxies.
//   5. tap: keep-alive req/s with tap off, idle, a tapper matching nothing, a tapper taking all.
//   6. observe: new connections/s with `bpfmesh observe` off vs on (bench/observe.ts).
//   7. bpf-cost: new connections/s against iptables with the same relay, each BPF program's run time per new connection and per ping-pong round trip (bench/bpf-cost.ts).
//   8. node-proxy, node-proxy-load, cni-forward: one proxy per node against sidecars (memory, req/s), CNI ADD forwarded vs in-process.
//   9. memory: a sidecar proxy's RSS idle, with 1000 connections and after load, per Node flag set (bench/memory.ts).
// BENCH_ONLY=init,path,proxy,mtls,node-attach,hostile,tap,observe,bpf-cost,node-proxy,node-proxy-load,cni-forward,memory picks sections. Prints tables and writes
// bench/results/latest.json (sections not run keep their previous results).
import { runHostileBench } from './hostile.js';
import { runObserveBench } from './observe.js';
import { runBpfCostBench } from './bpf-cost.js';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../src/config/paths.js';
import { MeshLab, APP, BPFFS, PROXY, PodProcess, runCli } from '../test/helpers/mesh.js';
import { heldBytes, skmem } from '../test/helpers/skmem.js';
import { install } from '../src/intercept/install.js';
import { resolvePod } from '../src/intercept/pod.js';
import { parseInitFlags } from '../src/config/pod-flags.js';
import { createLogger } from '../src/log/logger.js';
import type { LabPod } from '../src/lab/lab.js';
import { DEFAULT_RULES, proxyInitCommands } from './iptables.js';
import { median, printTable, round } from './stats.js';
import { runProxyBench } from './proxy.js';
import { runNodeAttachBench } from './node-attach.js';
import { runMtlsBench } from './mtls.js';
import { runTapBench } from './tap.js';
import { runNodeProxyBench } from './node-proxy.js';
import { runCniForwardBench } from './cni-forward.js';
import { runNodeProxyLoadBench } from './node-proxy-load.js';
import { runMemoryBench } from './memory.js';

const STREAM = join(REPO_ROOT, 'dist', 'test', 'fixtures', 'stream.js');
const SOCKPATH_STRESS = join(REPO_ROOT, 'dist', 'test', 'fixtures', 'sockpath-stress.js');
const INIT_ROUNDS = Number(process.env['BENCH_INIT_ROUNDS'] ?? 8);
const PATH_ROUNDS = Number(process.env['BENCH_PATH_ROUNDS'] ?? 5);
// ~0.6 s a run: with 5000 round trips (0.15 s) five rounds' ratios ranged from 0.77 to 0.87 on this machine.
const PINGPONG_N = 20000;
const BULK_MIB = 128;

const ms = (startNs: bigint): number => Number(process.hrtime.bigint() - startNs) / 1e6;

async function benchInit(mesh: MeshLab): Promise<Record<string, number>> {
  const bpf: number[] = [];
  const lib: number[] = [];
  const ipt: number[] = [];
  const bare: number[] = [];
  // BENCH_BASELINE_CLI: another checkout's built dist/src/cli/main.js, timed in the same rounds (a before/after pair).
  const baselineCli = process.env['BENCH_BASELINE_CLI'] || undefined;
  const base: number[] = [];
  const log = createLogger({ logFormat: 'plain', logLevel: 'warn' });
  for (let i = 0; i < INIT_ROUNDS; i++) {
    const p1 = mesh.pod(`i${i}`);
    const p2 = mesh.pod(`t${i}`);
    const p3 = mesh.pod(`l${i}`);
    let t = process.hrtime.bigint();
    install(resolvePod({ cgroup: p3.cgroup, netns: p3.netns, podName: undefined, bpffs: BPFFS, bpffsExplicit: false }), parseInitFlags([]), { dir: BPFFS, explicit: false }, log);
    lib.push(ms(t));
    t = process.hrtime.bigint();
    const r = await runCli(['init', '--netns', p1.netns, '--cgroup', p1.cgroup, '--log-level', 'warn']);
    bpf.push(ms(t));
    if (r.code !== 0) throw new Error(`init failed: ${r.stderr}`);
    if (baselineCli !== undefined) {
      const p4 = mesh.pod(`b${i}`);
      t = process.hrtime.bigint();
      const rb = spawnSync(process.execPath, [baselineCli, 'init', '--netns', p4.netns, '--cgroup', p4.cgroup, '--log-level', 'warn'], { stdio: 'pipe' });
      base.push(ms(t));
      if (rb.status !== 0) throw new Error(`baseline init failed: ${rb.stderr.toString()}`);
    }
    t = process.hrtime.bigint();
    spawnSync(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    bare.push(ms(t));
    t = process.hrtime.bigint();
    for (const cmd of proxyInitCommands(DEFAULT_RULES)) {
      const res = spawnSync('nsenter', [`--net=${p2.netns}`, '--', ...cmd], { stdio: 'pipe' });
      if (res.status !== 0) throw new Error(`${cmd.join(' ')}: ${res.stderr.toString()}`);
    }
    ipt.push(ms(t));
  }
  const result = {
    bpfmeshInitMs: round(median(bpf)),
    bpfmeshInstallMs: round(median(lib)),
    iptablesInitMs: round(median(ipt)),
    nodeStartMs: round(median(bare)),
    ratio: round(median(bpf) / median(ipt)),
    installRatio: round(median(lib) / median(ipt)),
    ...(base.length > 0 ? { baselineInitMs: round(median(base)), baselineRatio: round(median(base) / median(ipt)) } : {}),
  };
  printTable(`init wall time, median of ${INIT_ROUNDS} (lower is better)`, ['path', 'ms', 'vs iptables'], [
    ['bpfmesh init (CLI process: Node start-up, load, attach, pin)', result.bpfmeshInitMs, result.ratio],
    ['bpfmesh install, in process (what a node agent pays per pod)', result.bpfmeshInstallMs, result.installRatio],
    ...(result.baselineInitMs !== undefined ? [['bpfmesh init of BENCH_BASELINE_CLI (the same, before)', result.baselineInitMs, result.baselineRatio!] as [string, number, number]] : []),
    ['proxy-init rules (iptables + ip6tables, one call per rule)', result.iptablesInitMs, 1],
    ['Node start-up alone (node -e 0: the floor of any CLI process)', result.nodeStartMs, round(result.nodeStartMs / result.iptablesInitMs)],
  ]);
  return result;
}

interface PathScenario {
  name: string;
  pod: LabPod;
  host: string;
  port: number;
}

async function benchPath(mesh: MeshLab): Promise<Record<string, Record<string, number>>> {
  const scenario = async (name: string, setup: (pod: LabPod) => Promise<void>, host: (pod: LabPod) => string, port: number): Promise<PathScenario> => {
    const pod = mesh.pod(name);
    await setup(pod);
    await mesh.relay(pod, 'echo', false, ['--quiet']);
    return { name, pod, host: host(pod), port };
  };
  const elsewhere = (p: LabPod): string => p.ip4.replace(/\.\d+$/, '.250');
  const scenarios = [
    await scenario('direct', async () => {}, () => '127.0.0.1', 4140),
    await scenario('bpfmesh', async (p) => void (await mesh.init(p)), elsewhere, 7000),
    await scenario('bpfmesh-nosockpath', async (p) => void (await mesh.init(p, ['--no-sockpath'])), elsewhere, 7000),
    // What the bound costs: with a 64 MiB high mark most of these loads' bytes take the redirect (76 % of the hashing bulk's messages).
    await scenario('bpfmesh-high-64Mi', async (p) => void (await mesh.init(p, ['--sockpath-high-water', '64Mi'])), elsewhere, 7000),
    await scenario('iptables', async (p) => {
      for (const cmd of proxyInitCommands(DEFAULT_RULES)) execFileSync('nsenter', [`--net=${p.netns}`, '--', ...cmd], { stdio: 'pipe' });
    }, elsewhere, 7000),
  ];
  const lat: Record<string, number[]> = {};
  const tput: Record<string, number[]> = {};
  const light: Record<string, number[]> = {};
  for (const s of scenarios) await streamN(mesh, s, 'pingpong', 500); // warm-up
  for (let round_ = 0; round_ < PATH_ROUNDS; round_++) {
    for (const s of scenarios) {
      const pp = await streamN(mesh, s, 'pingpong', PINGPONG_N);
      (lat[s.name] ??= []).push(pp['usPerRoundTrip']!);
      const bulk = await streamN(mesh, s, 'bulk', BULK_MIB);
      if ((bulk as Record<string, unknown>)['match'] !== true) throw new Error(`${s.name} bulk: the bytes back differ from those sent (sha256)`);
      (tput[s.name] ??= []).push((2 * BULK_MIB) / (bulk['ms']! / 1000));
      const fast = await streamN(mesh, s, 'bulk-light', BULK_MIB);
      if (fast['received'] !== fast['sent']) throw new Error(`${s.name} bulk-light: ${fast['received']} of ${fast['sent']} bytes back`);
      (light[s.name] ??= []).push((2 * BULK_MIB) / (fast['ms']! / 1000));
    }
  }
  const out: Record<string, Record<string, number>> = {};
  // Ratios are taken within each round (the scenarios ran one after the
  // other), then the median over rounds: the machine's speed drifts between
  // rounds by more than the differences measured here.
  const pairedRatio = (xs: number[], base: number[]): number => median(xs.map((x, i) => x / base[i]!));
  for (const s of scenarios) {
    out[s.name] = {
      usPerRoundTrip: round(median(lat[s.name]!), 1),
      latencyVsDirect: round(pairedRatio(lat[s.name]!, lat['direct']!)),
      mibPerSecond: round(median(tput[s.name]!), 0),
      throughputVsDirect: round(pairedRatio(tput[s.name]!, tput['direct']!)),
      lightMibPerSecond: round(median(light[s.name]!), 0),
      lightVsDirect: round(pairedRatio(light[s.name]!, light['direct']!)),
    };
  }
  out['slowReader'] = await benchSlowReader(mesh);
  printTable(
    `app <-> proxy hop, Node client and echo proxy, median of ${PATH_ROUNDS} rounds (${PINGPONG_N} round trips of 100 B; ${BULK_MIB} MiB each way; ratios within each round)`,
    ['path', 'us/round trip', 'vs direct', 'MiB/s', 'vs direct', 'MiB/s, client keeps up', 'vs direct'],
    scenarios.map((s) => {
      const o = out[s.name]!;
      return [s.name, o['usPerRoundTrip']!, o['latencyVsDirect']!, o['mibPerSecond']!, o['throughputVsDirect']!, o['lightMibPerSecond']!, o['lightVsDirect']!];
    }),
  );
  return out;
}

/**
 * A reader that stops: the app writes until the kernel pushes back, to a
 * proxy-side server that never reads. Memory of the pair from the sockets'
 * own accounting (ss skmem: bytes received and unread + queued to send),
 * loopback TCP (no mesh) vs bpfmesh's socket path.
 */
async function benchSlowReader(mesh: MeshLab): Promise<Record<string, number>> {
  const rows: Array<[string, number, number]> = [];
  for (const [name, meshed] of [['loopback TCP', false], ['bpfmesh socket path', true]] as const) {
    const pod = mesh.pod(meshed ? 'srb' : 'srd');
    if (meshed) await mesh.init(pod);
    const srv = new PodProcess(mesh.lab.spawn(pod, process.execPath, [SOCKPATH_STRESS, 'hold-server', '4140'], PROXY));
    let writer: PodProcess | null = null;
    try {
      await srv.waitFor((e) => e.event === 'listening');
      writer = new PodProcess(mesh.lab.spawn(pod, process.execPath, [SOCKPATH_STRESS, 'hold-client', meshed ? pod.ip4.replace(/\.\d+$/, '.250') : '127.0.0.1', meshed ? '7000' : '4140'], APP));
      const e = (await writer.waitFor((ev) => ev.event === 'pushed-back' || ev.event === 'error', 60_000)) as unknown as Record<string, unknown>;
      if (e['event'] !== 'pushed-back') throw new Error(`slow reader (${name}): ${JSON.stringify(e)}`);
      const pair = (await skmem(mesh.lab, pod)).filter((x) => x.local.endsWith(':4140') || x.peer.endsWith(':4140'));
      rows.push([name, pair.reduce((sum, x) => sum + heldBytes(x), 0), e['accepted'] as number]);
    } finally {
      writer?.stop();
      srv.stop();
    }
  }
  const mib = (b: number): number => round(b / (1 << 20), 2);
  printTable('a reader that stops: memory the app<->proxy pair holds once the writer is pushed back (lower is better)', ['path', 'MiB held (ss skmem r+w)', 'MiB the writer got in', 'vs loopback TCP'], rows.map(([n, held, acc]) => [n, mib(held), mib(acc), round(held / rows[0]![1])]));
  return { tcpHeldBytes: rows[0]![1], bpfmeshHeldBytes: rows[1]![1], tcpAcceptedBytes: rows[0]![2], bpfmeshAcceptedBytes: rows[1]![2], heldVsTcp: round(rows[1]![1] / rows[0]![1]) };
}

function streamN(mesh: MeshLab, s: PathScenario, mode: 'pingpong' | 'bulk' | 'bulk-light', n: number): Promise<Record<string, number>> {
  // A run still going after 60 s is stalled: keep the pod's sockets as they
  // were then (queues, windows, timers) for the error, before the kill at 120 s.
  let stalled = '';
  const snapshot = setTimeout(() => {
    const r = spawnSync('nsenter', [`--net=${s.pod.netns}`, '--', 'ss', '-tmnio'], { encoding: 'utf8' });
    stalled = `\nsockets in ${s.pod.name} after 60 s:\n${r.stdout}`;
  }, 60_000);
  return mesh.lab.exec(s.pod, process.execPath, [STREAM, mode, s.host, String(s.port), String(n)], APP, 120_000).then((r) => {
    clearTimeout(snapshot);
    const out = JSON.parse(r.stdout || '{}') as Record<string, number | string>;
    if (r.code !== 0 || out['error'] !== undefined) {
      const why = out['error'] ?? (r.stderr || (r.signal === 'SIGKILL' ? 'no answer within 120 s' : `exit ${r.code ?? r.signal}`));
      throw new Error(`${s.name} ${mode}: ${String(why)}${stalled}`);
    }
    return out as Record<string, number>;
  });
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: needs root (network namespaces, cgroups, BPF); run: sudo npm run bench\n');
    process.exit(1);
  }
  const mesh = new MeshLab(90);
  const cleanup = (): void => mesh.cleanup();
  process.once('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  try {
    const machine = { kernel: release(), cpus: cpus().length, cpu: cpus()[0]?.model ?? '?', node: process.version, date: new Date().toISOString() };
    process.stdout.write(`bpfmesh benchmarks on ${machine.cpus} x ${machine.cpu}, Linux ${machine.kernel}, Node ${machine.node}\n`);
    const only = process.env['BENCH_ONLY']?.split(',');
    const want = (name: string): boolean => only === undefined || only.includes(name);
    const init = want('init') ? await benchInit(mesh) : null;
    const path = want('path') ? await benchPath(mesh) : null;
    const proxy = want('proxy') ? await runProxyBench(mesh) : null;
    const mtls = want('mtls') ? await runMtlsBench(mesh) : null;
    const nodeAttach = want('node-attach') ? await runNodeAttachBench() : null;
    const hostile = want('hostile') ? await runHostileBench() : null;
    const tap = want('tap') ? await runTapBench(mesh) : null;
    const observe = want('observe') ? await runObserveBench(mesh) : null;
    const bpfCost = want('bpf-cost') ? await runBpfCostBench(mesh) : null;
    const nodeProxy = want('node-proxy') ? await runNodeProxyBench() : null;
    const cniForward = want('cni-forward') ? await runCniForwardBench() : null;
    const nodeProxyLoad = want('node-proxy-load') ? await runNodeProxyLoadBench() : null;
    const memory = want('memory') ? await runMemoryBench(mesh) : null;
    const dir = join(REPO_ROOT, 'bench', 'results');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'latest.json');
    const previous = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>) : {};
    const ran = Object.fromEntries(Object.entries({ init, path, proxy, mtls, 'node-attach': nodeAttach, hostile, tap, observe, 'bpf-cost': bpfCost, 'node-proxy': nodeProxy, 'cni-forward': cniForward, 'node-proxy-load': nodeProxyLoad, memory }).filter(([, v]) => v !== null));
    // When each section was last measured: a partial run leaves the others as they were.
    const measured = { ...(previous['measured'] as Record<string, string> | undefined), ...Object.fromEntries(Object.keys(ran).map((k) => [k, machine.date])) };
    writeFileSync(file, JSON.stringify({ ...previous, machine, measured, ...ran }, null, 2) + '\n');
    process.stdout.write(`\nwritten: bench/results/latest.json\n`);
  } finally {
    cleanup();
  }
}

void main();
