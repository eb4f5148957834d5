// The proxy benchmark: the same client and server pods in three scenarios,
// measured side by side in one run.
//   direct    no mesh
//   bpfmesh   BPF interception, `bpfmesh proxy` in both pods
//   iptables  the same proxies behind proxy-init's iptables rules
//   haproxy   HAProxy in both pods behind the same rules (HTTP mode, one
//             thread, keep-alive both ways, the original destination as
//             the server): a reference L7 proxy, for the HTTP loads
// Loads: HTTP/1.1 keep-alive (wrk), HTTP/2 (h2load), a new connection per
// request (wrk, Connection: close), opaque TCP throughput, a fixed 1000 req/s
// for the latency the proxies add, and each proxy's RSS with 1000 open
// connections.
//
// BENCH_PROFILE=keep-alive (or =new-connection, =http2): a profile run instead: only
// that load, with the bpfmesh scenario's proxies under `node
// --cpu-prof`; their .cpuprofile files (flame graphs in Chrome DevTools or
// speedscope) go to bench/results/profiles/, and where each proxy's CPU
// went is printed.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../src/config/paths.js';
import type { LabPod } from '../src/lab/lab.js';
import { APP, MeshLab, PodProcess, PROXY } from '../test/helpers/mesh.js';
import { DEFAULT_RULES, proxyInitCommands } from './iptables.js';
import { printTable, round } from './stats.js';
import { printProfile, summarizeProfile } from './cpu-profile.js';

const DIST = join(REPO_ROOT, 'dist');
const APP_SERVER = join(DIST, 'test', 'fixtures', 'app-server.js');
const STREAM = join(DIST, 'test', 'fixtures', 'stream.js');
const FIXED = join(DIST, 'bench', 'fixed-rate.js');
const HOLD = join(DIST, 'bench', 'hold-conns.js');
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 4);
const KEEP_ALIVE = 'http1 keep-alive (wrk -c32)';
const NEW_CONNECTION = 'http1 new connection per request';
const FIXED_RATE = 'fixed 1000 req/s, http1';
const HTTP2 = 'http2 (h2load -c4 -m16)';
const PROFILED_LOADS: Record<string, string> = { 'keep-alive': KEEP_ALIVE, 'new-connection': NEW_CONNECTION, http2: HTTP2 };
const PROFILE = process.env['BENCH_PROFILE'] === undefined || process.env['BENCH_PROFILE'] === '' ? undefined : PROFILED_LOADS[process.env['BENCH_PROFILE']];
if (process.env['BENCH_PROFILE'] && PROFILE === undefined) throw new Error(`BENCH_PROFILE: "${process.env['BENCH_PROFILE']}" is not one of ${Object.keys(PROFILED_LOADS).join(', ')}`);
const PROFILES = join(REPO_ROOT, 'bench', 'results', 'profiles');

type Mode = 'direct' | 'bpfmesh' | 'iptables' | 'haproxy';

/** Loads HAProxy is configured for here (HTTP mode). */
const HAPROXY_LOADS = new Set([KEEP_ALIVE, NEW_CONNECTION, HTTP2, FIXED_RATE]);
/** The app's HTTP/2 (h2c) port: HAProxy speaks HTTP/2 to it, HTTP/1 to the others. */
const H2C_PORT = 8081;

interface Scenario {
  mode: Mode;
  client: LabPod;
  server: LabPod;
  proxies: PodProcess[];
}

export interface ProxyRow {
  scenario: Mode;
  load: string;
  reqPerSec?: number;
  mibPerSec?: number;
  p50Ms?: number;
  p99Ms?: number;
  clientProxyRssMb?: number;
  serverProxyRssMb?: number;
  clientProxyCpuS?: number;
  serverProxyCpuS?: number;
  /** System calls per request of each proxy, "reads+writes" (HTTP loads). */
  clientProxySyscallsPerReq?: string;
  serverProxySyscallsPerReq?: string;
}

export function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? round(Number(m[1]) / 1024, 1) : NaN;
}

/** A process's read and write system calls so far (/proc/PID/io's syscr, syscw). */
export function syscalls(pid: number): { reads: number; writes: number } {
  const io = readFileSync(`/proc/${pid}/io`, 'utf8');
  const field = (name: string): number => Number(new RegExp(`^${name}: (\\d+)$`, 'm').exec(io)?.[1] ?? NaN);
  return { reads: field('syscr'), writes: field('syscw') };
}

export function cpuS(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, USER_HZ=100
}

