// The `policy:` section of mesh.yaml: the inbound policies the development
// control plane serves on InboundServerPolicies. A port with no server entry
// gets `defaultPolicy`.
//
//   policy:
//     defaultPolicy: all-unauthenticated      # or all-authenticated, cluster-*, deny, audit
//     clusterNetworks: [10.0.0.0/8]           # for cluster-*; default Linkerd's
//     servers:
//       - name: web-http
//         workload: default:web               # ns:pod; omitted = every workload
//         port: 8080
//         protocol: detect                    # detect, http1, http2, grpc, opaque
//         authorizations:
//           - name: from-client
//             networks: [10.0.0.0/8, { cidr: 0.0.0.0/0, except: [10.9.0.0/16] }]   # default: all
//             authentication: unauthenticated # or meshTLS, or { identities: [...], suffixes: [...] }
//         routes:
//           - name: health
//             matches: [{ path: { prefix: /healthz }, method: GET, headers: [{ name: x-env, value: prod }] }]
//             authorizations: [...]
import { DEFAULT_CLUSTER_NETWORKS, DEFAULT_POLICIES, parseCidrList, type DefaultPolicyName } from '../config/policy-env.js';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { parseCidr, type Cidr } from '../util/ip.js';

export interface PolicyNetwork {
  cidr: Cidr;
  except: Cidr[];
}

export type PolicyAuthn = { kind: 'unauthenticated' } | { kind: 'meshTLS' } | { kind: 'identities'; identities: string[]; suffixes: string[] };

export interface PolicyAuthz {
  name: string;
  networks: PolicyNetwork[];
  authentication: PolicyAuthn;
}

export interface PolicyMatch {
  path?: { exact: string } | { prefix: string } | { regex: string };
  method?: string;
  headers: Array<{ name: string; value: string }>;
}

export interface PolicyRoute {
  name: string;
  hosts: string[];
  matches: PolicyMatch[];
  authorizations: PolicyAuthz[];
}

export interface PolicyServer {
  name: string;
  /** "ns:pod"; undefined = every workload. */
  workload: string | undefined;
  port: number;
  protocol: 'detect' | 'http1' | 'http2' | 'grpc' | 'opaque';
  authorizations: PolicyAuthz[];
  routes: PolicyRoute[];
}

export interface PolicySection {
  defaultPolicy: DefaultPolicyName;
  clusterNetworks: Cidr[];
  servers: PolicyServer[];
}

type Obj = Record<string, unknown>;
const bad = (where: string, message: string): BpfmeshError => new BpfmeshError(ErrorCodes.CONTROL_PLANE_CONFIG, `${where}: ${message}`);

function object(v: unknown, where: string, keys: readonly string[]): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(where, 'expected a mapping');
  for (const k of Object.keys(v)) if (!keys.includes(k)) throw bad(where, `unknown key "${k}"; expected ${keys.join(', ')}`);
  return v as Obj;
}

function list(v: unknown, where: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw bad(where, 'expected a list');
  return v;
}

function str(v: unknown, where: string): string {
  if (typeof v !== 'string' || v.trim() === '') throw bad(where, 'expected a non-empty string');
  return v.trim();
}

function cidr(v: unknown, where: string): Cidr {
  const c = parseCidr(str(v, where));
  if (c === null) throw bad(where, `"${String(v)}" is not a CIDR such as 10.0.0.0/8`);
  return c;
}

const ALL = (): PolicyNetwork[] => [
  { cidr: parseCidr('0.0.0.0/0') as Cidr, except: [] },
  { cidr: parseCidr('::/0') as Cidr, except: [] },
];

function authz(v: unknown, where: string): PolicyAuthz {
  const o = object(v, where, ['name', 'networks', 'authentication']);
  const networks = o['networks'] === undefined ? ALL() : list(o['networks'], `${where}.networks`).map((n, i) => {
    const w = `${where}.networks[${i}]`;
    if (typeof n === 'string') return { cidr: cidr(n, w), except: [] };
    const no = object(n, w, ['cidr', 'except']);
    return { cidr: cidr(no['cidr'], `${w}.cidr`), except: list(no['except'], `${w}.except`).map((e, j) => cidr(e, `${w}.except[${j}]`)) };
  });
  const a = o['authentication'] ?? 'unauthenticated';
  let authentication: PolicyAuthn;
  if (a === 'unauthenticated') authentication = { kind: 'unauthenticated' };
  else if (a === 'meshTLS') authentication = { kind: 'meshTLS' };
  else {
    const ao = object(a, `${where}.authentication`, ['identities', 'suffixes']);
    authentication = {
      kind: 'identities',
      identities: list(ao['identities'], `${where}.authentication.identities`).map((x, i) => str(x, `${where}.authentication.identities[${i}]`).toLowerCase()),
      // "" (any identity) is allowed here: YAML '' is a string.
      suffixes: list(ao['suffixes'], `${where}.authentication.suffixes`).map((x) => String(x).trim().toLowerCase()),
    };
  }
  return { name: str(o['name'], `${where}.name`), networks, authentication };
}

