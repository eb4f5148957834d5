// WatchPort streams of Linkerd's InboundServerPolicies API, one per inbound
// port: the port's current policy, replaced by every message of the stream.
//
// - Ports are watched from the start (LINKERD2_PROXY_INBOUND_PORTS) or on
//   their first connection; at most maxPorts streams (past that a port gets
//   the default policy, counted in bpfmesh_policy_ports_unwatched_total).
// - A stream that ends or fails is reopened with backoff; the last policy
//   received holds meanwhile (a control-plane outage changes nothing).
// - Until a port's first message, it has no policy: the authorizer waits for
//   it a bounded time (ready()), then applies the default policy.
import * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, type Registry } from 'prom-client';
import { Backoff, type BackoffOptions } from '../control/backoff.js';
import { openControlClient, statusName, type ControlClient } from '../control/channel.js';
import { inboundPolicyClientCtor, type InboundPolicyClient, type ServerMsg } from '../control/protos.js';
import type { PolicyConfig } from '../config/policy-env.js';
import type { Logger } from '../log/logger.js';
import type { TlsStore } from '../tls/tls-store.js';
import { serverPolicyOf, type ServerPolicy } from './model.js';

export const DEFAULT_MAX_PORTS = 256;

export interface PolicyWatcherOptions {
  config: Pick<PolicyConfig, 'workload'> & { svc: NonNullable<PolicyConfig['svc']> };
  /** The workload's TLS store: mTLS to a policy service off loopback (required there), rebuilt on rotation. */
  tls?: TlsStore;
  registry: Registry;
  log: Logger;
  backoff?: BackoffOptions;
  maxPorts?: number;
  /** Called after a port's policy changed. */
  onChange?: (port: number, policy: ServerPolicy) => void;
}

type StreamState = 'connecting' | 'streaming' | 'backoff';

interface Watch {
  port: number;
  policy: ServerPolicy | undefined;
  stream: StreamState;
  call: grpc.ClientReadableStream<ServerMsg> | undefined;
  retry: NodeJS.Timeout | undefined;
  backoff: Backoff;
  waiters: Set<() => void>;
}

export class PolicyWatcher {
  readonly #channel: ControlClient<InboundPolicyClient>;
  readonly #workload: string;
  readonly #log: Logger;
  readonly #backoffOpts: BackoffOptions;
  readonly #maxPorts: number;
  readonly #onChange: ((port: number, policy: ServerPolicy) => void) | undefined;
  readonly #watches = new Map<number, Watch>();
  readonly #updates: Counter<'result'>;
  readonly #reconnects: Counter<'code'>;
  readonly #unwatched: Counter;
  #closed = false;

