// Inbound authorization for the proxy: the policy of the connection's port
// (from the policy API, else the default policy), Linkerd's decisions and
// metrics, and the re-check of open TCP connections when a port's policy
// changes (those no longer authorized are closed, as Linkerd does).
//
// The proxy calls: ready(port) before serving a connection (bounded wait for
// the port's first policy), connection() for opaque TCP, request() for each
// HTTP request, and watch() to have an allowed TCP connection re-checked.
import type { Registry } from 'prom-client';
import type { PolicyConfig } from '../config/policy-env.js';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { Logger } from '../log/logger.js';
import type { TlsStore } from '../tls/tls-store.js';
import { parseIp, type IpAddress } from '../util/ip.js';
import { findAuthorization, findRoute, type ClientInfo, type RequestInfo } from './authorize.js';
import { PolicyMetrics, type AuthzSeries, type AuthzSubject } from './metrics.js';
import { defaultServerPolicy, type Route, type ServerPolicy } from './model.js';
import type { PolicyWatcher } from './watcher.js';

/** What the proxy knows about an inbound connection when it asks. */
export interface InboundConn {
  targetIp: string;
  targetPort: number;
  targetAddr: string;
  client: ClientInfo;
}

export interface InboundAuthorizerOptions {
  config: PolicyConfig;
  registry: Registry;
  log: Logger;
  /** How long a connection waits for its port's first policy before the default applies (the inbound failfast, 1 s). */
  readyTimeoutMs: number;
  /** The workload's TLS store: the policy API off loopback is reached over mTLS with it. */
  tls?: TlsStore;
  /** Reconnect schedule of the policy streams (tests shorten it). */
  backoff?: { minMs?: number; maxMs?: number };
}

/**
 * A connection's last HTTP decision. Its requests usually land on the same
 * route of the same server policy, so the authorization and the metric
 * series are looked up again only when the route or the policy changes.
 */
interface ConnMemo {
  ip: IpAddress | null;
  server: ServerPolicy | undefined;
  route: Route | undefined;
  /** The allow series of that route's authorization; undefined when it denies. */
  allowed: AuthzSeries | undefined;
}

interface Tracked {
  conn: InboundConn;
  revoke: () => void;
}

const subject = (c: InboundConn): AuthzSubject => ({ targetAddr: c.targetAddr, targetIp: c.targetIp, targetPort: c.targetPort, tls: c.client.tls, clientId: c.client.identity });

function denied(c: InboundConn, server: ServerPolicy, what: string): BpfmeshError {
  const who = c.client.identity !== undefined ? `client ${c.client.identity}` : `unauthenticated client ${c.client.ip}`;
  return new BpfmeshError(ErrorCodes.FORBIDDEN, `${who} is not authorized ${what} on server ${server.meta.kind}/${server.meta.name}`);
}

export class InboundAuthorizer {
  readonly metrics: PolicyMetrics;
  readonly #default: ServerPolicy;
  readonly #watcher: PolicyWatcher | undefined;
  readonly #readyTimeoutMs: number;
  readonly #log: Logger;
  /** Open TCP connections by port, re-checked when the port's policy changes. */
  readonly #tracked = new Map<number, Set<Tracked>>();
  readonly #memos = new WeakMap<InboundConn, ConnMemo>();

