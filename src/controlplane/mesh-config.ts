// mesh.yaml of `bpfmesh control-plane`: what the development control plane
// answers. Parsed and checked here; unknown keys are errors so a typo does not
// silently change what proxies are told.
import { isAbsolute, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { parseDuration, parseListenAddr } from '../config/proxy-env.js';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { formatAddr, type Addr } from '../util/addr.js';
import { formatIp, parseIp } from '../util/ip.js';
import { parsePolicySection, type PolicySection } from './policy-config.js';

export interface MeshEndpoint {
  addr: Addr;
  weight: number;
  identity: string | undefined;
  protocolHint: 'h2' | 'opaque' | undefined;
  labels: Record<string, string>;
}

export interface MeshService {
  /** Normalised "host:port": the Get path it answers. */
  name: string;
  /** WeightedAddrSet.metric_labels. */
  labels: Record<string, string>;
  /** Empty: the service exists without endpoints (NoEndpoints{exists:true}). */
  endpoints: MeshEndpoint[];
}

export interface MeshConfig {
  /** Destination (and policy): mTLS off loopback. */
  listen: Addr;
  /** Identity on a port of its own (TLS off loopback); undefined: with Destination on `listen` if that is loopback, else port 8080 of its host. */
  identityListen: Addr | undefined;
  /** A second port of the Destination server for the policy API (Linkerd's linkerd-policy :8090), same TLS; undefined: none. */
  policyListen: Addr | undefined;
  trustDomain: string;
  identity: {
    /** Absolute paths; both undefined = generate into the state dir. */
    issuer: { certFile: string; keyFile: string } | undefined;
    trustAnchorsFile: string | undefined;
    leafLifetimeMs: number;
  };
  /** token → the identity it may certify; undefined = any token, any identity of the trust domain. */
  tokens: Map<string, string> | undefined;
  services: Map<string, MeshService>;
  /** Inbound policies served on InboundServerPolicies (policy-config.ts). */
  policy: PolicySection;
}

export const DEFAULT_WEIGHT = 10_000;
export const DEFAULT_LEAF_LIFETIME_MS = 24 * 3_600_000;
export const DEFAULT_LISTEN = '127.0.0.1:8086';

function bad(where: string, message: string, cause?: unknown): BpfmeshError {
  return new BpfmeshError(ErrorCodes.CONTROL_PLANE_CONFIG, `${where}: ${message}`, cause === undefined ? {} : { cause });
}

type Obj = Record<string, unknown>;

function object(v: unknown, where: string, keys: readonly string[]): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(where, 'expected a mapping');
  for (const k of Object.keys(v)) if (!keys.includes(k)) throw bad(where, `unknown key "${k}"; expected ${keys.join(', ')}`);
  return v as Obj;
}

function str(v: unknown, where: string): string {
  if (typeof v !== 'string' || v.trim() === '') throw bad(where, 'expected a non-empty string');
  return v.trim();
}

function labels(v: unknown, where: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  const o = object(v, where, Object.keys(v));
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(o)) {
    if (typeof val !== 'string' && typeof val !== 'number' && typeof val !== 'boolean') throw bad(`${where}.${k}`, 'expected a scalar');
    out[k] = String(val);
  }
  return out;
}

const DNS_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

export function isDnsName(text: string): boolean {
  return text.length <= 253 && DNS_NAME.test(text);
}

/**
 * A Get path in canonical form: lower-case host without the root dot, IPs
 * re-formatted (so "10.0.0.09"-style variants and IPv6 spellings match), IPv6
 * in brackets. Null when it is not host:port.
 */
export function normalizePath(path: string): string | null {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(path) ?? /^([^:[\]]+):(\d{1,5})$/.exec(path);
  if (m === null) return null;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return null;
  let host = (m[1] ?? '').toLowerCase();
  const ip = parseIp(host);
  if (ip !== null) return formatAddr({ host: formatIp(ip.bytes, ip.family), port });
  if (path.startsWith('[')) return null;
  if (host.endsWith('.')) host = host.slice(0, -1);
  return isDnsName(host) ? `${host}:${port}` : null;
}

function endpoint(v: unknown, where: string): MeshEndpoint {
  const o = object(v, where, ['addr', 'weight', 'identity', 'protocolHint', 'labels']);
  const addrText = str(o['addr'], `${where}.addr`);
  let addr: Addr;
  try {
    addr = parseListenAddr(addrText, `${where}.addr`);
  } catch (err) {
    throw bad(`${where}.addr`, `"${addrText}" is not IP:PORT or [IPv6]:PORT`, err);
  }
  if (addr.port === 0) throw bad(`${where}.addr`, 'port 0');
  const weight = o['weight'] ?? DEFAULT_WEIGHT;
  if (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 0 || weight > 0xffffffff) throw bad(`${where}.weight`, 'expected an integer 0-4294967295');
  let identity: string | undefined;
  if (o['identity'] !== undefined) {
    identity = str(o['identity'], `${where}.identity`).toLowerCase();
    if (!isDnsName(identity)) throw bad(`${where}.identity`, `"${identity}" is not a DNS-like identity`);
  }
  const hint = o['protocolHint'];
  if (hint !== undefined && hint !== 'h2' && hint !== 'opaque') throw bad(`${where}.protocolHint`, 'expected h2 or opaque');
  return { addr, weight, identity, protocolHint: hint, labels: labels(o['labels'], `${where}.labels`) };
}