  constructor(opts: PolicyWatcherOptions) {
    this.#log = opts.log.child({ component: 'policy' });
    this.#workload = opts.config.workload;
    this.#backoffOpts = opts.backoff ?? {};
    this.#maxPorts = opts.maxPorts ?? DEFAULT_MAX_PORTS;
    this.#onChange = opts.onChange;
    // Off loopback: mTLS with the workload certificate, as Destination (src/control/channel.ts).
    this.#channel = openControlClient({
      svc: opts.config.svc,
      service: 'policy',
      ctor: inboundPolicyClientCtor(),
      tls: opts.tls === undefined ? undefined : { kind: 'mtls', store: opts.tls },
      backoff: new Backoff(this.#backoffOpts),
      log: opts.log,
      registry: opts.registry,
    });
    // A new client (the first certificate, a rotation): every stream moves to it, keeping its last policy.
    this.#channel.onChange(() => {
      for (const w of this.#watches.values()) {
        if (w.retry !== undefined) continue; // reopens on the new client when its backoff ends
        const old = w.call;
        w.call = undefined;
        this.#open(w);
        old?.cancel();
      }
    });
    const watches = this.#watches;
    new Gauge({
      name: 'bpfmesh_policy_watches',
      help: 'WatchPort streams of the inbound policy API, by state: connecting (no policy yet on this stream), streaming, backoff.',
      labelNames: ['state'] as const,
      registers: [opts.registry],
      collect() {
        const n: Record<StreamState, number> = { connecting: 0, streaming: 0, backoff: 0 };
        for (const w of watches.values()) n[w.stream]++;
        for (const [state, v] of Object.entries(n)) this.set({ state }, v);
      },
    });
    this.#updates = new Counter({
      name: 'bpfmesh_policy_updates_total',
      help: 'Server policies received on WatchPort streams, by result (applied, invalid).',
      labelNames: ['result'] as const,
      registers: [opts.registry],
    });
    this.#reconnects = new Counter({
      name: 'bpfmesh_policy_reconnects_total',
      help: 'WatchPort streams that ended and were scheduled to reopen, by gRPC status.',
      labelNames: ['code'] as const,
      registers: [opts.registry],
    });
    this.#unwatched = new Counter({
      name: 'bpfmesh_policy_ports_unwatched_total',
      help: 'Connections to a port that got the default policy because the proxy already watches its maximum of ports.',
      registers: [opts.registry],
    });
  }

  /** The port's last policy from the API; undefined before its first (or past the port limit). */
  policy(port: number): ServerPolicy | undefined {
    return this.#watch(port)?.policy;
  }

  /** Starts watching `port` if needed; resolves at its first policy or after timeoutMs, whichever is first. */
  async ready(port: number, timeoutMs: number): Promise<void> {
    const w = this.#watch(port);
    if (w === undefined || w.policy !== undefined) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        w.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      w.waiters.add(done);
    });
  }

  get ports(): number[] {
    return [...this.#watches.keys()];
  }

  close(): void {
    this.#closed = true;
    for (const w of this.#watches.values()) {
      clearTimeout(w.retry);
      w.call?.cancel();
      for (const done of [...w.waiters]) done();
    }
    this.#channel.close();
  }

  #watch(port: number): Watch | undefined {
    if (this.#closed) return undefined;
    let w = this.#watches.get(port);
    if (w !== undefined) return w;
    if (this.#watches.size >= this.#maxPorts) {
      this.#unwatched.inc();
      return undefined;
    }
    w = { port, policy: undefined, stream: 'connecting', call: undefined, retry: undefined, backoff: new Backoff(this.#backoffOpts), waiters: new Set() };
    this.#watches.set(port, w);
    this.#open(w);
    return w;
  }

  #open(w: Watch): void {
    w.retry = undefined;
    w.stream = 'connecting';
    const client = this.#channel.current;
    // mTLS waits for the first workload certificate; onChange opens the stream then.
    if (client === undefined) return;
    const call = client.WatchPort({ workload: this.#workload, port: w.port });
    w.call = call;
    call.on('data', (s: ServerMsg) => this.#onServer(w, call, s));
    call.on('error', () => {}); // the status event carries it
    call.on('status', (s: grpc.StatusObject) => this.#onEnd(w, call, s));
  }

  #onServer(w: Watch, call: grpc.ClientReadableStream<ServerMsg>, msg: ServerMsg): void {
    if (this.#closed || w.call !== call) return;
    let policy: ServerPolicy;
    try {
      policy = serverPolicyOf(msg);
    } catch (err) {
      this.#updates.inc({ result: 'invalid' });
      this.#log.warn({ port: w.port, err: (err as Error).message }, 'unusable policy; keeping the previous one');
      return;
    }
    this.#updates.inc({ result: 'applied' });
    w.backoff.reset();
    w.stream = 'streaming';
    w.policy = policy;
    this.#log.debug({ port: w.port, server: policy.meta, authorizations: policy.authorizations.length, routes: policy.routes.length }, 'policy');
    for (const done of [...w.waiters]) done();
    this.#onChange?.(w.port, policy);
  }

  #onEnd(w: Watch, call: grpc.ClientReadableStream<ServerMsg>, s: grpc.StatusObject): void {
    if (this.#closed || w.call !== call) return;
    w.call = undefined;
    w.stream = 'backoff';
    const code = statusName(s.code);
    this.#reconnects.inc({ code });
    // gRPC says only UNAVAILABLE: the probe names a refused TLS (another CA, another name) with its code and logs it.
    if (s.code === grpc.status.UNAVAILABLE) void this.#channel.diagnose();
    const refused = s.code === grpc.status.INVALID_ARGUMENT || s.code === grpc.status.NOT_FOUND || s.code === grpc.status.FAILED_PRECONDITION;
    const first = w.backoff.attempt === 0;
    const delay = refused ? w.backoff.slow() : w.backoff.next();
    const how = w.policy === undefined ? 'the default policy applies' : 'the last policy holds';
    (first || refused ? this.#log.warn : this.#log.debug).call(this.#log, { port: w.port, code, details: s.details, retryMs: delay }, `policy stream ended; ${how}`);
    // A refusal settles the wait: the default policy applies now.
    if (refused) for (const done of [...w.waiters]) done();
    w.retry = setTimeout(() => this.#open(w), delay);
    w.retry.unref();
  }
}