function match(v: unknown, where: string): PolicyMatch {
  const o = object(v, where, ['path', 'method', 'headers']);
  const out: PolicyMatch = { headers: [] };
  if (o['path'] !== undefined) {
    const p = object(o['path'], `${where}.path`, ['exact', 'prefix', 'regex']);
    const kinds = Object.keys(p);
    if (kinds.length !== 1) throw bad(`${where}.path`, 'exactly one of exact, prefix, regex');
    const k = kinds[0] as 'exact' | 'prefix' | 'regex';
    out.path = { [k]: str(p[k], `${where}.path.${k}`) } as PolicyMatch['path'];
  }
  if (o['method'] !== undefined) out.method = str(o['method'], `${where}.method`).toUpperCase();
  out.headers = list(o['headers'], `${where}.headers`).map((h, i) => {
    const ho = object(h, `${where}.headers[${i}]`, ['name', 'value']);
    return { name: str(ho['name'], `${where}.headers[${i}].name`).toLowerCase(), value: str(ho['value'], `${where}.headers[${i}].value`) };
  });
  return out;
}

function server(v: unknown, where: string): PolicyServer {
  const o = object(v, where, ['name', 'workload', 'port', 'protocol', 'authorizations', 'routes']);
  const port = o['port'];
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw bad(`${where}.port`, 'expected a port 1-65535');
  const protocol = o['protocol'] ?? 'detect';
  if (!['detect', 'http1', 'http2', 'grpc', 'opaque'].includes(protocol as string)) throw bad(`${where}.protocol`, 'expected detect, http1, http2, grpc or opaque');
  return {
    name: str(o['name'], `${where}.name`),
    workload: o['workload'] === undefined ? undefined : str(o['workload'], `${where}.workload`),
    port,
    protocol: protocol as PolicyServer['protocol'],
    authorizations: list(o['authorizations'], `${where}.authorizations`).map((a, i) => authz(a, `${where}.authorizations[${i}]`)),
    routes: list(o['routes'], `${where}.routes`).map((r, i) => {
      const w = `${where}.routes[${i}]`;
      const ro = object(r, w, ['name', 'hosts', 'matches', 'authorizations']);
      return {
        name: str(ro['name'], `${w}.name`),
        hosts: list(ro['hosts'], `${w}.hosts`).map((h, j) => str(h, `${w}.hosts[${j}]`).toLowerCase()),
        matches: list(ro['matches'], `${w}.matches`).map((m, j) => match(m, `${w}.matches[${j}]`)),
        authorizations: list(ro['authorizations'], `${w}.authorizations`).map((a, j) => authz(a, `${w}.authorizations[${j}]`)),
      };
    }),
  };
}

export function parsePolicySection(v: unknown): PolicySection {
  const o = object(v ?? {}, 'policy', ['defaultPolicy', 'clusterNetworks', 'servers']);
  const dp = o['defaultPolicy'] === undefined ? 'all-unauthenticated' : str(o['defaultPolicy'], 'policy.defaultPolicy');
  if (!(DEFAULT_POLICIES as readonly string[]).includes(dp)) throw bad('policy.defaultPolicy', `expected one of ${DEFAULT_POLICIES.join(', ')}`);
  const clusterNetworks =
    o['clusterNetworks'] === undefined
      ? parseCidrList(DEFAULT_CLUSTER_NETWORKS, 'policy.clusterNetworks')
      : list(o['clusterNetworks'], 'policy.clusterNetworks').map((c, i) => cidr(c, `policy.clusterNetworks[${i}]`));
  const servers = list(o['servers'], 'policy.servers').map((s, i) => server(s, `policy.servers[${i}]`));
  const seen = new Set<string>();
  for (const s of servers) {
    const k = `${s.workload ?? '*'} ${s.port}`;
    if (seen.has(k)) throw bad('policy.servers', `port ${s.port} of ${s.workload ?? 'every workload'} is listed twice`);
    seen.add(k);
  }
  return { defaultPolicy: dp as DefaultPolicyName, clusterNetworks, servers };
}
