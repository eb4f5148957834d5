// Linkerd's authorization metrics, with its names and labels:
// inbound_http_authz_allow_total / _deny_total and inbound_tcp_authz_allow_total
// / _deny_total / _terminate_total (target_addr, target_ip, target_port,
// srv_*, route_* (HTTP), authz_* (allow), tls, client_id). client_id is
// bounded: past MAX_CLIENT_IDS distinct identities, traffic is counted
// without it (and in bpfmesh_policy_label_sets_dropped_total).
import { Counter, type Registry } from 'prom-client';
import type { Authorization, Meta, Route, ServerPolicy } from './model.js';

export const MAX_CLIENT_IDS = 1000;

export interface AuthzSubject {
  targetAddr: string;
  targetIp: string;
  targetPort: number;
  tls: boolean;
  clientId: string | undefined;
}

type Labels = Record<string, string>;

const TARGET = ['target_addr', 'target_ip', 'target_port'] as const;
const SRV = ['srv_group', 'srv_kind', 'srv_name'] as const;
const ROUTE = ['route_group', 'route_kind', 'route_name'] as const;
const AUTHZ = ['authz_group', 'authz_kind', 'authz_name'] as const;
const PEER = ['tls', 'client_id'] as const;

const metaLabels = (prefix: string, m: Meta): Labels => ({ [`${prefix}_group`]: m.group, [`${prefix}_kind`]: m.kind, [`${prefix}_name`]: m.name });

export class PolicyMetrics {
  readonly #httpAllow: Counter;
  readonly #httpDeny: Counter;
  readonly #routeNotFound: Counter;
  readonly #tcpAllow: Counter;
  readonly #tcpDeny: Counter;
  readonly #tcpTerminate: Counter;
  readonly #dropped: Counter;
  readonly #clientIds = new Set<string>();

  constructor(registry: Registry) {
    const c = (name: string, help: string, labelNames: readonly string[]): Counter => new Counter({ name, help, labelNames, registers: [registry] });
    this.#httpAllow = c('inbound_http_authz_allow_total', 'Inbound HTTP requests authorized, by server, route and authorization.', [...TARGET, ...SRV, ...ROUTE, ...AUTHZ, ...PEER]);
    this.#httpDeny = c('inbound_http_authz_deny_total', 'Inbound HTTP requests denied (403 or gRPC PERMISSION_DENIED), by server and route.', [...TARGET, ...SRV, ...ROUTE, ...PEER]);
    this.#routeNotFound = c('bpfmesh_inbound_http_route_not_found_total', 'Inbound HTTP requests that matched no route of their server (404).', [...TARGET, ...SRV, ...PEER]);
    this.#tcpAllow = c('inbound_tcp_authz_allow_total', 'Inbound opaque TCP connections authorized, by server and authorization.', [...TARGET, ...SRV, ...AUTHZ, ...PEER]);
    this.#tcpDeny = c('inbound_tcp_authz_deny_total', 'Inbound opaque TCP connections denied (closed), by server.', [...TARGET, ...SRV, ...PEER]);
    this.#tcpTerminate = c('inbound_tcp_authz_terminate_total', 'Open inbound TCP connections closed because a policy change no longer authorizes them.', [...TARGET, ...SRV, ...PEER]);
    this.#dropped = c('bpfmesh_policy_label_sets_dropped_total', `Authorization metrics recorded without client_id: more than ${MAX_CLIENT_IDS} distinct client identities.`, []);
  }

  #peer(s: AuthzSubject): Labels {
    const l: Labels = { target_addr: s.targetAddr, target_ip: s.targetIp, target_port: String(s.targetPort), tls: s.tls ? 'true' : 'no_identity' };
    const id = s.clientId;
    if (id === undefined) return l;
    if (!this.#clientIds.has(id)) {
      if (this.#clientIds.size >= MAX_CLIENT_IDS) {
        this.#dropped.inc();
        return l;
      }
      this.#clientIds.add(id);
    }
    l['client_id'] = id;
    return l;
  }

  httpAllow(s: AuthzSubject, server: ServerPolicy, route: Route, authz: Authorization): void {
    this.#httpAllow.inc({ ...this.#peer(s), ...metaLabels('srv', server.meta), ...metaLabels('route', route.meta), ...metaLabels('authz', authz.meta) });
  }

  httpDeny(s: AuthzSubject, server: ServerPolicy, route: Route): void {
    this.#httpDeny.inc({ ...this.#peer(s), ...metaLabels('srv', server.meta), ...metaLabels('route', route.meta) });
  }

  routeNotFound(s: AuthzSubject, server: ServerPolicy): void {
    this.#routeNotFound.inc({ ...this.#peer(s), ...metaLabels('srv', server.meta) });
  }

  tcpAllow(s: AuthzSubject, server: ServerPolicy, authz: Authorization): void {
    this.#tcpAllow.inc({ ...this.#peer(s), ...metaLabels('srv', server.meta), ...metaLabels('authz', authz.meta) });
  }

  tcpDeny(s: AuthzSubject, server: ServerPolicy): void {
    this.#tcpDeny.inc({ ...this.#peer(s), ...metaLabels('srv', server.meta) });
  }

  tcpTerminate(s: AuthzSubject, server: ServerPolicy): void {
    this.#tcpTerminate.inc({ ...this.#peer(s), ...metaLabels('srv', server.meta) });
  }
}