/** h2load's flags for the HTTP/2 load: 4 connections, 16 streams each, for SECONDS. */
const H2LOAD_ARGS = ['-c4', '-m16', '-D', String(SECONDS)];

/** The HTTP/2 load from `client` to `url`; NaN req/s, and h2load's output on stderr under `who`, when it saw failures. */
export async function runH2load(mesh: MeshLab, client: LabPod, url: string, who: string): Promise<{ reqPerSec: number; p50Ms?: number }> {
  const r = await mesh.lab.exec(client, 'h2load', [...H2LOAD_ARGS, url], APP, (SECONDS + 20) * 1000);
  const h = parseH2load(r.stdout);
  if (Number.isNaN(h.reqPerSec)) process.stderr.write(`bench ${who}: h2load reported failures:\n${r.stdout}\n`);
  return h;
}

/** h2load's "finished in …, N req/s" and its mean time for request (reported as p50Ms). */
function parseH2load(out: string): { reqPerSec: number; p50Ms?: number } {
  const mean = /time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)/.exec(out);
  // h2load counts failed requests in its rate too: a run with any is not a measurement.
  const bad = /(\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  if (bad === null || bad.slice(1).some((n) => n !== '0')) return { reqPerSec: NaN };
  return {
    reqPerSec: Number(/finished in [^,]+, ([\d.]+) req\/s/.exec(out)?.[1] ?? NaN),
    ...(mean ? { p50Ms: Number(mean[1]) * ({ us: 0.001, ms: 1, s: 1000 } as Record<string, number>)[mean[2]!]! } : {}),
  };
}

