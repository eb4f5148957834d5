// What tap costs the proxy (BENCH_ONLY=tap): HTTP/1.1 keep-alive through a
// client and a server proxy with mTLS, side by side in one run, alternated:
//   off        the proxies without LINKERD2_PROXY_TAP_SVC_NAME (no tap server, no hub)
//   idle       tap on, nobody tapping (the request path tests one boolean)
//   no match   a tapper on the server proxy whose match selects nothing
//   all        a tapper on the server proxy that takes every request (bounded by
//              BPFMESH_PROXY_TAP_MAX_EVENTS_PER_SECOND, 3000 events/s by default)
// Also in one process, without the kernel or TLS (the request path alone):
// two proxies on loopback in front of one app, one without a hub and one
// with, and wrk against each in turn, 1 s rounds alternated, with the hub
// idle, with a stream whose match selects nothing, and with one taking all.
// One pod pair with its control plane pod; the server's proxy is restarted
// with and without LINKERD2_PROXY_TAP_SVC_NAME between the off row and the
// others, every round, so every row runs on the same pods. The tapper is
// `bpfmesh tap` in a pod of its own.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile, type ChildProcess } from 'node:child_process';
import { Registry } from 'prom-client';
import { parseProxyEnv } from '../src/config/proxy-env.js';
import { createLogger } from '../src/log/logger.js';
import { Proxy } from '../src/proxy/proxy.js';
import { TapHub } from '../src/proxy/tap/hub.js';
import { RecordingApp } from '../test/helpers/proxy-chain.js';
import type { LabPod } from '../src/lab/lab.js';
import { APP, CLI, identityName, MeshLab, meshProxyEnv, promSample, type PodProcess } from '../test/helpers/mesh.js';
import { parseWrk } from './proxy.js';
import { median, printTable, round } from './stats.js';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 4);
const ROUNDS = Number(process.env['BENCH_TAP_ROUNDS'] ?? 3);
const TAP_ID = 'linkerd-tap.linkerd-viz.serviceaccount.identity.linkerd.cluster.local';

export interface TapRow {
  load: string;
  perSec: number;
  p50Ms: number;
  p99Ms: number;
  /** req/s / req/s with tap off. */
  ratio: number;
}

interface Pair {
  client: LabPod;
  server: LabPod;
  state: string;
  /** Restarts the server's proxy with tap on or off (same pod, same identity). */
  serverTap(on: boolean): Promise<void>;
}

async function pair(mesh: MeshLab, dir: string, tag: string): Promise<Pair> {
  const client = mesh.pod(`${tag}c`);
  const server = mesh.pod(`${tag}s`);
  const config = join(dir, `${tag}.yaml`);
  writeFileSync(config, ['services:', `  - name: "${server.ip4}:8080"`, `    endpoints: [{ addr: "${server.ip4}:8080", identity: ${identityName(`${tag}-server`)} }]`, ''].join('\n'));
  const state = join(dir, `${tag}-state`);
  const cp = await mesh.controlPlanePod(`${tag}cp`, config, state);
  const anchors = readFileSync(join(state, 'trust-anchors.pem'), 'utf8');
  const env = (sa: string): NodeJS.ProcessEnv => meshProxyEnv({ identity: identityName(sa), tokenFile: join(dir, 'token'), trustAnchorsPem: anchors, controlPlane: cp });
  await mesh.init(client);
  await mesh.init(server);
  await mesh.proxy(client, env(`${tag}-client`));
  let serverProxy: PodProcess | undefined;
  const serverTap = async (on: boolean): Promise<void> => {
    if (serverProxy !== undefined) {
      const exited = new Promise((r) => serverProxy!.child.once('exit', r));
      serverProxy.child.kill('SIGKILL');
      await exited;
    }
    const e = env(`${tag}-server`);
    serverProxy = await mesh.proxy(server, on ? { ...e, LINKERD2_PROXY_TAP_SVC_NAME: TAP_ID } : e);
  };
  await serverTap(false);
  await mesh.appServer(server);
  return { client, server, state, serverTap };
}

const IN_PROCESS_ROUNDS = Number(process.env['BENCH_TAP_INPROC_ROUNDS'] ?? 10);

