// mTLS between the proxies vs plaintext between proxies, in one
// run. A client pod and a server pod, each with `bpfmesh proxy`, and a
// `bpfmesh control-plane` in a pod of its own (one issuer; TLS/mTLS to it),
// twice: one pair whose control plane gives the server endpoint its identity (the proxies speak
// mTLS) and one where it gives none (plaintext). Same configuration and
// discovery path otherwise; the two are measured alternately.
// Loads, each run for both in turn: HTTP/1.1 keep-alive (wrk -c32), a new
// app connection per request (wrk, Connection: close; the proxies keep
// their pooled connections to each other), HTTP/2 (h2load -c4 -m16), and
// new opaque TCP connections (every one is a new proxy-to-proxy
// connection: with mTLS, a handshake). The proxies run with the image's
// Node flags (IMAGE_NODE_OPTIONS).
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../src/config/paths.js';
import type { LabPod } from '../src/lab/lab.js';
import { APP, identityName, MeshLab, meshProxyEnv, type PodProcess } from '../test/helpers/mesh.js';
import { IMAGE_NODE_OPTIONS } from './memory.js';
import { cpuS, parseWrk, runH2load } from './proxy.js';
import { median, printTable, round } from './stats.js';

const CONN_RATE = join(REPO_ROOT, 'dist', 'bench', 'conn-rate.js');
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 4);
const ROUNDS = Number(process.env['BENCH_MTLS_ROUNDS'] ?? 2);

export interface MtlsRow {
  load: string;
  plaintext: { perSec: number; p50Ms: number; p99Ms: number; proxyCpuS: number };
  mtls: { perSec: number; p50Ms: number; p99Ms: number; proxyCpuS: number };
  /** mTLS / plaintext, req/s or conn/s. */
  ratio: number;
}

interface Pair {
  client: LabPod;
  server: LabPod;
  proxies: PodProcess[];
}

/**
 * A client and a server pod with proxies and control planes; the control
 * plane gives the server endpoint an identity (mTLS) or none (plaintext).
 * Two pairs rather than two names for one endpoint: a proxy takes an
 * address's identity from any set that lists it.
 */
async function pair(mesh: MeshLab, dir: string, tag: string, mtls: boolean): Promise<Pair> {
  const client = mesh.pod(`${tag}c`);
  const server = mesh.pod(`${tag}s`);
  const sid = identityName(`${tag}-server`);
  const svc = (port: number): string[] => [`  - name: "${server.ip4}:${port}"`, `    endpoints: [{ addr: "${server.ip4}:${port}"${mtls ? `, identity: ${sid}` : ''} }]`];
  const config = join(dir, `${tag}.yaml`);
  writeFileSync(config, ['services:', ...svc(8080), ...svc(8081), ...svc(9000), ''].join('\n'));
  // The pair's control plane in a pod of its own, reached over TLS/mTLS as in a cluster.
  const cp = await mesh.controlPlanePod(`${tag}cp`, config, join(dir, 'state'));
  const anchors = readFileSync(join(dir, 'state', 'trust-anchors.pem'), 'utf8');
  const proxies: PodProcess[] = [];
  for (const [pod, sa] of [[client, `${tag}-client`], [server, `${tag}-server`]] as const) {
    await mesh.init(pod);
    // The image's Node flags: with Node's defaults the TLS proxies' young generation grows to 16 MiB semi-spaces
    // and V8 then runs a full mark-compact every ~200 ms that frees nothing (README, Benchmarks).
    const env = meshProxyEnv({ identity: identityName(sa), tokenFile: join(dir, 'token'), trustAnchorsPem: anchors, controlPlane: cp });
    proxies.push(await mesh.proxy(pod, env, IMAGE_NODE_OPTIONS.split(' ')));
  }
  await mesh.appServer(server);
  // Check the pair takes the path it is meant to before measuring it.
  const who = await mesh.curl(client, `http://${server.ip4}:8080/whoami`);
  const want = mtls ? `client-id ${identityName(`${tag}-client`)}` : 'client-id -';
  if (who !== want) throw new Error(`bench mtls: ${tag} pair answered "${who}", expected "${want}"`);
  return { client, server, proxies };
}

/** "p50/p99", or h2load's mean alone (it reports no percentiles per request). */
function latency(x: MtlsRow['mtls']): string {
  return Number.isNaN(x.p99Ms) ? `${x.p50Ms} (mean)` : `${x.p50Ms}/${x.p99Ms}`;
}