/** wrk's "50% 1.23ms" lines and "Requests/sec:". */
export function parseWrk(out: string): { reqPerSec: number; p50Ms: number; p99Ms: number } {
  const ms = (v: string, unit: string): number => Number(v) * ({ us: 0.001, ms: 1, s: 1000 } as Record<string, number>)[unit]!;
  const pct = (p: string): number => {
    const m = new RegExp(`\\s${p}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
    return m ? ms(m[1]!, m[2]!) : NaN;
  };
  return { reqPerSec: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN), p50Ms: pct('50'), p99Ms: pct('99') };
}

export async function runProxyBench(mesh: MeshLab): Promise<ProxyRow[]> {
  const scenarios: Scenario[] = [];
  const modes: Mode[] = ['direct', 'bpfmesh', 'iptables'];
  const noHaproxy = haproxyMissing();
  if (noHaproxy === undefined) modes.push('haproxy');
  else console.log(`proxy: no haproxy reference rows (${noHaproxy})`);
  for (const mode of modes) scenarios.push(await setup(mesh, mode));
  const rows: ProxyRow[] = [];
  const measure = async (s: Scenario, load: string, fn: () => Promise<Partial<ProxyRow>>): Promise<void> => {
    if (s.mode === 'haproxy' && !HAPROXY_LOADS.has(load)) return;
    if (PROFILE !== undefined && load !== PROFILE) return;
    const cpu0 = s.proxies.map((p) => cpuS(p.child.pid!));
    const calls0 = s.proxies.map((p) => syscalls(p.child.pid!));
    const started = Date.now();
    const r = await fn();
    const perRequest = (i: number): string | undefined => {
      const requests = (r.reqPerSec ?? NaN) * ((Date.now() - started) / 1000);
      const now = syscalls(s.proxies[i]!.child.pid!);
      const per = (n: number): number => round(n / requests, 1);
      return Number.isFinite(requests) && requests > 0 ? `${per(now.reads - calls0[i]!.reads)}+${per(now.writes - calls0[i]!.writes)}` : undefined;
    };
    const row: ProxyRow = { scenario: s.mode, load, ...r };
    if (s.proxies.length === 2) {
      row.clientProxyRssMb ??= rssMb(s.proxies[0]!.child.pid!);
      row.serverProxyRssMb ??= rssMb(s.proxies[1]!.child.pid!);
      row.clientProxyCpuS = round(cpuS(s.proxies[0]!.child.pid!) - cpu0[0]!);
      row.serverProxyCpuS = round(cpuS(s.proxies[1]!.child.pid!) - cpu0[1]!);
      // HAProxy calls recv/send, which /proc/PID/io's syscr/syscw do not count (Node's libuv calls read/write).
      if (r.reqPerSec !== undefined && r.mibPerSec === undefined && s.mode !== 'haproxy') {
        row.clientProxySyscallsPerReq = perRequest(0);
        row.serverProxySyscallsPerReq = perRequest(1);
      }
    }
    rows.push(row);
  };
  const url = (s: Scenario, port: number, path = '/'): string => `http://${s.server.ip4}:${port}${path}`;
  for (const s of scenarios) {
    const wrk = async (extra: string[]): Promise<Partial<ProxyRow>> => {
      const r = await mesh.lab.exec(s.client, 'wrk', ['-t1', '-c32', `-d${SECONDS}s`, '--latency', ...extra, url(s, 8080)], APP, (SECONDS + 20) * 1000);
      return parseWrk(r.stdout);
    };
    await measure(s, KEEP_ALIVE, () => wrk([]));
    await measure(s, NEW_CONNECTION, () => wrk(['-H', 'Connection: close']));
    await measure(s, HTTP2, () => runH2load(mesh, s.client, url(s, H2C_PORT), `proxy, through ${s.mode}`));
    await measure(s, 'opaque TCP echo, 128 MiB each way', async () => {
      const r = await mesh.lab.exec(s.client, process.execPath, [STREAM, 'bulk', s.server.ip4, '9000', '128'], APP, 120_000);
      const out = JSON.parse(r.stdout || '{}') as { ms?: number };
      return { mibPerSec: out.ms ? round((2 * 128) / (out.ms / 1000), 0) : NaN };
    });
    await measure(s, FIXED_RATE, async () => {
      const r = await mesh.lab.exec(s.client, process.execPath, [FIXED, url(s, 8080), '1000', String(SECONDS)], APP, (SECONDS + 20) * 1000);
      const out = JSON.parse(r.stdout || '{}') as { ok?: number; p50Ms?: number; p99Ms?: number };
      return { reqPerSec: (out.ok ?? 0) / SECONDS, p50Ms: round(out.p50Ms ?? NaN), p99Ms: round(out.p99Ms ?? NaN) };
    });
    await measure(s, '1000 open connections (RSS)', async () => {
      const hold = new PodProcess(mesh.lab.spawn(s.client, process.execPath, [HOLD, s.server.ip4, '9000', '1000'], APP));
      await hold.waitFor((e) => e.event.startsWith('holding'), 60_000);
      const row: Partial<ProxyRow> = {};
      if (s.proxies.length === 2) {
        row.clientProxyRssMb = rssMb(s.proxies[0]!.child.pid!);
        row.serverProxyRssMb = rssMb(s.proxies[1]!.child.pid!);
      }
      hold.stop();
      await new Promise((r) => setTimeout(r, 500));
      return row;
    });
  }
  if (PROFILE !== undefined) await reportProfiles(PROFILE, scenarios.find((s) => s.mode === 'bpfmesh')!);
  printTable(
    'proxy: direct vs bpfmesh vs iptables vs haproxy (client and server pods; both proxies in the path)',
    ['load', 'scenario', 'req/s', 'MiB/s', 'p50 ms', 'p99 ms', 'RSS client/server MB', 'CPU client/server s', 'syscalls/req r+w client, server'],
    rows.map((r) => [
      r.load,
      r.scenario,
      r.reqPerSec === undefined ? '' : round(r.reqPerSec, 0),
      r.mibPerSec ?? '',
      r.p50Ms === undefined ? '' : round(r.p50Ms),
      r.p99Ms === undefined ? '' : round(r.p99Ms),
      r.clientProxyRssMb === undefined ? '' : `${r.clientProxyRssMb}/${r.serverProxyRssMb}`,
      r.clientProxyCpuS === undefined ? '' : `${r.clientProxyCpuS}/${r.serverProxyCpuS}`,
      r.clientProxySyscallsPerReq === undefined ? '' : `${r.clientProxySyscallsPerReq}, ${r.serverProxySyscallsPerReq}`,
    ]),
  );
  return rows;
}

async function setup(mesh: MeshLab, mode: Mode): Promise<Scenario> {
  const client = mesh.pod(`${mode.slice(0, 3)}c`);
  const server = mesh.pod(`${mode.slice(0, 3)}s`);
  const proxies: PodProcess[] = [];
  for (const pod of [client, server]) {
    if (mode === 'bpfmesh') await mesh.init(pod);
    if (mode === 'iptables' || mode === 'haproxy') for (const cmd of proxyInitCommands(DEFAULT_RULES)) execFileSync('nsenter', [`--net=${pod.netns}`, '--', ...cmd], { stdio: 'pipe' });
    if (mode === 'bpfmesh' || mode === 'iptables') proxies.push(await mesh.proxy(pod, {}, PROFILE !== undefined && mode === 'bpfmesh' ? profilerFlags(pod === client ? 'client' : 'server') : []));
    if (mode === 'haproxy') proxies.push(await startHaproxy(mesh, pod));
  }
  const app = new PodProcess(mesh.lab.spawn(server, process.execPath, [APP_SERVER], APP));
  await app.waitFor((e) => e.event === 'ready');
  return { mode, client, server, proxies };
}

/** Why HAProxy cannot run here, or undefined when it can. */
function haproxyMissing(): string | undefined {
  try {
    execFileSync('haproxy', ['-v'], { stdio: 'pipe' });
    return undefined;
  } catch {
    return 'haproxy is not installed: apt-get install haproxy';
  }
}

/**
 * HAProxy as both proxy ports of proxy-init's rules, set up as `bpfmesh
 * proxy` is: HTTP/1 with keep-alive to the client and pooled connections to
 * the upstream, one thread (the Node proxy has one event loop), and the
 * connection's original destination (SO_ORIGINAL_DST after REDIRECT) as
 * the server, address and port. HTTP/2 from the client (the preface, which
 * HAProxy detects on its own) goes on as HTTP/2 to the app's h2c port.
 */
async function startHaproxy(mesh: MeshLab, pod: LabPod): Promise<PodProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'bpfmesh-bench-haproxy-'));
  try {
    chmodSync(dir, 0o755);
    const cfg = join(dir, 'haproxy.cfg');
    const { outgoingPort, incomingPort } = DEFAULT_RULES;
    writeFileSync(
      cfg,
      [
        'global',
        '  nbthread 1',
        '  maxconn 8000',
        'defaults',
        '  mode http',
        '  option http-keep-alive',
        '  http-reuse always',
        '  timeout connect 5s',
        '  timeout client 60s',
        '  timeout server 60s',
        '  timeout http-keep-alive 60s',
        `frontend outbound`,
        `  bind 0.0.0.0:${outgoingPort}`,
        `  use_backend original_h2 if { dst_port ${H2C_PORT} }`,
        '  default_backend original_dst',
        `frontend inbound`,
        `  bind 0.0.0.0:${incomingPort}`,
        `  use_backend original_h2 if { dst_port ${H2C_PORT} }`,
        '  default_backend original_dst',
        'backend original_dst',
        '  server original 0.0.0.0',
        'backend original_h2',
        '  server original 0.0.0.0 proto h2',
        '',
      ].join('\n'),
      { mode: 0o644 },
    );
    const p = new PodProcess(mesh.lab.spawn(pod, 'haproxy', ['-db', '-f', cfg], PROXY));
    for (let i = 0; i < 100; i++) {
      const r = await mesh.lab.exec(pod, 'ss', ['-Hltn', `sport = :${incomingPort}`]);
      if (r.stdout.includes(`:${incomingPort}`)) return p;
      if (p.child.exitCode !== null) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error(`haproxy in ${pod.name} did not start listening: ${p.stderr}`);
  } finally {
    rmSync(dir, { recursive: true, force: true }); // read at start-up only
  }
}

