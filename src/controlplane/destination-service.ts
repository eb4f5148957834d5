// Destination.Get and GetProfile of the development control plane. Each Get
// stream gets the current state of its path right after subscribing, then
// Add/Remove/NoEndpoints diffs whenever the configuration is reloaded.
import * as grpc from '@grpc/grpc-js';
import {
  encodeTcpAddress,
  type DestinationHandlers,
  type DestinationProfileMsg,
  type GetDestinationMsg,
  type UpdateMsg,
  type WeightedAddrMsg,
} from '../control/protos.js';
import type { Logger } from '../log/logger.js';
import { formatAddr } from '../util/addr.js';
import { normalizePath, type MeshConfig, type MeshEndpoint } from './mesh-config.js';

/** What one path resolves to: endpoints by "ip:port", or none (known or not). */
interface Snapshot {
  exists: boolean;
  labels: Record<string, string>;
  endpoints: Map<string, MeshEndpoint>;
}

function snapshotOf(config: MeshConfig, path: string): Snapshot {
  const svc = config.services.get(path);
  if (svc === undefined) return { exists: false, labels: {}, endpoints: new Map() };
  return { exists: true, labels: svc.labels, endpoints: new Map(svc.endpoints.map((e) => [formatAddr(e.addr), e])) };
}

function weightedAddr(e: MeshEndpoint): WeightedAddrMsg {
  return {
    addr: encodeTcpAddress(e.addr),
    weight: e.weight,
    metric_labels: e.labels,
    // Meshed endpoints carry server_name equal to their DNS identity.
    tls_identity: e.identity === undefined ? null : { dns_like_identity: { name: e.identity }, server_name: { name: e.identity } },
    protocol_hint: e.protocolHint === undefined ? null : { [e.protocolHint]: {} },
  };
}

const add = (s: Snapshot, eps: Iterable<MeshEndpoint>): UpdateMsg => ({ add: { addrs: [...eps].map(weightedAddr), metric_labels: s.labels } });

const sameLabels = (a: Record<string, string>, b: Record<string, string>): boolean =>
  Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, v]) => b[k] === v);

const sameEndpoint = (a: MeshEndpoint, b: MeshEndpoint): boolean =>
  a.weight === b.weight && a.identity === b.identity && a.protocolHint === b.protocolHint && sameLabels(a.labels, b.labels);

/** The first message(s) of a stream: the whole state. */
export function initialUpdates(s: Snapshot): UpdateMsg[] {
  return s.endpoints.size > 0 ? [add(s, s.endpoints.values())] : [{ no_endpoints: { exists: s.exists } }];
}

/** The messages that take a client from `from` to `to`; an address sent again in an Add replaces what the client knew. */
export function diffUpdates(from: Snapshot, to: Snapshot): UpdateMsg[] {
  if (to.endpoints.size === 0) {
    return from.endpoints.size > 0 || from.exists !== to.exists ? [{ no_endpoints: { exists: to.exists } }] : [];
  }
  if (from.endpoints.size === 0) return [add(to, to.endpoints.values())];
  const out: UpdateMsg[] = [];
  const removed = [...from.endpoints.keys()].filter((k) => !to.endpoints.has(k));
  if (removed.length > 0) out.push({ remove: { addrs: removed.map((k) => encodeTcpAddress((from.endpoints.get(k) as MeshEndpoint).addr)) } });
  const labelsChanged = !sameLabels(from.labels, to.labels);
  const changed = [...to.endpoints].filter(([k, e]) => {
    const before = from.endpoints.get(k);
    return labelsChanged || before === undefined || !sameEndpoint(before, e);
  });
  if (changed.length > 0) out.push(add(to, changed.map(([, e]) => e)));
  return out;
}

