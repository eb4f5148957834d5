// A lab with bpfmesh in it: pods, `bpfmesh` CLI runs, relays and
// responders inside pods, and a cleanup that leaves nothing behind.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../../src/config/paths.js';
import { cleanupOnExit, Lab, type LabPod, type RunAs } from '../../src/lab/lab.js';
import { ensureBpffs } from '../../src/intercept/mounts.js';
import { pinRoot } from '../../src/intercept/pod.js';
import { uninstall } from '../../src/intercept/install.js';
import { createLogger } from '../../src/log/logger.js';

export const CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
export const RELAY = join(REPO_ROOT, 'dist', 'src', 'lab', 'relay.js');
export const RESPONDER = join(REPO_ROOT, 'dist', 'test', 'fixtures', 'responder.js');
export const APP_SERVER = join(REPO_ROOT, 'dist', 'test', 'fixtures', 'app-server.js');
export const HTTP_LOAD = join(REPO_ROOT, 'dist', 'test', 'helpers', 'http-load.js');
export const PROXY = { uid: 2102, gid: 2102 } as const;
export const APP = { uid: 1000, gid: 1000 } as const;
export const BPFFS = '/sys/fs/bpf';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], as: RunAs = {}, env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
      ...(as.uid !== undefined ? { uid: as.uid } : {}),
      ...(as.gid !== undefined ? { gid: as.gid } : {}),
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
  });
}

export interface RelayEvent {
  event: string;
  direction?: string;
  peer?: string;
  orig?: string | null;
}

/** A process in a pod that prints one line per event; waits for a readiness line. */
export class PodProcess {
  readonly events: RelayEvent[] = [];
  readonly child: ChildProcess;
  #buf = '';
  #waiters: Array<() => void> = [];
  stderr = '';

  constructor(child: ChildProcess) {
    this.child = child;
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      this.#buf += d;
      for (let i = this.#buf.indexOf('\n'); i >= 0; i = this.#buf.indexOf('\n')) {
        const line = this.#buf.slice(0, i);
        this.#buf = this.#buf.slice(i + 1);
        this.events.push(line.startsWith('{') ? (JSON.parse(line) as RelayEvent) : { event: line });
        for (const w of this.#waiters.splice(0)) w();
      }
    });
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
  }

  async waitFor(pred: (e: RelayEvent) => boolean, timeoutMs = 10000): Promise<RelayEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.events.find(pred);
      if (hit) return hit;
      if (this.child.exitCode !== null) throw new Error(`process exited (${this.child.exitCode}): ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`timed out; events: ${JSON.stringify(this.events.slice(-5))} stderr: ${this.stderr}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 100);
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  stop(): void {
    this.child.kill('SIGKILL');
  }
}

/** A Linkerd identity name in the test trust domain. */
export const identityName = (sa: string, ns = 'default'): string => `${sa}.${ns}.serviceaccount.identity.linkerd.cluster.local`;

