// InboundServerPolicies (GetPort, WatchPort) of the development control
// plane, from mesh.yaml's `policy:` section. A WatchPort stream gets the
// port's Server at once, then again whenever a reload changes it.
import * as grpc from '@grpc/grpc-js';
import type { AuthzIn, HttpRouteIn, InboundPolicyHandlers, IpNetworkIn, PortSpecMsg, ServerIn } from '../control/protos.js';
import type { Logger } from '../log/logger.js';
import type { Cidr } from '../util/ip.js';
import type { MeshConfig } from './mesh-config.js';
import type { PolicyAuthz, PolicyNetwork, PolicyRoute, PolicySection, PolicyServer } from './policy-config.js';

const GROUP = 'policy.linkerd.io';

function network(c: Cidr): IpNetworkIn {
  const ip = c.family === 4 ? { ipv4: c.bytes.readUInt32BE(0) } : { ipv6: { first: c.bytes.readBigUInt64BE(0).toString(), last: c.bytes.readBigUInt64BE(8).toString() } };
  return { ip, prefix_len: c.prefix };
}

const networks = (ns: PolicyNetwork[]): AuthzIn['networks'] => ns.map((n) => ({ net: network(n.cidr), except: n.except.map(network) }));

function authz(a: PolicyAuthz, meta: AuthzIn['metadata'], labels: Record<string, string>): AuthzIn {
  const au = a.authentication;
  const authentication: AuthzIn['authentication'] =
    au.kind === 'unauthenticated'
      ? { unauthenticated: {} }
      : au.kind === 'meshTLS'
        ? { meshTLS: { unauthenticated: {} } }
        : {
            meshTLS: {
              identities: {
                identities: au.identities.map((name) => ({ name })),
                suffixes: au.suffixes.map((s) => ({ parts: s === '' ? [] : s.split('.') })),
              },
            },
          };
  return { networks: networks(a.networks), authentication, labels, metadata: meta };
}

const resourceAuthz = (a: PolicyAuthz): AuthzIn => authz(a, { resource: { group: GROUP, kind: 'AuthorizationPolicy', name: a.name } }, { group: GROUP, kind: 'authorizationpolicy', name: a.name });

function route(r: PolicyRoute): HttpRouteIn {
  return {
    metadata: { resource: { group: GROUP, kind: 'HTTPRoute', name: r.name } },
    hosts: r.hosts.map((h) => (h.startsWith('*.') ? { suffix: { reverse_labels: h.slice(2).split('.').reverse() } } : { exact: h })),
    authorizations: r.authorizations.map(resourceAuthz),
    rules: [
      {
        matches: r.matches.map((m) => ({
          ...(m.path !== undefined ? { path: m.path } : {}),
          ...(m.method !== undefined ? { method: { unregistered: m.method } } : {}),
          headers: m.headers.map((h) => ({ name: h.name, exact: h.value })),
        })),
      },
    ],
  };
}

/** Linkerd's controller sends a "default" route matching every path with the server's authorizations. */
function defaultRoute(authorizations: AuthzIn[]): HttpRouteIn {
  return { metadata: { default: 'default' }, authorizations, rules: [{ matches: [{ path: { prefix: '/' } }] }] };
}

function protocol(kind: PolicyServer['protocol'], routes: HttpRouteIn[]): ServerIn['protocol'] {
  switch (kind) {
    case 'detect':
      return { detect: { timeout: { seconds: 10 }, http_routes: routes } };
    case 'http1':
      return { http1: { routes } };
    case 'http2':
      return { http2: { routes } };
    case 'grpc':
      return { grpc: {} };
    case 'opaque':
      return { opaque: {} };
  }
}

function serverMsg(s: PolicyServer): ServerIn {
  const authorizations = s.authorizations.map(resourceAuthz);
  const routes = s.routes.length > 0 ? s.routes.map(route) : [defaultRoute(authorizations)];
  return { protocol: protocol(s.protocol, routes), authorizations, labels: { group: GROUP, kind: 'server', name: s.name } };
}

const ALL_V4 = { cidr: { family: 4, bytes: Buffer.alloc(4), prefix: 0 } as Cidr, except: [] };
const ALL_V6 = { cidr: { family: 6, bytes: Buffer.alloc(16), prefix: 0 } as Cidr, except: [] };

