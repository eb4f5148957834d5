// The inbound policy of one port as the authorizer uses it, built from the
// policy API's Server message or from a default policy name. Conversion
// happens once per update, so per-connection and per-request checks only
// compare prepared values.
import type { AuthzMsg, HostMatchMsg, HttpRouteMatchMsg, HttpRouteMsg, IpNetworkMsg, MetadataMsg, ServerMsg } from '../control/protos.js';
import type { DefaultPolicyName } from '../config/policy-env.js';
import { parseCidr, type Cidr } from '../util/ip.js';

/** What a policy object is, for metric labels (Linkerd's group/kind/name). */
export interface Meta {
  group: string;
  kind: string;
  name: string;
}

export interface NetworkRule {
  net: Cidr;
  except: Cidr[];
}

export type Authn =
  | { kind: 'unauthenticated' }
  /** Mesh TLS, any identity or none. */
  | { kind: 'tls' }
  /** Mesh TLS from one of these identities: exact names, or name suffixes ("" matches all). */
  | { kind: 'identities'; exact: Set<string>; suffixes: string[] };

export interface Authorization {
  meta: Meta;
  networks: NetworkRule[];
  authn: Authn;
}

export type StringMatch = { exact: string } | { regex: RegExp };

export interface RequestMatch {
  path?: { exact: string } | { prefix: string } | { regex: RegExp };
  headers: Array<{ name: string; value: StringMatch }>;
  query: Array<{ name: string; value: StringMatch }>;
  method?: string;
}

export type HostRule = { exact: string } | { suffix: string };

export interface Route {
  meta: Meta;
  hosts: HostRule[];
  /** Each rule is a list of alternatives; an empty list matches every request. */
  rules: RequestMatch[][];
  /** The route's own authorizations plus the server's. */
  authorizations: Authorization[];
}

export type ServerProtocol = 'detect' | 'opaque' | 'tls' | 'http1' | 'http2' | 'grpc';

export interface ServerPolicy {
  meta: Meta;
  protocol: ServerProtocol;
  authorizations: Authorization[];
  /** Empty: every HTTP request is on the server's default route. */
  routes: Route[];
}

const ALL_NETWORKS: NetworkRule[] = [
  { net: parseCidr('0.0.0.0/0') as Cidr, except: [] },
  { net: parseCidr('::/0') as Cidr, except: [] },
];

export const defaultMeta = (name: string): Meta => ({ group: '', kind: 'default', name });

/** A default policy as Linkerd defines it: who may connect, on every network or only the cluster's. */
export function defaultServerPolicy(name: DefaultPolicyName, clusterNetworks: Cidr[]): ServerPolicy {
  const cluster = clusterNetworks.map((net) => ({ net, except: [] }));
  const allow = (networks: NetworkRule[], authn: Authn): Authorization[] => [{ meta: defaultMeta(name), networks, authn }];
  const anyIdentity: Authn = { kind: 'identities', exact: new Set(), suffixes: [''] };
  let authorizations: Authorization[];
  switch (name) {
    case 'all-unauthenticated':
    case 'audit':
      authorizations = allow(ALL_NETWORKS, { kind: 'unauthenticated' });
      break;
    case 'cluster-unauthenticated':
      authorizations = allow(cluster, { kind: 'unauthenticated' });
      break;
    case 'all-authenticated':
      authorizations = allow(ALL_NETWORKS, anyIdentity);
      break;
    case 'cluster-authenticated':
      authorizations = allow(cluster, anyIdentity);
      break;
    case 'deny':
      authorizations = [];
      break;
  }
  return { meta: defaultMeta(name), protocol: 'detect', authorizations, routes: [] };
}

function metaOf(m: MetadataMsg | null | undefined, labels: Record<string, string>, fallbackKind: string): Meta {
  if (m?.resource) return { group: m.resource.group, kind: m.resource.kind, name: m.resource.name };
  if (m?.default !== undefined && m.default !== '') return defaultMeta(m.default);
  // Older controllers: labels only.
  return { group: labels['group'] ?? '', kind: labels['kind'] ?? fallbackKind, name: labels['name'] ?? '' };
}