function profileOf(config: MeshConfig, path: string): DestinationProfileMsg {
  const svc = config.services.get(path);
  const host = path.slice(0, path.lastIndexOf(':'));
  // An ip:port that is one configured endpoint gets that endpoint, as Linkerd does for pod IPs.
  let endpoint: WeightedAddrMsg | null = null;
  for (const s of config.services.values()) {
    const e = s.endpoints.find((x) => formatAddr(x.addr) === path);
    if (e !== undefined) endpoint = weightedAddr(e);
  }
  const eps = svc?.endpoints ?? [];
  return {
    fully_qualified_name: svc !== undefined && !/^[\d.]+$|^\[/.test(host) ? host : '',
    opaque_protocol: eps.length > 0 && eps.every((e) => e.protocolHint === 'opaque'),
    endpoint,
  };
}

interface Subscription {
  path: string;
  snapshot: Snapshot;
  call: grpc.ServerWritableStream<GetDestinationMsg, UpdateMsg>;
}

interface ProfileSubscription {
  path: string;
  call: grpc.ServerWritableStream<GetDestinationMsg, DestinationProfileMsg>;
}

export interface DestinationServiceHooks {
  /** Counts a request by rpc and result (a gRPC status name, or "OK" when a stream starts). */
  count(rpc: string, result: string): void;
}

export class DestinationService {
  #config: MeshConfig;
  readonly #log: Logger;
  readonly #hooks: DestinationServiceHooks;
  readonly #subs = new Set<Subscription>();
  readonly #profiles = new Set<ProfileSubscription>();

  constructor(config: MeshConfig, log: Logger, hooks: DestinationServiceHooks) {
    this.#config = config;
    this.#log = log;
    this.#hooks = hooks;
  }

  get streams(): number {
    return this.#subs.size + this.#profiles.size;
  }

  readonly handlers: DestinationHandlers = {
    Get: (call) => this.#get(call),
    GetProfile: (call) => this.#getProfile(call),
  };

  /** Swap in a new configuration and send every open stream what changed for its path. */
  update(config: MeshConfig): void {
    this.#config = config;
    for (const sub of this.#subs) {
      const next = snapshotOf(config, sub.path);
      const updates = diffUpdates(sub.snapshot, next);
      sub.snapshot = next;
      for (const u of updates) sub.call.write(u);
      if (updates.length > 0) this.#log.debug({ path: sub.path, updates: updates.map((u) => Object.keys(u)[0]) }, 'sent changes');
    }
    for (const p of this.#profiles) p.call.write(profileOf(config, p.path));
  }

  #path(call: grpc.ServerWritableStream<GetDestinationMsg, unknown>, rpc: string): string | null {
    const path = normalizePath(call.request.path);
    if (path === null) {
      this.#hooks.count(rpc, 'INVALID_ARGUMENT');
      call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: `path "${call.request.path}" is not host:port` });
      return null;
    }
    return path;
  }

  #get(call: grpc.ServerWritableStream<GetDestinationMsg, UpdateMsg>): void {
    const path = this.#path(call, 'Get');
    if (path === null) return;
    const sub: Subscription = { path, snapshot: snapshotOf(this.#config, path), call };
    this.#subs.add(sub);
    this.#hooks.count('Get', 'OK');
    this.#log.debug({ path, context: call.request.context_token, peer: call.getPeer() }, 'Get');
    const done = (): void => void this.#subs.delete(sub);
    call.on('cancelled', done);
    call.on('close', done);
    call.on('error', done);
    for (const u of initialUpdates(sub.snapshot)) call.write(u);
  }

  #getProfile(call: grpc.ServerWritableStream<GetDestinationMsg, DestinationProfileMsg>): void {
    const path = this.#path(call, 'GetProfile');
    if (path === null) return;
    const sub: ProfileSubscription = { path, call };
    this.#profiles.add(sub);
    this.#hooks.count('GetProfile', 'OK');
    const done = (): void => void this.#profiles.delete(sub);
    call.on('cancelled', done);
    call.on('close', done);
    call.on('error', done);
    call.write(profileOf(this.#config, path));
  }

  /** Ends every open stream (the server is going away). */
  close(): void {
    for (const s of [...this.#subs, ...this.#profiles]) s.call.end();
    this.#subs.clear();
    this.#profiles.clear();
  }
}
