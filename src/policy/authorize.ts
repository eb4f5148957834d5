// The decisions: is this client allowed on this port (a connection), and on
// which route, by which authorization, is this request allowed. Pure
// functions of a ServerPolicy and what is known about the client.
import { parseIp, type IpAddress } from '../util/ip.js';
import { defaultMeta, type Authn, type Authorization, type HostRule, type RequestMatch, type Route, type ServerPolicy, type StringMatch } from './model.js';

export interface ClientInfo {
  /** The peer's address (IPv4-mapped IPv6 already unwrapped). */
  ip: string;
  /** Mesh TLS terminated by this proxy. */
  tls: boolean;
  /** The verified identity of the peer's certificate, when it sent one. */
  identity: string | undefined;
}

export interface RequestInfo {
  method: string;
  /** The path without the query. */
  path: string;
  query: string;
  /** Host without the port, lower case; '' when none. */
  host: string;
  header(name: string): string | undefined;
}

function inNetwork(ip: IpAddress, a: Authorization): boolean {
  const contains = (c: { family: number; bytes: Buffer; prefix: number }): boolean => {
    if (c.family !== ip.family) return false;
    const full = c.prefix >> 3;
    if (!ip.bytes.subarray(0, full).equals(c.bytes.subarray(0, full))) return false;
    const rest = c.prefix & 7;
    if (rest === 0) return true;
    const mask = (0xff << (8 - rest)) & 0xff;
    return ((ip.bytes[full] ?? 0) & mask) === ((c.bytes[full] ?? 0) & mask);
  };
  return a.networks.some((n) => contains(n.net) && !n.except.some(contains));
}

function identityMatches(authn: Authn, c: ClientInfo): boolean {
  switch (authn.kind) {
    case 'unauthenticated':
      return true;
    case 'tls':
      return c.tls;
    case 'identities': {
      const id = c.identity?.toLowerCase();
      if (!c.tls || id === undefined) return false;
      if (authn.exact.has(id)) return true;
      return authn.suffixes.some((s) => s === '' || id === s || id.endsWith(`.${s}`));
    }
  }
}

/** The first authorization that admits the client, or null. `ip`: c.ip already parsed (a connection's requests parse it once). */
export function findAuthorization(authorizations: readonly Authorization[], c: ClientInfo, ip: IpAddress | null = parseIp(c.ip)): Authorization | null {
  if (authorizations.length === 0) return null;
  if (ip === null) return null;
  return authorizations.find((a) => inNetwork(ip, a) && identityMatches(a.authn, c)) ?? null;
}

const stringMatches = (m: StringMatch, v: string | undefined): boolean => v !== undefined && ('exact' in m ? m.exact === v : m.regex.test(v));

function queryValue(query: string, name: string): string | undefined {
  for (const part of query.split('&')) {
    const eq = part.indexOf('=');
    const k = eq < 0 ? part : part.slice(0, eq);
    if (k === name) return eq < 0 ? '' : part.slice(eq + 1);
  }
  return undefined;
}

/** A match's specificity when it matches (Gateway API precedence), else -1. */
function matchScore(m: RequestMatch, r: RequestInfo): number {
  let score = 0;
  if (m.path !== undefined) {
    if ('exact' in m.path) {
      if (r.path !== m.path.exact) return -1;
      score += 1_000_000;
    } else if ('prefix' in m.path) {
      const p = m.path.prefix.replace(/\/+$/, '');
      // A prefix matches whole path segments: /api matches /api and /api/x, not /apix.
      if (!(r.path === p || r.path.startsWith(`${p}/`) || p === '')) return -1;
      score += 1000 * (p.length + 1);
    } else {
      if (!m.path.regex.test(r.path)) return -1;
      score += 500;
    }
  }
  if (m.method !== undefined) {
    if (m.method !== r.method.toUpperCase()) return -1;
    score += 100;
  }
  for (const h of m.headers) if (!stringMatches(h.value, r.header(h.name))) return -1;
  for (const q of m.query) if (!stringMatches(q.value, queryValue(r.query, q.name))) return -1;
  return score + 10 * m.headers.length + m.query.length;
}

function hostScore(hosts: HostRule[], host: string): number {
  if (hosts.length === 0) return 0;
  let best = -1;
  for (const h of hosts) {
    if ('exact' in h) {
      if (h.exact === host) best = Math.max(best, 10_000);
    } else if (host.endsWith(`.${h.suffix}`)) best = Math.max(best, h.suffix.length + 1);
  }
  return best;
}

const defaultRoutes = new WeakMap<ServerPolicy, Route>();

/** The server's implicit route when it lists none: one object per server, so callers can keep decisions by route. */
export function defaultRoute(server: ServerPolicy): Route {
  let r = defaultRoutes.get(server);
  if (r === undefined) defaultRoutes.set(server, (r = { meta: defaultMeta('default'), hosts: [], rules: [], authorizations: server.authorizations }));
  return r;
}

/** The most specific route that matches the request; null when the server has routes and none matches. A server without routes reads nothing of the request. */
export function findRoute(server: ServerPolicy, r: RequestInfo): Route | null {
  if (server.routes.length === 0) return defaultRoute(server);
  let best: Route | null = null;
  let bestScore = -1;
  for (const route of server.routes) {
    const hs = hostScore(route.hosts, r.host);
    if (hs < 0) continue;
    // No rules, or a rule without matches: every request.
    const rs = route.rules.length === 0 ? 0 : Math.max(-1, ...route.rules.map((alts) => (alts.length === 0 ? 0 : Math.max(...alts.map((m) => matchScore(m, r))))));
    if (rs < 0) continue;
    const score = hs * 10_000_000 + rs;
    if (score > bestScore) {
      best = route;
      bestScore = score;
    }
  }
  return best;
}