function cidrOf(n: IpNetworkMsg | null | undefined): Cidr | null {
  const ip = n?.ip;
  if (ip === null || ip === undefined) return null;
  let text: string;
  if (ip.ipv4 !== undefined) {
    const v = ip.ipv4 >>> 0;
    text = `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}/${n?.prefix_len ?? 32}`;
  } else if (ip.ipv6 !== undefined && ip.ipv6 !== null) {
    const b = Buffer.alloc(16);
    b.writeBigUInt64BE(BigInt.asUintN(64, BigInt(String(ip.ipv6.first))), 0);
    b.writeBigUInt64BE(BigInt.asUintN(64, BigInt(String(ip.ipv6.last))), 8);
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
    text = `${groups.join(':')}/${n?.prefix_len ?? 128}`;
  } else {
    return null;
  }
  return parseCidr(text);
}

function authzOf(a: AuthzMsg): Authorization | null {
  const networks: NetworkRule[] = [];
  for (const n of a.networks) {
    const net = cidrOf(n.net);
    if (net === null) continue;
    networks.push({ net, except: n.except.map(cidrOf).filter((c): c is Cidr => c !== null) });
  }
  // "Must have at least one network, otherwise the authorization must be ignored"; likewise without authentication.
  const au = a.authentication;
  if (networks.length === 0 || au === null) return null;
  let authn: Authn;
  if (au.permit === 'unauthenticated') authn = { kind: 'unauthenticated' };
  else if (au.permit === 'meshTLS' && au.meshTLS?.clients === 'unauthenticated') authn = { kind: 'tls' };
  else if (au.permit === 'meshTLS' && au.meshTLS?.identities) {
    const ids = au.meshTLS.identities;
    authn = {
      kind: 'identities',
      exact: new Set(ids.identities.map((i) => i.name.toLowerCase())),
      suffixes: ids.suffixes.map((s) => s.parts.join('.').toLowerCase()),
    };
  } else return null;
  return { meta: metaOf(a.metadata, a.labels, 'authorization'), networks, authn };
}

/** A regex of the API matches the whole value (Gateway API); an invalid one matches nothing. */
function fullRegex(source: string): RegExp {
  try {
    return new RegExp(`^(?:${source})$`);
  } catch {
    return /(?!)/;
  }
}

function stringMatch(v: { exact?: string; regex?: string; value?: string }): StringMatch {
  return v.value === 'regex' ? { regex: fullRegex(v.regex ?? '') } : { exact: v.exact ?? '' };
}

function requestMatchOf(m: HttpRouteMatchMsg): RequestMatch {
  const out: RequestMatch = {
    headers: m.headers.map((h) => ({ name: h.name.toLowerCase(), value: stringMatch(h) })),
    query: m.query_params.map((q) => ({ name: q.name, value: stringMatch(q) })),
  };
  const p = m.path;
  if (p?.kind === 'exact') out.path = { exact: p.exact ?? '' };
  else if (p?.kind === 'prefix') out.path = { prefix: p.prefix ?? '' };
  else if (p?.kind === 'regex') out.path = { regex: fullRegex(p.regex ?? '') };
  const method = m.method;
  if (method?.type === 'registered' && method.registered !== undefined) out.method = String(method.registered);
  else if (method?.type === 'unregistered' && method.unregistered !== undefined) out.method = method.unregistered.toUpperCase();
  return out;
}

function hostOf(h: HostMatchMsg): HostRule | null {
  if (h.match === 'exact' && h.exact !== undefined) return { exact: h.exact.toLowerCase() };
  if (h.match === 'suffix' && h.suffix) return { suffix: [...h.suffix.reverse_labels].reverse().join('.').toLowerCase() };
  return null;
}

function routeOf(r: HttpRouteMsg, server: Authorization[]): Route {
  const own = r.authorizations.map(authzOf).filter((a): a is Authorization => a !== null);
  return {
    meta: metaOf(r.metadata, {}, 'route'),
    hosts: r.hosts.map(hostOf).filter((h): h is HostRule => h !== null),
    rules: r.rules.map((rule) => rule.matches.map(requestMatchOf)),
    authorizations: [...own, ...server],
  };
}

/** The policy a Server message describes. */
export function serverPolicyOf(s: ServerMsg): ServerPolicy {
  const authorizations = s.authorizations.map(authzOf).filter((a): a is Authorization => a !== null);
  const p = s.protocol;
  const protocol: ServerProtocol = p?.kind ?? 'detect';
  const routeMsgs = p?.detect?.http_routes ?? p?.http1?.routes ?? p?.http2?.routes ?? [];
  return {
    meta: metaOf(null, s.labels, 'server'),
    protocol,
    authorizations,
    routes: routeMsgs.map((r) => routeOf(r, authorizations)),
  };
}