export async function runMtlsBench(mesh: MeshLab): Promise<MtlsRow[]> {
  const dir = mkdtempSync(join(tmpdir(), 'bpfmesh-bench-mtls-'));
  try {
    chmodSync(dir, 0o755);
    writeFileSync(join(dir, 'token'), 'bench');
    chmodSync(join(dir, 'token'), 0o644);
    const pairs = { plaintext: await pair(mesh, dir, 'pt', false), mtls: await pair(mesh, dir, 'mt', true) };

    const cpu = (p: Pair): number => p.proxies.reduce((s, x) => s + cpuS(x.child.pid!), 0);
    const wrk = async (p: Pair, extra: string[]): Promise<{ perSec: number; p50Ms: number; p99Ms: number }> => {
      const r = await mesh.lab.exec(p.client, 'wrk', ['-t1', '-c32', `-d${SECONDS}s`, '--latency', ...extra, `http://${p.server.ip4}:8080/`], APP, (SECONDS + 20) * 1000);
      const w = parseWrk(r.stdout);
      if (/Non-2xx|Socket errors/.test(r.stdout)) process.stderr.write(`bench mtls: wrk reported errors:\n${r.stdout}\n`);
      return { perSec: w.reqPerSec, p50Ms: w.p50Ms, p99Ms: w.p99Ms };
    };
    const conns = async (p: Pair): Promise<{ perSec: number; p50Ms: number; p99Ms: number }> => {
      const r = await mesh.lab.exec(p.client, process.execPath, [CONN_RATE, p.server.ip4, '9000', '8', String(SECONDS)], APP, (SECONDS + 20) * 1000);
      const o = JSON.parse(r.stdout || '{}') as { perSec?: number; errors?: number; p50Ms?: number; p99Ms?: number };
      if ((o.errors ?? 0) > 0) process.stderr.write(`bench mtls: ${o.errors} connection errors\n`);
      return { perSec: o.perSec ?? NaN, p50Ms: o.p50Ms ?? NaN, p99Ms: o.p99Ms ?? NaN };
    };
    const h2load = async (p: Pair): Promise<{ perSec: number; p50Ms: number; p99Ms: number }> => {
      const h = await runH2load(mesh, p.client, `http://${p.server.ip4}:8081/`, 'mtls');
      return { perSec: h.reqPerSec, p50Ms: h.p50Ms ?? NaN, p99Ms: NaN }; // the mean, as p50
    };
    const loads: Array<[string, (p: Pair) => Promise<{ perSec: number; p50Ms: number; p99Ms: number }>]> = [
      ['http1 keep-alive (wrk -c32), req/s', (p) => wrk(p, [])],
      ['http1 new app connection per request (wrk -c32), req/s', (p) => wrk(p, ['-H', 'Connection: close'])],
      ['http2 (h2load -c4 -m16), req/s', h2load],
      ['new opaque TCP connection each (8 loops), conn/s', conns],
    ];
    const rows: MtlsRow[] = [];
    for (const [load, run] of loads) {
      const samples: Record<'plaintext' | 'mtls', Array<{ perSec: number; p50Ms: number; p99Ms: number; proxyCpuS: number }>> = { plaintext: [], mtls: [] };
      await run(pairs.plaintext); // warm-up: pools, JIT
      await run(pairs.mtls);
      // Alternate, so drift of a shared machine hits both sides alike.
      for (let i = 0; i < ROUNDS; i++) {
        for (const kind of ['plaintext', 'mtls'] as const) {
          const c0 = cpu(pairs[kind]);
          const r = await run(pairs[kind]);
          samples[kind].push({ ...r, proxyCpuS: cpu(pairs[kind]) - c0 });
        }
      }
      const pick = (xs: typeof samples.mtls): MtlsRow['mtls'] => ({
        perSec: round(median(xs.map((x) => x.perSec)), 0),
        p50Ms: round(median(xs.map((x) => x.p50Ms))),
        p99Ms: round(median(xs.map((x) => x.p99Ms))),
        proxyCpuS: round(median(xs.map((x) => x.proxyCpuS))),
      });
      const plaintext = pick(samples.plaintext);
      const mtls = pick(samples.mtls);
      rows.push({ load, plaintext, mtls, ratio: round(mtls.perSec / plaintext.perSec) });
    }
    printTable(
      `mTLS vs plaintext between the proxies (two identical pod pairs, alternated; median of ${ROUNDS}, ${SECONDS} s each)`,
      ['load', 'plaintext', 'p50/p99 ms', 'mTLS', 'p50/p99 ms', 'mTLS / plaintext'],
      rows.map((r) => [r.load, r.plaintext.perSec, latency(r.plaintext), r.mtls.perSec, latency(r.mtls), r.ratio]),
    );
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