/** The request path alone: the same Proxy class with no hub / an idle hub / a hub with a stream, in one process. */
async function runInProcess(): Promise<TapRow[]> {
  const app = new RecordingApp((_req, res) => res.end('hello'));
  const appPort = await app.listen();
  const log = createLogger({ logFormat: 'json', logLevel: 'silent' });
  const mk = async (hub: TapHub | undefined): Promise<{ proxy: Proxy; port: number }> => {
    const config = parseProxyEnv({ LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR: '127.0.0.1:0', LINKERD2_PROXY_INBOUND_LISTEN_ADDR: '127.0.0.1:0' });
    const proxy = new Proxy({ config, registry: new Registry(), log, originalDst: () => ({ host: '127.0.0.1', port: appPort }), ...(hub ? { tapHub: hub } : {}) });
    await proxy.start();
    return { proxy, port: proxy.listening.inbound.find((a) => a.host === '127.0.0.1')!.port };
  };
  const hub = new TapHub({ maxEventsPerSecond: 3000 });
  const off = await mk(undefined);
  const on = await mk(hub);
  const wrk = (port: number): Promise<number> =>
    new Promise((resolve) =>
      execFile('wrk', ['-t1', '-c16', '-d1s', `http://127.0.0.1:${port}/`], { timeout: 20_000 }, (_err, out) => resolve(parseWrk(String(out)).reqPerSec)),
    );
  let sink: (() => void) | undefined;
  const sinkFor = (match: () => boolean): (() => void) => hub.add({ base: hub.nextBase(), limit: 1e9, match, send: () => true, done: () => {} });
  const variants: Array<[string, () => Promise<number>]> = [
    ['in process: no hub', () => wrk(off.port)],
    ['in process: idle hub', () => wrk(on.port)],
    [
      'in process: a stream whose match selects nothing',
      async () => {
        sink = sinkFor(() => false);
        try {
          return await wrk(on.port);
        } finally {
          sink();
        }
      },
    ],
    [
      'in process: a stream taking every request (3000 events/s cap)',
      async () => {
        sink = sinkFor(() => true);
        try {
          return await wrk(on.port);
        } finally {
          sink();
        }
      },
    ],
  ];
  try {
    await wrk(off.port); // warm-up: JIT, pools
    await wrk(on.port);
    const samples = new Map<string, number[]>();
    for (let i = 0; i < IN_PROCESS_ROUNDS; i++) for (const [name, run] of variants) samples.set(name, [...(samples.get(name) ?? []), await run()]);
    const base = median(samples.get(variants[0]![0])!);
    return variants.map(([name]) => {
      const perSec = median(samples.get(name)!);
      return { load: name, perSec: round(perSec, 0), p50Ms: NaN, p99Ms: NaN, ratio: round(perSec / base) };
    });
  } finally {
    await off.proxy.shutdown(0);
    await on.proxy.shutdown(0);
    await app.close();
  }
}

