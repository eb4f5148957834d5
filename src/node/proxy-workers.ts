// More than one core for the node proxy: worker processes, each serving
// every pod with listeners of its own beside this process's (SO_REUSEPORT,
// the same mechanism as a handover), so the kernel spreads each pod's
// connections over the processes. The agent tells the workers what to serve
// over the child_process IPC channel; every worker makes its own sockets in
// the pod's netns (it opens the netns path itself) and withdraws them when told.
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { AggregatorRegistry, type Registry } from 'prom-client';
import type { Logger } from '../log/logger.js';
import type { PodProxies, PodProxyHost, ServedPod } from './pod-proxies.js';

export type WorkerRequest =
  | { op: 'serve'; id: number; pod: ServedPod }
  | { op: 'withdraw'; id: number; uid: string; reason: string }
  | { op: 'metrics'; id: number }
  | { op: 'shutdown'; id: number; graceMs: number };
type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;
export interface WorkerReply {
  id: number;
  ok?: boolean;
  metrics?: unknown[];
}

const WORKER = join(__dirname, 'proxy-worker.js');
/** A worker that does not answer within this is taken as failed for that request. */
const REPLY_TIMEOUT_MS = 30_000;

class Worker {
  readonly child: ChildProcess;
  readonly #pending = new Map<number, (r: WorkerReply | undefined) => void>();
  #next = 0;
  constructor(env: NodeJS.ProcessEnv, log: Logger) {
    this.child = fork(WORKER, [], { env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (m: WorkerReply) => {
      this.#pending.get(m.id)?.(m);
      this.#pending.delete(m.id);
    });
    this.child.once('exit', (code, signal) => {
      log.error({ pid: this.child.pid, code, signal }, 'node proxy worker exited');
      for (const done of this.#pending.values()) done(undefined);
      this.#pending.clear();
    });
  }
  ask(req: WithoutId<WorkerRequest>, timeoutMs = REPLY_TIMEOUT_MS): Promise<WorkerReply | undefined> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve(undefined);
    const id = this.#next++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        resolve(undefined);
      }, timeoutMs);
      this.#pending.set(id, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
      this.child.send({ ...req, id });
    });
  }
}

export class ProxyWorkers implements PodProxyHost {
  readonly #local: PodProxies;
  readonly #workers: Worker[];
  readonly #tokenPath: ((uid: string) => string) | undefined;

  /** count: worker processes besides this one (this process serves every pod too). */
  constructor(local: PodProxies, count: number, opts: { env?: NodeJS.ProcessEnv; log: Logger; tokenPath?: (uid: string) => string }) {
    this.#local = local;
    this.#tokenPath = opts.tokenPath;
    this.#workers = Array.from({ length: count }, () => new Worker(opts.env ?? process.env, opts.log));
  }

  get pids(): number[] {
    return this.#workers.map((w) => w.child.pid ?? -1);
  }

  async serve(pod: ServedPod): Promise<boolean> {
    // This process first: it requests the pod's token, which the workers then read.
    const ok = await this.#local.serve(pod);
    if (!ok) return false;
    const sent = this.#tokenPath === undefined ? pod : { ...pod, tokenFile: this.#tokenPath(pod.uid) };
    const replies = await Promise.all(this.#workers.map((w) => w.ask({ op: 'serve', pod: sent })));
    return replies.every((r) => r?.ok === true);
  }

  async withdraw(uid: string, reason: string): Promise<boolean> {
    const [ok] = await Promise.all([this.#local.withdraw(uid, reason), ...this.#workers.map((w) => w.ask({ op: 'withdraw', uid, reason }))]);
    return ok;
  }

  async metrics(): Promise<Registry> {
    const all = [...(await this.#local.metricsJson())];
    for (const r of await Promise.all(this.#workers.map((w) => w.ask({ op: 'metrics' }, 5000)))) if (r?.metrics) all.push(r.metrics as (typeof all)[number]);
    return AggregatorRegistry.aggregate(all);
  }

  async shutdown(graceMs: number): Promise<void> {
    await Promise.all([this.#local.shutdown(graceMs), ...this.#workers.map((w) => w.ask({ op: 'shutdown', graceMs }, graceMs + 5000))]);
    for (const w of this.#workers) w.child.kill('SIGKILL');
  }
}