/** Sums the samples of a Prometheus text exposition named `name` whose labels include `labels`. */
export function promSample(text: string, name: string, labels: Record<string, string> = {}): number {
  return text
    .split('\n')
    .filter((l) => (l.startsWith(`${name}{`) || l.startsWith(`${name} `)) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

/** The pino JSON records (`--log-format json`) a process wrote to stderr. */
export function logRecords(p: PodProcess): Array<Record<string, unknown>> {
  return p.stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}

/** Waits for a JSON log record whose msg is `msg` (the n-th one, 1-based); returns it. */
export async function waitLog(p: PodProcess, msg: string, timeoutMs = 10_000, n = 1): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = logRecords(p).filter((r) => r['msg'] === msg)[n - 1];
    if (hit !== undefined) return hit;
    if (p.child.exitCode !== null || p.child.signalCode !== null) throw new Error(`process exited waiting for "${msg}": ${p.stderr.slice(-2000)}`);
    if (Date.now() > deadline) throw new Error(`no "${msg}" log within ${timeoutMs} ms: ${p.stderr.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What test/helpers/http-load.ts reports. */
export interface LoadResult {
  sent: number;
  ok: number;
  failed: number;
  /** Server "ip:port" -> [sent, answered] epoch ms of each request it answered. */
  byServer: Record<string, Array<[number, number]>>;
  failures: Array<{ t: number; status?: number; error: string }>;
}

/** The identities `bpfmesh control-plane` serves under (Linkerd's defaults for trust domain cluster.local). */
export const CONTROL_PLANE_NAMES = {
  identity: 'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local',
  destination: 'linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local',
} as const;

/** Where a control plane in a pod of its own serves, as the sidecar's …_SVC_ADDR / …_SVC_NAME name it. */
export interface ControlPlaneAddrs {
  /** "ip:8086": Destination over mTLS. */
  destination: string;
  /** "ip:8080": Identity over TLS. */
  identity: string;
  /** "ip:8090": the policy API over mTLS (the Destination server's second port, as Linkerd's linkerd-policy service). */
  policy: string;
  names: { identity: string; destination: string };
}

/** A control plane in a pod of its own (netns + cgroup), reached over the lab network like a cluster's. */
export interface ControlPlanePod extends ControlPlaneAddrs {
  pod: LabPod;
  proc: PodProcess;
  /** Starts it again in the same pod, on the same ports and files (after a kill). */
  restart(): Promise<PodProcess>;
}

/**
 * Environment of `bpfmesh proxy`: the control plane in a pod of its own
 * (deploy/base/sidecar.yaml's variables: addresses off loopback and the identities
 * TLS expects), or on the pod's loopback ("127.0.0.1:8086", plaintext).
 */
export function meshProxyEnv(opts: { identity: string; tokenFile: string; trustAnchorsPem: string; controlPlane: ControlPlaneAddrs | string; policyWorkload?: string }): NodeJS.ProcessEnv {
  const cp = opts.controlPlane;
  const svc: NodeJS.ProcessEnv =
    typeof cp === 'string'
      ? { LINKERD2_PROXY_DESTINATION_SVC_ADDR: cp, LINKERD2_PROXY_IDENTITY_SVC_ADDR: cp }
      : {
          LINKERD2_PROXY_DESTINATION_SVC_ADDR: cp.destination,
          LINKERD2_PROXY_DESTINATION_SVC_NAME: cp.names.destination,
          LINKERD2_PROXY_IDENTITY_SVC_ADDR: cp.identity,
          LINKERD2_PROXY_IDENTITY_SVC_NAME: cp.names.identity,
        };
  // The policy API, as the injector names it: off loopback, under the destination identity.
  const policy: NodeJS.ProcessEnv =
    opts.policyWorkload === undefined ? {} : typeof cp === 'string' ? { LINKERD2_PROXY_POLICY_SVC_ADDR: cp, LINKERD2_PROXY_POLICY_WORKLOAD: opts.policyWorkload } : {
          LINKERD2_PROXY_POLICY_SVC_ADDR: cp.policy,
          LINKERD2_PROXY_POLICY_SVC_NAME: cp.names.destination,
          LINKERD2_PROXY_POLICY_WORKLOAD: opts.policyWorkload,
        };
  return {
    ...svc,
    ...policy,
    LINKERD2_PROXY_IDENTITY_LOCAL_NAME: opts.identity,
    LINKERD2_PROXY_IDENTITY_TOKEN_FILE: opts.tokenFile,
    LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS: opts.trustAnchorsPem,
  };
}

export class MeshLab {
  readonly lab: Lab;

  constructor(subnet: number) {
    ensureBpffs(BPFFS, false);
    this.lab = new Lab(undefined, subnet);
    this.#unregister = cleanupOnExit(this);
  }

  readonly #unregister: () => void;

  pod(name: string): LabPod {
    return this.lab.addPod(name);
  }

  pinDir(pod: LabPod): string {
    return join(pinRoot(BPFFS), pod.netnsName);
  }

  async init(pod: LabPod, extra: string[] = []): Promise<CliResult> {
    const r = await runCli(['init', '--netns', pod.netns, '--cgroup', pod.cgroup, '--log-level', 'warn', ...extra]);
    if (r.code !== 0) throw new Error(`bpfmesh init failed (${r.code}): ${r.stderr}`);
    return r;
  }

  async relay(pod: LabPod, mode: 'relay' | 'report' | 'echo', inbound = true, extra: string[] = []): Promise<PodProcess> {
    const args = [RELAY, '--mode', mode, ...(inbound ? ['--inbound-port', '4143'] : []), ...extra];
    const p = new PodProcess(this.lab.spawn(pod, process.execPath, args, PROXY));
    await p.waitFor((e) => e.event === 'listening');
    return p;
  }

  /** `bpfmesh proxy` in the pod as the proxy uid, once /ready answers; `nodeFlags` go to node before the CLI (e.g. --cpu-prof). */
  async proxy(pod: LabPod, env: NodeJS.ProcessEnv = {}, nodeFlags: string[] = []): Promise<PodProcess> {
    const p = new PodProcess(this.lab.spawn(pod, process.execPath, [...nodeFlags, CLI, 'proxy'], PROXY, { env: { ...process.env, LINKERD2_PROXY_LOG: 'warn', ...env } }));
    for (let i = 0; i < 100; i++) {
      const r = await this.lab.exec(pod, 'curl', ['-s', '--max-time', '1', 'http://127.0.0.1:4191/ready'], APP);
      if (r.stdout === 'ready\n') return p;
      if (p.child.exitCode !== null) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error(`proxy in ${pod.name} did not become ready: ${p.stderr}`);
  }

  /** test/fixtures/app-server.ts in the pod as the app uid, once it listens. */
  async appServer(pod: LabPod): Promise<PodProcess> {
    const p = new PodProcess(this.lab.spawn(pod, process.execPath, [APP_SERVER], APP));
    await p.waitFor((e) => e.event === 'ready');
    return p;
  }

  /**
   * `bpfmesh control-plane` in the pod (root, JSON logs on stderr), once it
   * listens. Pods that share `stateDir` share the issuer: start the first
   * one alone, it generates it.
   */
  async controlPlane(pod: LabPod, config: string, stateDir: string, extra: string[] = []): Promise<PodProcess> {
    const args = [CLI, 'control-plane', '--config', config, '--state-dir', stateDir, '--log-format', 'json', '--log-level', 'info', ...extra];
    const p = new PodProcess(this.lab.spawn(pod, process.execPath, args, {}));
    await waitLog(p, 'control plane listening', 20_000);
    return p;
  }

  /**
   * `bpfmesh control-plane` in a new pod of its own, listening on the pod's
   * address: Destination over mTLS on 8086 (and 8090, for the policy API), Identity over TLS on 8080. No
   * interception there (a control plane's own proxy is not what is tested).
   */
  async controlPlanePod(name: string, config: string, stateDir: string, extra: string[] = []): Promise<ControlPlanePod> {
    const pod = this.pod(name);
    const args = ['--listen', `${pod.ip4}:8086`, '--identity-listen', `${pod.ip4}:8080`, '--policy-listen', `${pod.ip4}:8090`, ...extra];
    const cp: ControlPlanePod = {
      pod,
      proc: await this.controlPlane(pod, config, stateDir, args),
      destination: `${pod.ip4}:8086`,
      identity: `${pod.ip4}:8080`,
      policy: `${pod.ip4}:8090`,
      names: { ...CONTROL_PLANE_NAMES },
      restart: async () => (cp.proc = await this.controlPlane(pod, config, stateDir, args)),
    };
    return cp;
  }

  /** Starts test/helpers/http-load.ts in the pod; `done` resolves with its report. */
  async load(pod: LabPod, url: string, conns: number, max: number, seconds: number): Promise<{ started: number; done: Promise<LoadResult>; proc: PodProcess }> {
    const proc = new PodProcess(this.lab.spawn(pod, process.execPath, [HTTP_LOAD, url, String(conns), String(max), String(seconds)], APP));
    const started = (await proc.waitFor((e) => e.event === 'started')) as unknown as { t0: number };
    const done = proc.waitFor((e) => e.event === 'done', (seconds + 30) * 1000).then((e) => e as unknown as LoadResult);
    done.catch(() => {}); // awaited by the caller; not an unhandled rejection meanwhile
    return { started: started.t0, done, proc };
  }

  async responder(pod: LabPod, ports: number[], as: RunAs = APP): Promise<PodProcess> {
    const p = new PodProcess(this.lab.spawn(pod, process.execPath, [RESPONDER, ...ports.map(String)], as));
    await p.waitFor((e) => e.event === 'ready');
    return p;
  }

  /** curl inside a pod; returns the body or throws with curl's error. */
  async curl(pod: LabPod, url: string, as: RunAs = APP): Promise<string> {
    const r = await this.lab.exec(pod, 'curl', ['-sS', '-g', '--max-time', '5', url], as);
    if (r.code !== 0) throw new Error(`curl ${url}: exit ${r.code}: ${r.stderr.trim()}`);
    return r.stdout.trim();
  }

  /** nc inside a pod: sends a line, returns the answer. */
  async nc(pod: LabPod, host: string, port: number, as: RunAs = APP): Promise<string> {
    const r = await this.lab.exec(pod, 'nc', ['-N', '-w', '5', host, String(port)], as, 10000, 'hello\n');
    if (r.code !== 0) throw new Error(`nc ${host} ${port}: exit ${r.code}: ${r.stderr.trim()}`);
    return r.stdout.trim();
  }

  cleanup(): void {
    const log = createLogger({ logFormat: 'plain', logLevel: 'error' });
    try {
      for (const pod of this.lab.pods) {
        const dir = this.pinDir(pod);
        if (existsSync(dir)) uninstall(dir, pod.netnsName, null, log);
      }
    } finally {
      this.lab.cleanup();
      this.#unregister();
    }
  }
}