  constructor(opts: InboundAuthorizerOptions) {
    this.#log = opts.log.child({ component: 'authz' });
    this.metrics = new PolicyMetrics(opts.registry);
    this.#default = defaultServerPolicy(opts.config.defaultPolicy, opts.config.clusterNetworks);
    this.#readyTimeoutMs = opts.readyTimeoutMs;
    const svc = opts.config.svc;
    if (svc !== undefined) {
      // The policy API client (gRPC, protobuf) loads only when configured: a proxy on the default policy is ~5 MB smaller.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { PolicyWatcher } = require('./watcher.js') as typeof import('./watcher.js');
      this.#watcher = new PolicyWatcher({
        config: { svc, workload: opts.config.workload },
        registry: opts.registry,
        log: opts.log,
        ...(opts.tls !== undefined ? { tls: opts.tls } : {}),
        ...(opts.backoff !== undefined ? { backoff: opts.backoff } : {}),
        onChange: (port, policy) => this.#recheck(port, policy),
      });
      for (const port of opts.config.ports) void this.#watcher.ready(port, 0);
    }
  }

  /** The policy in force on a port now. */
  policy(port: number): ServerPolicy {
    return this.#watcher?.policy(port) ?? this.#default;
  }

  async ready(port: number): Promise<void> {
    await this.#watcher?.ready(port, this.#readyTimeoutMs);
  }

  /** Opaque TCP: null when allowed; the denial otherwise (counted; the caller closes the connection). */
  connection(c: InboundConn): BpfmeshError | null {
    const server = this.policy(c.targetPort);
    const authz = findAuthorization(server.authorizations, c.client);
    if (authz === null) {
      this.metrics.tcpDeny(subject(c), server);
      this.#log.debug({ target: c.targetAddr, client: c.client }, 'connection denied');
      return denied(c, server, 'to connect');
    }
    this.metrics.tcpAllow(subject(c), server, authz);
    return null;
  }

  /** HTTP: null when allowed; BPFMESH_E_FORBIDDEN (403) or BPFMESH_E_ROUTE_NOT_FOUND (404) otherwise (counted). */
  request(c: InboundConn, r: RequestInfo): BpfmeshError | null {
    const server = this.policy(c.targetPort);
    const route = findRoute(server, r);
    if (route === null) {
      this.metrics.routeNotFound(subject(c), server);
      return new BpfmeshError(ErrorCodes.ROUTE_NOT_FOUND, `no route of server ${server.meta.kind}/${server.meta.name} matches ${r.method} ${r.path}`);
    }
    const m = this.#memo(c);
    if (m.server !== server || m.route !== route) {
      m.server = server;
      m.route = route;
      const authz = findAuthorization(route.authorizations, c.client, m.ip);
      m.allowed = authz === null ? undefined : this.metrics.httpAllowSeries(subject(c), server, route, authz);
    }
    if (m.allowed === undefined) {
      this.metrics.httpDeny(subject(c), server, route);
      return denied(c, server, `for route ${route.meta.kind}/${route.meta.name}`);
    }
    this.metrics.count(m.allowed);
    return null;
  }

  #memo(c: InboundConn): ConnMemo {
    let m = this.#memos.get(c);
    if (m === undefined) this.#memos.set(c, (m = { ip: parseIp(c.client.ip), server: undefined, route: undefined, allowed: undefined }));
    return m;
  }

  /** Re-checks an allowed TCP connection at every policy change of its port; `revoke` closes it. Returns the untrack function. */
  watch(c: InboundConn, revoke: () => void): () => void {
    let set = this.#tracked.get(c.targetPort);
    if (set === undefined) this.#tracked.set(c.targetPort, (set = new Set()));
    const t: Tracked = { conn: c, revoke };
    set.add(t);
    return () => {
      set.delete(t);
      if (set.size === 0 && this.#tracked.get(c.targetPort) === set) this.#tracked.delete(c.targetPort);
    };
  }

  close(): void {
    this.#watcher?.close();
  }

  #recheck(port: number, policy: ServerPolicy): void {
    const set = this.#tracked.get(port);
    if (set === undefined) return;
    for (const t of [...set]) {
      if (findAuthorization(policy.authorizations, t.conn.client) !== null) continue;
      set.delete(t);
      this.metrics.tcpTerminate(subject(t.conn), policy);
      this.#log.info({ target: t.conn.targetAddr, client: t.conn.client }, 'connection no longer authorized by the updated policy; closing');
      t.revoke();
    }
  }
}
