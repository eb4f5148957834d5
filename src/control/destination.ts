// Service discovery from Linkerd's Destination API: a Resolver for the
// proxy's Router. One Get stream per "host:port", shared by every caller;
// its updates keep one StaticEndpointSet current.
//
// What resolve() answers:
// - before the stream's first message: 'fallback' (resolve() is
//   synchronous; Linkerd would wait up to the failfast timeout instead —
//   callers that can wait use whenResolved(), which does);
// - Add/Remove: 'endpoints', the live set (possibly empty after Removes,
//   which the Router turns into a 503);
// - NoEndpoints{exists:true}: 'fail' (503 at once); {exists:false}: 'fallback';
// - while the control plane is unreachable: the last known answer. After a
//   reconnect the first message replaces what was known (the server sends
//   its whole state first).
// Streams end when the server ends them or fails; they are reopened with
// exponential backoff and jitter. InvalidArgument and FailedPrecondition
// (the server refuses this lookup) are retried only at the slow end of the
// schedule. Off loopback the streams run over mTLS with the workload
// certificate (src/control/channel.ts): no stream opens before the first
// certificate, and on each rotation every open stream is reopened on a
// client built with the new certificate, keeping what it knew until the new
// stream's first message, as after a reconnect. Lookups unused for idleMs (Linkerd: 5 s) are dropped and their
// streams cancelled, so the cache does not grow without bound.
import * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { DestinationConfig } from '../config/proxy-env.js';
import type { Logger } from '../log/logger.js';
import { formatAddr, type Addr } from '../util/addr.js';
import type { Endpoint, Resolution, Resolver } from '../util/endpoint.js';
import { Backoff, type BackoffOptions } from './backoff.js';
import { StaticEndpointSet } from './static-set.js';
import { openControlClient, statusName, type ControlClient } from './channel.js';
import type { TlsStore } from '../tls/tls-store.js';
import { decodeTcpAddress, destinationClientCtor, type DestinationClient, type UpdateMsg, type WeightedAddrMsg } from './protos.js';

/** Linkerd's outbound discovery idle timeout. */
export const DEFAULT_IDLE_MS = 5000;
/** What the controller sends; proto3 cannot tell 0 from unset, so 0 means this. */
export const DEFAULT_WEIGHT = 10_000;

export interface DestinationResolverOptions {
  /** ProxyConfig.destination. */
  config: Pick<DestinationConfig, 'addr' | 'name' | 'loopback' | 'contextToken'>;
  /** The workload's TLS store: mTLS to a control plane off loopback (required there). */
  tls?: TlsStore;
  registry: Registry;
  log: Logger;
  idleMs?: number;
  backoff?: BackoffOptions;
  /** Injectable clock for the idle sweep. */
  now?: () => number;
}

type LookupState = 'pending' | 'endpoints' | 'fail' | 'fallback';
type StreamState = 'connecting' | 'streaming' | 'backoff';

interface Lookup {
  key: string;
  set: StaticEndpointSet;
  endpoints: Map<string, Endpoint>;
  state: LookupState;
  stream: StreamState;
  call: grpc.ClientReadableStream<UpdateMsg> | undefined;
  /** No message yet on the current stream: the next one replaces the stale state. */
  fresh: boolean;
  retry: NodeJS.Timeout | undefined;
  backoff: Backoff;
  lastUsed: number;
  waiters: Set<() => void>;
  closed: boolean;
}

/**
 * The Get path for a target: the authority when known ("host[:port]", lower
 * case, the target's port when it has none: the app dialled that port), else
 * the original destination "ip:port".
 */
export function lookupKey(target: Addr, authority: string | undefined): string {
  const a = authority?.trim().toLowerCase();
  if (a === undefined || a === '') return formatAddr(target);
  if (/^\[[^\]]+\]:\d+$/.test(a) || /^[^:[\]]+:\d+$/.test(a)) return a;
  if (/^\[[^\]]+\]$/.test(a) || !a.includes(':')) return `${a}:${target.port}`;
  return formatAddr(target); // not an authority we can name (a bare IPv6, junk): the original destination
}

function toEndpoint(w: WeightedAddrMsg, setLabels: Record<string, string>): Endpoint | null {
  const addr = decodeTcpAddress(w.addr);
  if (addr === null) return null;
  const ep: Endpoint = { addr, weight: w.weight === 0 ? DEFAULT_WEIGHT : w.weight, labels: { ...setLabels, ...w.metric_labels } };
  const tls = w.tls_identity;
  if (tls !== null && tls !== undefined) {
    const identity = tls.dns_like_identity?.name ?? tls.uri_like_identity?.uri;
    if (identity !== undefined && identity !== '') ep.identity = identity;
    // Older controllers omit server_name; for a DNS identity it is the same name.
    const sni = tls.server_name?.name || tls.dns_like_identity?.name;
    if (sni !== undefined && sni !== '') ep.serverName = sni;
  }
  const hint = w.protocol_hint?.protocol;
  if (hint === 'h2' || hint === 'opaque') ep.protocolHint = hint;
  return ep;
}