export async function runTapBench(mesh: MeshLab): Promise<TapRow[]> {
  const inProcess = await runInProcess();
  printTable(
    `tap cost, the request path alone: HTTP/1.1 keep-alive through one in-process proxy, wrk -c16 (1 s rounds alternated; median of ${IN_PROCESS_ROUNDS})`,
    ['proxy', 'req/s', 'vs no hub'],
    inProcess.map((r) => [r.load, r.perSec, r.ratio]),
  );
  const dir = mkdtempSync(join(tmpdir(), 'bpfmesh-bench-tap-'));
  const tappers: ChildProcess[] = [];
  try {
    chmodSync(dir, 0o755);
    writeFileSync(join(dir, 'token'), 'bench');
    chmodSync(join(dir, 'token'), 0o644);
    const on = await pair(mesh, dir, 'tp');
    const off = on;
    const tapPod = mesh.pod('tapper');
    const streams = async (): Promise<number> => promSample(await mesh.curl(on.server, 'http://127.0.0.1:4191/metrics'), 'bpfmesh_tap_streams');
    /** Starts `bpfmesh tap` on the tap-on server proxy; resolves once its stream is open, with a stop function. */
    const tapper = async (args: string[]): Promise<() => Promise<void>> => {
      const child = mesh.lab.spawn(tapPod, process.execPath, [CLI, 'tap', '--addr', `${on.server.ip4}:4190`, '--control-plane-state', on.state, '--max', '1000000', ...args], {});
      child.stdout!.resume();
      let err = '';
      child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      tappers.push(child);
      for (let i = 0; (await streams()) < 1; i++) {
        if (i > 150 || child.exitCode !== null) throw new Error(`bench tap: the tapper did not start: ${err}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      return async () => {
        child.kill('SIGTERM');
        for (let i = 0; i < 100 && (await streams()) > 0; i++) await new Promise((r) => setTimeout(r, 50));
      };
    };
    /** Tap on or off on the server's proxy; a few requests first, so the client proxy's pool has reconnected. */
    let tapOn: boolean | undefined;
    const setTap = async (want: boolean): Promise<void> => {
      if (tapOn === want) return;
      await on.serverTap(want);
      tapOn = want;
      for (let i = 0; i < 20; i++) await mesh.lab.exec(on.client, 'curl', ['-s', '-o', '/dev/null', '--max-time', '2', `http://${on.server.ip4}:8080/`], APP);
      await mesh.lab.exec(on.client, 'wrk', ['-t1', '-c32', '-d1s', `http://${on.server.ip4}:8080/`], APP, 30_000); // warm-up: pools, JIT
    };
    const wrk = async (p: Pair): Promise<{ perSec: number; p50Ms: number; p99Ms: number }> => {
      const r = await mesh.lab.exec(p.client, 'wrk', ['-t1', '-c32', `-d${SECONDS}s`, '--latency', `http://${p.server.ip4}:8080/`], APP, (SECONDS + 20) * 1000);
      if (/Non-2xx|Socket errors/.test(r.stdout)) process.stderr.write(`bench tap: wrk reported errors:\n${r.stdout}\n`);
      const w = parseWrk(r.stdout);
      return { perSec: w.reqPerSec, p50Ms: w.p50Ms, p99Ms: w.p99Ms };
    };
    const variants: Array<[string, () => Promise<{ perSec: number; p50Ms: number; p99Ms: number }>]> = [
      [
        'off (no tap server)',
        async () => {
          await setTap(false);
          return wrk(off);
        },
      ],
      [
        'idle (tap on, nobody tapping)',
        async () => {
          await setTap(true);
          return wrk(on);
        },
      ],
      [
        'a tapper whose match selects nothing',
        async () => {
          await setTap(true);
          const stop = await tapper(['--path', '/no-request-has-this-path']);
          try {
            return await wrk(on);
          } finally {
            await stop();
          }
        },
      ],
      [
        'a tapper taking every request (3000 events/s cap)',
        async () => {
          await setTap(true);
          const stop = await tapper(['--json']);
          try {
            return await wrk(on);
          } finally {
            await stop();
          }
        },
      ],
    ];
    const samples = new Map<string, Array<{ perSec: number; p50Ms: number; p99Ms: number }>>();
    for (let i = 0; i < ROUNDS; i++) {
      for (const [name, run] of variants) {
        const list = samples.get(name) ?? [];
        list.push(await run());
        samples.set(name, list);
      }
    }
    const base = median(samples.get(variants[0]![0])!.map((x) => x.perSec));
    const rows: TapRow[] = variants.map(([name]) => {
      const xs = samples.get(name)!;
      const perSec = median(xs.map((x) => x.perSec));
      return { load: name, perSec: round(perSec, 0), p50Ms: round(median(xs.map((x) => x.p50Ms))), p99Ms: round(median(xs.map((x) => x.p99Ms))), ratio: round(perSec / base) };
    });
    printTable(
      `tap cost: HTTP/1.1 keep-alive, wrk -c32, both proxies with mTLS; the server's proxy restarted with tap off / on each round (median of ${ROUNDS}, ${SECONDS} s each)`,
      ['server proxy', 'req/s', 'p50/p99 ms', 'vs off'],
      rows.map((r) => [r.load, r.perSec, `${r.p50Ms}/${r.p99Ms}`, r.ratio]),
    );
    return [...inProcess, ...rows];
  } finally {
    for (const t of tappers) if (t.exitCode === null) t.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}