/** What Linkerd's controller answers for a port without a Server: the default policy. */
export function defaultServerMsg(p: PolicySection): ServerIn {
  const name = p.defaultPolicy;
  const cluster = p.clusterNetworks.map((cidr) => ({ cidr, except: [] }));
  const all = [ALL_V4, ALL_V6];
  const meta = { default: name };
  const labels = { kind: 'default', name };
  const one = (nets: PolicyNetwork[], authentication: PolicyAuthz['authentication']): AuthzIn[] => [authz({ name, networks: nets, authentication }, meta, labels)];
  const anyId: PolicyAuthz['authentication'] = { kind: 'identities', identities: [], suffixes: [''] };
  const authorizations =
    name === 'all-unauthenticated' || name === 'audit'
      ? one(all, { kind: 'unauthenticated' })
      : name === 'cluster-unauthenticated'
        ? one(cluster, { kind: 'unauthenticated' })
        : name === 'all-authenticated'
          ? one(all, anyId)
          : name === 'cluster-authenticated'
            ? one(cluster, anyId)
            : [];
  return { protocol: protocol('detect', [defaultRoute(authorizations)]), authorizations, labels };
}

/** "ns:pod" from PortSpec.workload, which is {"ns":"…","pod":"…"} (or already "ns:pod"). */
export function workloadKey(workload: string): string {
  try {
    const w = JSON.parse(workload) as { ns?: unknown; pod?: unknown };
    if (typeof w.ns === 'string' && typeof w.pod === 'string') return `${w.ns}:${w.pod}`;
  } catch {
    // not JSON: the older "ns:pod" form
  }
  return workload;
}

export function serverFor(p: PolicySection, workload: string, port: number): ServerIn {
  const key = workloadKey(workload);
  const s = p.servers.find((x) => x.port === port && x.workload === key) ?? p.servers.find((x) => x.port === port && x.workload === undefined);
  return s === undefined ? defaultServerMsg(p) : serverMsg(s);
}

interface Watch {
  spec: PortSpecMsg;
  last: string;
  call: grpc.ServerWritableStream<PortSpecMsg, ServerIn>;
}

export interface PolicyServiceHooks {
  count(rpc: string, result: string): void;
}

export class PolicyService {
  #policy: PolicySection;
  readonly #log: Logger;
  readonly #hooks: PolicyServiceHooks;
  readonly #watches = new Set<Watch>();

  constructor(config: MeshConfig, log: Logger, hooks: PolicyServiceHooks) {
    this.#policy = config.policy;
    this.#log = log;
    this.#hooks = hooks;
  }

  get streams(): number {
    return this.#watches.size;
  }

  readonly handlers: InboundPolicyHandlers = {
    GetPort: (call, callback) => {
      if (!this.#valid(call.request, 'GetPort', (code, details) => callback({ code, details }))) return;
      this.#hooks.count('GetPort', 'OK');
      callback(null, serverFor(this.#policy, call.request.workload, call.request.port));
    },
    WatchPort: (call) => {
      if (!this.#valid(call.request, 'WatchPort', (code, details) => call.emit('error', { code, details }))) return;
      const first = serverFor(this.#policy, call.request.workload, call.request.port);
      const w: Watch = { spec: call.request, last: JSON.stringify(first), call };
      this.#watches.add(w);
      this.#hooks.count('WatchPort', 'OK');
      this.#log.debug({ workload: call.request.workload, port: call.request.port, peer: call.getPeer() }, 'WatchPort');
      const done = (): void => void this.#watches.delete(w);
      call.on('cancelled', done);
      call.on('close', done);
      call.on('error', done);
      call.write(first);
    },
  };

  /** Sends every open stream whose port's policy changed its new policy. */
  update(config: MeshConfig): void {
    this.#policy = config.policy;
    for (const w of this.#watches) {
      const next = serverFor(this.#policy, w.spec.workload, w.spec.port);
      const text = JSON.stringify(next);
      if (text === w.last) continue;
      w.last = text;
      w.call.write(next);
      this.#log.debug({ workload: w.spec.workload, port: w.spec.port }, 'sent a changed policy');
    }
  }

  #valid(spec: PortSpecMsg, rpc: string, fail: (code: grpc.status, details: string) => void): boolean {
    if (spec.port >= 1 && spec.port <= 65535 && spec.workload !== '') return true;
    this.#hooks.count(rpc, 'INVALID_ARGUMENT');
    fail(grpc.status.INVALID_ARGUMENT, `PortSpec needs a workload and a port 1-65535 (got "${spec.workload}", ${spec.port})`);
    return false;
  }
}