export class DestinationResolver implements Resolver {
  readonly #channel: ControlClient<DestinationClient>;
  readonly #contextToken: string;
  readonly #log: Logger;
  readonly #idleMs: number;
  readonly #backoffOpts: BackoffOptions;
  readonly #now: () => number;
  readonly #lookups = new Map<string, Lookup>();
  #sweeper: NodeJS.Timeout | undefined;
  #closed = false;
  readonly #updates: Counter<'kind'>;
  readonly #reconnects: Counter<'code'>;

  constructor(opts: DestinationResolverOptions) {
    this.#log = opts.log.child({ component: 'destination' });
    this.#idleMs = opts.idleMs ?? DEFAULT_IDLE_MS;
    this.#backoffOpts = opts.backoff ?? {};
    this.#now = opts.now ?? Date.now;
    this.#contextToken = opts.config.contextToken;
    this.#channel = openControlClient({
      svc: opts.config,
      service: 'destination',
      ctor: destinationClientCtor(),
      tls: opts.tls === undefined ? undefined : { kind: 'mtls', store: opts.tls },
      backoff: new Backoff(this.#backoffOpts),
      log: opts.log,
      registry: opts.registry,
    });
    // A new client (the first certificate, a rotation): every stream moves to it.
    this.#channel.onChange(() => {
      for (const l of this.#lookups.values()) this.#reopen(l);
    });

    const lookups = this.#lookups;
    new Gauge({
      name: 'bpfmesh_destination_streams',
      help: 'Destination Get streams, by state: connecting (no update yet), streaming, backoff (waiting to reconnect).',
      labelNames: ['state'] as const,
      registers: [opts.registry],
      collect() {
        const n: Record<StreamState, number> = { connecting: 0, streaming: 0, backoff: 0 };
        for (const l of lookups.values()) n[l.stream]++;
        for (const [state, v] of Object.entries(n)) this.set({ state }, v);
      },
    });
    this.#updates = new Counter({
      name: 'bpfmesh_destination_updates_total',
      help: 'Updates received on Destination Get streams, by kind (add, remove, no_endpoints).',
      labelNames: ['kind'] as const,
      registers: [opts.registry],
    });
    this.#reconnects = new Counter({
      name: 'bpfmesh_destination_reconnects_total',
      help: 'Destination Get streams that ended and were scheduled to reopen, by gRPC status.',
      labelNames: ['code'] as const,
      registers: [opts.registry],
    });
  }

  /** Lookups in the cache (each holds one stream or a pending reconnect). */
  get size(): number {
    return this.#lookups.size;
  }

  resolve(target: Addr, authority: string | undefined): Resolution {
    const l = this.#lookup(lookupKey(target, authority));
    return l === undefined ? { kind: 'fallback' } : this.#resolution(l);
  }

  /**
   * Like resolve(), but waits up to timeoutMs for the first answer of a new
   * lookup (Linkerd waits up to the failfast timeout); 'fallback' if none came.
   */
  async whenResolved(target: Addr, authority: string | undefined, timeoutMs: number): Promise<Resolution> {
    const l = this.#lookup(lookupKey(target, authority));
    if (l === undefined) return { kind: 'fallback' };
    if (l.state === 'pending') {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          l.waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, timeoutMs);
        l.waiters.add(done);
      });
    }
    l.lastUsed = this.#now();
    return this.#resolution(l);
  }

  /** Cancels every stream; resolve() answers 'fallback' afterwards. */
  close(): void {
    this.#closed = true;
    for (const l of [...this.#lookups.values()]) this.#drop(l);
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    this.#channel.close();
  }

  #resolution(l: Lookup): Resolution {
    switch (l.state) {
      case 'endpoints':
        return { kind: 'endpoints', set: l.set };
      case 'fail':
        return { kind: 'fail', reason: `${l.key} exists but has no endpoints` };
      default:
        return { kind: 'fallback' };
    }
  }

  #lookup(key: string): Lookup | undefined {
    if (this.#closed) return undefined;
    let l = this.#lookups.get(key);
    if (l === undefined) {
      l = {
        key,
        set: new StaticEndpointSet(),
        endpoints: new Map(),
        state: 'pending',
        stream: 'connecting',
        call: undefined,
        fresh: true,
        retry: undefined,
        backoff: new Backoff(this.#backoffOpts),
        lastUsed: 0,
        waiters: new Set(),
        closed: false,
      };
      this.#lookups.set(key, l);
      this.#open(l);
      this.#startSweeper();
    }
    l.lastUsed = this.#now();
    return l;
  }

  /** Ends the lookup's stream (its status is ignored) and opens it again now; what it knew stays until the first message. */
  #reopen(l: Lookup): void {
    if (l.closed) return;
    clearTimeout(l.retry);
    const old = l.call;
    l.call = undefined;
    old?.cancel();
    this.#open(l);
  }

  #open(l: Lookup): void {
    l.retry = undefined;
    l.stream = 'connecting';
    l.fresh = true;
    const client = this.#channel.current;
    // mTLS waits for the first workload certificate; onChange opens the stream then.
    if (client === undefined) return;
    const call = client.Get({ scheme: '', path: l.key, context_token: this.#contextToken });
    l.call = call;
    call.on('data', (u: UpdateMsg) => this.#onUpdate(l, call, u));
    // 'error' carries the same status as 'status'; handled there, listened to so it is not thrown.
    call.on('error', () => {});
    call.on('status', (s: grpc.StatusObject) => this.#onEnd(l, call, s));
  }

  #onUpdate(l: Lookup, call: grpc.ClientReadableStream<UpdateMsg>, u: UpdateMsg): void {
    if (l.closed || l.call !== call) return;
    this.#updates.inc({ kind: u.update ?? 'unknown' });
    l.backoff.reset();
    l.stream = 'streaming';
    if (l.fresh) {
      l.fresh = false;
      l.endpoints.clear();
    }
    if (u.add !== undefined) {
      for (const w of u.add.addrs) {
        const ep = toEndpoint(w, u.add.metric_labels);
        if (ep === null) this.#log.debug({ path: l.key }, 'an added address has no IP; skipped');
        else l.endpoints.set(formatAddr(ep.addr), ep);
      }
      l.state = 'endpoints';
    } else if (u.remove !== undefined) {
      for (const a of u.remove.addrs) {
        const addr = decodeTcpAddress(a);
        if (addr !== null) l.endpoints.delete(formatAddr(addr));
      }
      if (l.state === 'pending' || l.endpoints.size > 0) l.state = 'endpoints';
    } else if (u.no_endpoints !== undefined) {
      l.endpoints.clear();
      l.state = u.no_endpoints.exists ? 'fail' : 'fallback';
    } else {
      return; // an update kind from a newer API: nothing we understand changed
    }
    this.#log.debug({ path: l.key, kind: u.update, state: l.state, endpoints: l.endpoints.size }, 'update');
    l.set.replace([...l.endpoints.values()]);
    for (const w of [...l.waiters]) w();
  }

  #onEnd(l: Lookup, call: grpc.ClientReadableStream<UpdateMsg>, s: grpc.StatusObject): void {
    if (l.closed || l.call !== call) return;
    l.call = undefined;
    l.stream = 'backoff';
    const code = statusName(s.code);
    this.#reconnects.inc({ code });
    let delay: number;
    if (s.code === grpc.status.INVALID_ARGUMENT || s.code === grpc.status.FAILED_PRECONDITION) {
      // The server refuses this lookup; asking again soon will not change that.
      delay = l.backoff.slow();
      this.#log.warn({ path: l.key, code, details: s.details, retryMs: delay }, 'the control plane refused the lookup; using the original destination');
      if (l.state === 'pending') {
        l.state = 'fallback';
        for (const w of [...l.waiters]) w();
      }
    } else {
      const first = l.backoff.attempt === 0;
      delay = l.backoff.next();
      // Once per outage at warn; the retries that follow at debug.
      (first ? this.#log.warn : this.#log.debug).call(this.#log, { path: l.key, code, details: s.details, retryMs: delay }, 'destination stream ended; reconnecting');
      // gRPC only says UNAVAILABLE; the channel names a TLS failure (logged there, with what to do).
      if (s.code === grpc.status.UNAVAILABLE) void this.#channel.diagnose();
    }
    l.retry = setTimeout(() => this.#open(l), delay);
    l.retry.unref();
  }

  #drop(l: Lookup): void {
    l.closed = true;
    clearTimeout(l.retry);
    l.call?.cancel();
    l.call = undefined;
    this.#lookups.delete(l.key);
    for (const w of [...l.waiters]) w();
  }

  #startSweeper(): void {
    if (this.#sweeper !== undefined) return;
    // Often enough that a lookup lives at most ~1.5 idle periods.
    const every = Math.max(20, Math.min(1000, this.#idleMs / 2));
    this.#sweeper = setInterval(() => {
      const now = this.#now();
      for (const l of [...this.#lookups.values()]) {
        if (now - l.lastUsed >= this.#idleMs) {
          this.#log.debug({ path: l.key }, 'lookup idle; stream cancelled');
          this.#drop(l);
        }
      }
      if (this.#lookups.size === 0) {
        clearInterval(this.#sweeper);
        this.#sweeper = undefined;
      }
    }, every);
    this.#sweeper.unref();
  }
}