function service(v: unknown, where: string): MeshService {
  const o = object(v, where, ['name', 'endpoints', 'noEndpoints', 'labels']);
  const raw = str(o['name'], `${where}.name`);
  const name = normalizePath(raw);
  if (name === null) throw bad(`${where}.name`, `"${raw}" is not host:port (a DNS name or an IP, and a port)`);
  const none = o['noEndpoints'];
  if (none !== undefined && typeof none !== 'boolean') throw bad(`${where}.noEndpoints`, 'expected true or false');
  const list = o['endpoints'] ?? [];
  if (!Array.isArray(list)) throw bad(`${where}.endpoints`, 'expected a list');
  if (none === true && list.length > 0) throw bad(where, 'noEndpoints: true and a non-empty endpoints list');
  const endpoints = list.map((e, i) => endpoint(e, `${where}.endpoints[${i}]`));
  const seen = new Set<string>();
  for (const e of endpoints) {
    const k = formatAddr(e.addr);
    if (seen.has(k)) throw bad(`${where}.endpoints`, `${k} is listed twice`);
    seen.add(k);
  }
  return { name, labels: labels(o['labels'], `${where}.labels`), endpoints };
}

/** Parses mesh.yaml; relative file names are relative to `baseDir` (the YAML file's directory). */
export function parseMeshConfig(text: string, file: string, baseDir: string): MeshConfig {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw bad(file, `not YAML: ${(err as Error).message}`, err);
  }
  const o = object(doc ?? {}, file, ['listen', 'identityListen', 'policyListen', 'trustDomain', 'identity', 'tokens', 'services', 'policy']);
  const listenText = o['listen'] === undefined ? DEFAULT_LISTEN : str(o['listen'], 'listen');
  let listen: Addr;
  try {
    listen = parseListenAddr(listenText, 'listen');
  } catch (err) {
    throw bad('listen', `"${listenText}" is not IP:PORT`, err);
  }
  let identityListen: Addr | undefined;
  if (o['identityListen'] !== undefined) {
    const t = str(o['identityListen'], 'identityListen');
    try {
      identityListen = parseListenAddr(t, 'identityListen');
    } catch (err) {
      throw bad('identityListen', `"${t}" is not IP:PORT`, err);
    }
  }
  let policyListen: Addr | undefined;
  if (o['policyListen'] !== undefined) {
    const t = str(o['policyListen'], 'policyListen');
    try {
      policyListen = parseListenAddr(t, 'policyListen');
    } catch (err) {
      throw bad('policyListen', `"${t}" is not IP:PORT`, err);
    }
  }
  const trustDomain = o['trustDomain'] === undefined ? 'cluster.local' : str(o['trustDomain'], 'trustDomain').toLowerCase();
  if (!isDnsName(trustDomain)) throw bad('trustDomain', `"${trustDomain}" is not a DNS name`);

  const id = object(o['identity'] ?? {}, 'identity', ['issuer', 'trustAnchorsFile', 'leafLifetime']);
  const abs = (p: string): string => (isAbsolute(p) ? p : join(baseDir, p));
  let issuer: MeshConfig['identity']['issuer'];
  if (id['issuer'] !== undefined) {
    const is = object(id['issuer'], 'identity.issuer', ['certFile', 'keyFile']);
    issuer = { certFile: abs(str(is['certFile'], 'identity.issuer.certFile')), keyFile: abs(str(is['keyFile'], 'identity.issuer.keyFile')) };
  }
  const anchors = id['trustAnchorsFile'] === undefined ? undefined : abs(str(id['trustAnchorsFile'], 'identity.trustAnchorsFile'));
  let leafLifetimeMs = DEFAULT_LEAF_LIFETIME_MS;
  if (id['leafLifetime'] !== undefined) {
    const t = str(id['leafLifetime'], 'identity.leafLifetime');
    try {
      leafLifetimeMs = parseDuration(t, 'identity.leafLifetime');
    } catch (err) {
      throw bad('identity.leafLifetime', `"${t}" is not a duration such as 24h or 20s`, err);
    }
    if (leafLifetimeMs < 1000) throw bad('identity.leafLifetime', 'at least 1s');
  }

  let tokens: Map<string, string> | undefined;
  if (o['tokens'] !== undefined && o['tokens'] !== null) {
    tokens = new Map();
    for (const [token, who] of Object.entries(labels(o['tokens'], 'tokens'))) tokens.set(token, who.toLowerCase());
  }

  const list = o['services'] ?? [];
  if (!Array.isArray(list)) throw bad('services', 'expected a list');
  const services = new Map<string, MeshService>();
  list.forEach((s, i) => {
    const svc = service(s, `services[${i}]`);
    if (services.has(svc.name)) throw bad(`services[${i}].name`, `${svc.name} is listed twice`);
    services.set(svc.name, svc);
  });
  const policy = parsePolicySection(o['policy']);
  return { listen, identityListen, policyListen, trustDomain, identity: { issuer, trustAnchorsFile: anchors, leafLifetimeMs }, tokens, services, policy };
}