/** Node's flags for a profiled proxy: --cpu-prof into bench/results/profiles/<role>/ (writable by the proxy's uid). */
function profilerFlags(role: 'client' | 'server'): string[] {
  const dir = join(PROFILES, role);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true, mode: 0o777 });
  chmodSync(dir, 0o777);
  return ['--cpu-prof', '--cpu-prof-interval=100', `--cpu-prof-dir=${dir}`];
}

/** Stops the profiled proxies (SIGTERM: the profile is written at exit) and prints where their CPU went. */
async function reportProfiles(load: string, s: Scenario): Promise<void> {
  for (const [i, p] of s.proxies.entries()) {
    const exited = new Promise<void>((r) => (p.child.exitCode !== null ? r() : p.child.once('exit', () => r())));
    p.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 15_000)))]);
    clearTimeout(timer);
    const role = i === 0 ? 'client' : 'server';
    const file = readdirSync(join(PROFILES, role)).find((f) => f.endsWith('.cpuprofile'));
    if (file === undefined) {
      console.log(`proxy: no profile from the ${role} proxy (exit ${p.child.exitCode}): ${p.stderr.slice(-3000)}`);
      continue;
    }
    printProfile(`${role} proxy, ${load} (bench/results/profiles/${role}/${file})`, summarizeProfile(join(PROFILES, role, file)));
  }
}
