// Linkerd's authorization metrics, with its names and labels:
// inbound_http_authz_allow_total / _deny_total and inbound_tcp_authz_allow_total
// / _deny_total / _terminate_total (target_addr, target_ip, target_port,
// srv_*, route_* (HTTP), authz_* (allow), tls, client_id). client_id is
// bounded: past MAX_CLIENT_IDS distinct identities, traffic is counted
// without it (and in bpfmesh_policy_label_sets_dropped_total).
//
// The series are number cells (src/util/metric-cells.ts): the authorizer
// keeps a connection's allow series and counts each request with an
// addition, instead of building and hashing sixteen labels per request.
import type { Registry } from 'prom-client';
import { cell, CellFamily, type Cell, type Labels } from '../util/metric-cells.js';
import type { Authorization, Meta, Route, ServerPolicy } from './model.js';

export const MAX_CLIENT_IDS = 1000;

export interface AuthzSubject {
  targetAddr: string;
  targetIp: string;
  targetPort: number;
  tls: boolean;
  clientId: string | undefined;
}

/** One series to count into, and whether each count also counts a client_id left out. */
export interface AuthzSeries {
  readonly cell: Cell;
  readonly droppedId: boolean;
}

const metaLabels = (prefix: string, m: Meta): Labels => ({ [`${prefix}_group`]: m.group, [`${prefix}_kind`]: m.kind, [`${prefix}_name`]: m.name });
const metaKey = (m: Meta | undefined): string => (m === undefined ? '\0\0' : `${m.group}\0${m.kind}\0${m.name}`);

export class PolicyMetrics {
  readonly #httpAllow: CellFamily;
  readonly #httpDeny: CellFamily;
  readonly #routeNotFound: CellFamily;
  readonly #tcpAllow: CellFamily;
  readonly #tcpDeny: CellFamily;
  readonly #tcpTerminate: CellFamily;
  readonly #dropped: Cell;
  readonly #clientIds = new Set<string>();

  constructor(registry: Registry) {
    const c = (name: string, help: string): CellFamily => new CellFamily(registry, name, help, 'counter');
    this.#httpAllow = c('inbound_http_authz_allow_total', 'Inbound HTTP requests authorized, by server, route and authorization.');
    this.#httpDeny = c('inbound_http_authz_deny_total', 'Inbound HTTP requests denied (403 or gRPC PERMISSION_DENIED), by server and route.');
    this.#routeNotFound = c('bpfmesh_inbound_http_route_not_found_total', 'Inbound HTTP requests that matched no route of their server (404).');
    this.#tcpAllow = c('inbound_tcp_authz_allow_total', 'Inbound opaque TCP connections authorized, by server and authorization.');
    this.#tcpDeny = c('inbound_tcp_authz_deny_total', 'Inbound opaque TCP connections denied (closed), by server.');
    this.#tcpTerminate = c('inbound_tcp_authz_terminate_total', 'Open inbound TCP connections closed because a policy change no longer authorizes them.');
    const dropped = c('bpfmesh_policy_label_sets_dropped_total', `Authorization metrics recorded without client_id: more than ${MAX_CLIENT_IDS} distinct client identities.`);
    this.#dropped = cell(dropped.cells, '', () => ({}));
  }

  /** The series of `family` for this subject and these policy objects (found once, then kept by the caller). */
  #series(family: CellFamily, s: AuthzSubject, server: Meta, route?: Meta, authz?: Meta): AuthzSeries {
    let id = s.clientId;
    let droppedId = false;
    if (id !== undefined && !this.#clientIds.has(id)) {
      if (this.#clientIds.size >= MAX_CLIENT_IDS) {
        droppedId = true;
        id = undefined;
      } else this.#clientIds.add(id);
    }
    const tls = s.tls ? 'true' : 'no_identity';
    const key = `${s.targetAddr}\0${s.targetIp}\0${s.targetPort}\0${tls}\0${id ?? ''}\0${metaKey(server)}\0${metaKey(route)}\0${metaKey(authz)}`;
    const labels = (): Labels => ({
      target_addr: s.targetAddr,
      target_ip: s.targetIp,
      target_port: String(s.targetPort),
      tls,
      ...(id !== undefined ? { client_id: id } : {}),
      ...metaLabels('srv', server),
      ...(route !== undefined ? metaLabels('route', route) : {}),
      ...(authz !== undefined ? metaLabels('authz', authz) : {}),
    });
    return { cell: cell(family.cells, key, labels), droppedId };
  }

  count(series: AuthzSeries): void {
    series.cell.value++;
    if (series.droppedId) this.#dropped.value++;
  }

  httpAllowSeries(s: AuthzSubject, server: ServerPolicy, route: Route, authz: Authorization): AuthzSeries {
    return this.#series(this.#httpAllow, s, server.meta, route.meta, authz.meta);
  }

  httpAllow(s: AuthzSubject, server: ServerPolicy, route: Route, authz: Authorization): void {
    this.count(this.httpAllowSeries(s, server, route, authz));
  }

  httpDeny(s: AuthzSubject, server: ServerPolicy, route: Route): void {
    this.count(this.#series(this.#httpDeny, s, server.meta, route.meta));
  }

  routeNotFound(s: AuthzSubject, server: ServerPolicy): void {
    this.count(this.#series(this.#routeNotFound, s, server.meta));
  }

  tcpAllow(s: AuthzSubject, server: ServerPolicy, authz: Authorization): void {
    this.count(this.#series(this.#tcpAllow, s, server.meta, undefined, authz.meta));
  }

  tcpDeny(s: AuthzSubject, server: ServerPolicy): void {
    this.count(this.#series(this.#tcpDeny, s, server.meta));
  }

  tcpTerminate(s: AuthzSubject, server: ServerPolicy): void {
    this.count(this.#series(this.#tcpTerminate, s, server.meta));
  }
}
