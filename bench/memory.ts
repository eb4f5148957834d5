// BENCH_ONLY=memory: the sidecar proxy's RSS (VmRSS of `bpfmesh proxy`, no
// control plane, as the proxy section runs it) in a client and a server pod
// with BPF interception: idle, with 1000 open opaque connections (client ->
// server:9000 echo, through both proxies), after load (HTTP/1.1 keep-alive
// and HTTP/2 through both) and with 1000 connections again after that load.
// Variants side by side in one run: this checkout with Node's default flags,
// with the image's NODE_OPTIONS (Dockerfile), and, when
// BENCH_BASELINE_CLI names another checkout's built dist/src/cli/main.js,
// that checkout with Node's defaults (a before/after pair).
import { join } from 'node:path';
import { REPO_ROOT } from '../src/config/paths.js';
import type { LabPod } from '../src/lab/lab.js';
import { APP, CLI, MeshLab, PROXY, PodProcess } from '../test/helpers/mesh.js';
import { parseWrk, rssMb } from './proxy.js';
import { printTable, round } from './stats.js';

const DIST = join(REPO_ROOT, 'dist');
const APP_SERVER = join(DIST, 'test', 'fixtures', 'app-server.js');
const HOLD = join(DIST, 'bench', 'hold-conns.js');
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 4);
const CONNS = 1000;

/** The V8 flags the image gives every bpfmesh process (Dockerfile: ENV NODE_OPTIONS); keep the two the same. */
export const IMAGE_NODE_OPTIONS = '--max-semi-space-size=4';

interface Variant {
  name: string;
  cli: string;
  nodeOptions: string;
}

export interface MemoryRow {
  variant: string;
  /** client/server proxy RSS in MB at each point. */
  idle: [number, number];
  conns: [number, number];
  afterLoad: [number, number];
  connsAfterLoad: [number, number];
  keepAliveReqPerSec: number;
  h2ReqPerSec: number;
}

async function startProxy(mesh: MeshLab, pod: LabPod, v: Variant): Promise<PodProcess> {
  const env = { ...process.env, LINKERD2_PROXY_LOG: 'warn', NODE_OPTIONS: v.nodeOptions };
  const p = new PodProcess(mesh.lab.spawn(pod, process.execPath, [v.cli, 'proxy'], PROXY, { env }));
  for (let i = 0; i < 100; i++) {
    const r = await mesh.lab.exec(pod, 'curl', ['-s', '--max-time', '1', 'http://127.0.0.1:4191/ready'], APP);
    if (r.stdout === 'ready\n') return p;
    if (p.child.exitCode !== null) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`${v.name}: proxy in ${pod.name} did not become ready: ${p.stderr}`);
}

async function measureVariant(mesh: MeshLab, v: Variant, tag: string): Promise<MemoryRow> {
  const client = mesh.pod(`m${tag}c`);
  const server = mesh.pod(`m${tag}s`);
  const proxies: PodProcess[] = [];
  const procs: PodProcess[] = [];
  try {
    for (const pod of [client, server]) {
      await mesh.init(pod);
      proxies.push(await startProxy(mesh, pod, v));
    }
    const app = new PodProcess(mesh.lab.spawn(server, process.execPath, [APP_SERVER], APP));
    procs.push(app);
    await app.waitFor((e) => e.event === 'ready');
    const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 2000));
    const rss = (): [number, number] => [rssMb(proxies[0]!.child.pid!), rssMb(proxies[1]!.child.pid!)];
    const withConns = async (): Promise<[number, number]> => {
      const hold = new PodProcess(mesh.lab.spawn(client, process.execPath, [HOLD, server.ip4, '9000', String(CONNS)], APP));
      try {
        await hold.waitFor((e) => e.event.startsWith('holding'), 60_000);
        await settle();
        return rss();
      } finally {
        hold.stop();
        await new Promise((r) => setTimeout(r, 1000));
      }
    };
    await settle();
    const idle = rss();
    const conns = await withConns();
    const url = (port: number): string => `http://${server.ip4}:${port}/`;
    const wrk = await mesh.lab.exec(client, 'wrk', ['-t1', '-c32', `-d${SECONDS}s`, '--latency', url(8080)], APP, (SECONDS + 20) * 1000);
    const h2 = await mesh.lab.exec(client, 'h2load', ['-c4', '-m16', '-D', String(SECONDS), url(8081)], APP, (SECONDS + 20) * 1000);
    await settle();
    const afterLoad = rss();
    const connsAfterLoad = await withConns();
    return {
      variant: v.name,
      idle,
      conns,
      afterLoad,
      connsAfterLoad,
      keepAliveReqPerSec: round(parseWrk(wrk.stdout).reqPerSec, 0),
      h2ReqPerSec: round(Number(/finished in [^,]+, ([\d.]+) req\/s/.exec(h2.stdout)?.[1] ?? NaN), 0),
    };
  } finally {
    for (const p of [...procs, ...proxies]) p.stop();
  }
}

export async function runMemoryBench(mesh: MeshLab): Promise<MemoryRow[]> {
  const variants: Variant[] = [
    { name: 'node defaults', cli: CLI, nodeOptions: '' },
    { name: `image flags (${IMAGE_NODE_OPTIONS})`, cli: CLI, nodeOptions: IMAGE_NODE_OPTIONS },
  ];
  const baseline = process.env['BENCH_BASELINE_CLI'];
  if (baseline !== undefined && baseline !== '') {
    variants.unshift({ name: 'baseline, node defaults', cli: baseline, nodeOptions: '' });
  }
  const rows: MemoryRow[] = [];
  for (const [i, v] of variants.entries()) rows.push(await measureVariant(mesh, v, String(i)));
  const pair = (p: [number, number]): string => `${p[0]}/${p[1]}`;
  printTable(
    `sidecar proxy RSS, client/server MB (${CONNS} open opaque connections; load: wrk -c32 and h2load -c4 -m16, ${SECONDS} s each)`,
    ['variant', 'idle', `${CONNS} conns`, 'after load', `${CONNS} conns after load`, 'keep-alive req/s', 'h2 req/s'],
    rows.map((r) => [r.variant, pair(r.idle), pair(r.conns), pair(r.afterLoad), pair(r.connsAfterLoad), r.keepAliveReqPerSec, r.h2ReqPerSec]),
  );
  return rows;
}
