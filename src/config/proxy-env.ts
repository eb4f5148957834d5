// The LINKERD2_PROXY_* environment a Linkerd injector writes, parsed into the
// proxy's configuration. The only reader of that environment: the proxy's
// layers get a typed ProxyConfig. Names, forms and defaults follow
// linkerd2-proxy (linkerd/app/src/env.rs).
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { Addr } from '../util/addr.js';
import { formatPortRange, parsePortList, type PortRange } from '../util/ports.js';
import type { LogLevel, LogOptions } from './pod-flags.js';
import { parsePolicyEnv, type PolicyConfig } from './policy-env.js';
import { parseTapEnv, type TapConfig } from './tap-env.js';

export const PROXY_ENV = {
  outboundListenAddr: 'LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR',
  inboundListenAddr: 'LINKERD2_PROXY_INBOUND_LISTEN_ADDR',
  adminListenAddr: 'LINKERD2_PROXY_ADMIN_LISTEN_ADDR',
  controlListenAddr: 'LINKERD2_PROXY_CONTROL_LISTEN_ADDR',
  inboundConnectTimeout: 'LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT',
  outboundConnectTimeout: 'LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT',
  inboundDetectTimeout: 'LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT',
  outboundDetectTimeout: 'LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT',
  inboundHttpFailfastTimeout: 'LINKERD2_PROXY_INBOUND_HTTP_FAILFAST_TIMEOUT',
  outboundHttpFailfastTimeout: 'LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT',
  outboundTcpFailfastTimeout: 'LINKERD2_PROXY_OUTBOUND_TCP_FAILFAST_TIMEOUT',
  inboundHttp1PoolIdleTimeout: 'LINKERD2_PROXY_INBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT',
  outboundHttp1PoolIdleTimeout: 'LINKERD2_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT',
  opaquePorts: 'LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION',
  shutdownGracePeriod: 'LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD',
  shutdownEndpointEnabled: 'LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED',
  log: 'LINKERD2_PROXY_LOG',
  logFormat: 'LINKERD2_PROXY_LOG_FORMAT',
  destinationSvcAddr: 'LINKERD2_PROXY_DESTINATION_SVC_ADDR',
  destinationSvcName: 'LINKERD2_PROXY_DESTINATION_SVC_NAME',
  destinationContext: 'LINKERD2_PROXY_DESTINATION_CONTEXT',
  identityDisabled: 'LINKERD2_PROXY_IDENTITY_DISABLED',
  identityDir: 'LINKERD2_PROXY_IDENTITY_DIR',
  identityTrustAnchors: 'LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS',
  identityTokenFile: 'LINKERD2_PROXY_IDENTITY_TOKEN_FILE',
  identitySvcAddr: 'LINKERD2_PROXY_IDENTITY_SVC_ADDR',
  identitySvcName: 'LINKERD2_PROXY_IDENTITY_SVC_NAME',
  identityLocalName: 'LINKERD2_PROXY_IDENTITY_LOCAL_NAME',
  // Limits Linkerd has no variable for (see ProxyLimits).
  requestHeadTimeout: 'BPFMESH_PROXY_HTTP1_REQUEST_HEAD_TIMEOUT',
  requestBodyTimeout: 'BPFMESH_PROXY_HTTP1_REQUEST_BODY_TIMEOUT',
  responseHeadTimeout: 'BPFMESH_PROXY_HTTP1_RESPONSE_HEAD_TIMEOUT',
  httpIdleTimeout: 'BPFMESH_PROXY_HTTP_IDLE_TIMEOUT',
  tcpIdleTimeout: 'BPFMESH_PROXY_TCP_IDLE_TIMEOUT',
  maxConnections: 'BPFMESH_PROXY_MAX_CONNECTIONS',
  maxAuthorities: 'BPFMESH_PROXY_METRICS_MAX_AUTHORITIES',
} as const;

export const DEFAULT_OPAQUE_PORTS = '25,587,3306,4444,5432,6379,9300,11211';
export const DEFAULT_LOG_FILTER = 'warn,linkerd=info';

/** Node clamps longer timers to 1 ms; a longer Linkerd duration means "practically never". */
export const MAX_DURATION_MS = 2 ** 31 - 1;

export interface ProxyDirectionConfig {
  listenAddr: Addr;
  connectTimeoutMs: number;
  /** Protocol detection: how long to wait for the first bytes. */
  detectTimeoutMs: number;
  /** How long an HTTP request may wait for a ready endpoint before a 504. */
  httpFailfastTimeoutMs: number;
  /** Idle HTTP/1 upstream connections are closed after this. */
  http1PoolIdleTimeoutMs: number;
}

/** Where a control-plane service is, and whom to expect there. */
export interface ControlAddr {
  /** host:port; the host may be a DNS name ("linkerd-dst-headless.linkerd.svc.cluster.local."). */
  addr: Addr;
  /** The server's identity (…_SVC_NAME): TLS expects it. Undefined only on loopback. */
  name: string | undefined;
  /** localhost or a loopback IP: plaintext, like Linkerd. */
  loopback: boolean;
}

export interface DestinationConfig extends ControlAddr {
  /** Sent as GetDestination.context_token: {"ns":"…","nodeName":"…","pod":"…"}, verbatim. */
  contextToken: string;
}

export interface IdentityConfig {
  svc: ControlAddr;
  /** The DNS name this proxy certifies as (the CSR's only SAN). */
  localName: string;
  /** Re-read on every Certify call: the kubelet rotates it. */
  tokenFile: string;
  /** PEM, one or more certificates. */
  trustAnchorsPem: string;
  /** Where the key and certificate are also written, when set. */
  dir: string | undefined;
}

/**
 * What a client can hold, and for how long. 0 turns a timeout off. Detection
 * (…_DETECT_TIMEOUT) bounds the first request head too: its clock runs from
 * the connection's first byte.
 */
export interface ProxyLimits {
  /** HTTP/1: a request head must be complete this long after its first byte (408). */
  requestHeadTimeoutMs: number;
  /** HTTP/1: a request body that moves no byte for this long is cut (408 before a response, reset after). */
  requestBodyTimeoutMs: number;
  /** HTTP/1 (and HTTP/1 carried over HTTP/2): from the end of the request to the response head (504). */
  responseHeadTimeoutMs: number;
  /** An HTTP/1 keep-alive client between requests, an HTTP/2 client without traffic: closed after this. */
  httpIdleTimeoutMs: number;
  /** Opaque TCP without a byte either way: both sides closed after this. */
  tcpIdleTimeoutMs: number;
  /** Client connections open at once, both directions together; more are closed at accept. */
  maxConnections: number;
  /** Distinct `authority` label values in the HTTP metrics; more are counted without one. */
  maxAuthorities: number;
}

export const DEFAULT_LIMITS: ProxyLimits = {
  requestHeadTimeoutMs: 10_000,
  requestBodyTimeoutMs: 60_000,
  responseHeadTimeoutMs: 60_000,
  httpIdleTimeoutMs: 60_000,
  tcpIdleTimeoutMs: 3_600_000,
  maxConnections: 4096,
  maxAuthorities: 256,
};

export interface ProxyConfig {
  limits: ProxyLimits;
  inbound: ProxyDirectionConfig;
  outbound: ProxyDirectionConfig & {
    /** How long an opaque connection may wait for a ready endpoint. */
    tcpFailfastTimeoutMs: number;
  };
  adminListenAddr: Addr;
  controlListenAddr: Addr;
  /** Inbound target ports served as opaque TCP, without protocol detection. */
  opaquePorts: PortRange[];
  shutdownGracePeriodMs: number;
  /** POST /shutdown on the admin server (loopback callers only). */
  shutdownEndpointEnabled: boolean;
  log: LogOptions;
  /** LINKERD2_PROXY_LOG as given (a tracing filter), for display. */
  logFilter: string;
  /** Undefined without LINKERD2_PROXY_DESTINATION_SVC_ADDR: every target is its own endpoint. */
  destination: DestinationConfig | undefined;
  /** Undefined when LINKERD2_PROXY_IDENTITY_DISABLED is set or no identity variable is: no mTLS. */
  identity: IdentityConfig | undefined;
  /** Inbound authorization (src/policy/); see policy-env.ts. */
  policy?: PolicyConfig;
  /** The tap server on the control port; undefined when tap is off (see tap-env.ts). */
  tap?: TapConfig | undefined;
}

function bad(name: string, value: string, expected: string, cause?: unknown): BpfmeshError {
  return new BpfmeshError(ErrorCodes.BAD_ENV, `${name}: "${value}" is not valid; expected ${expected}`, cause === undefined ? {} : { cause });
}

/** Empty and whitespace-only values count as unset: Kubernetes writes `value: ""` for absent settings. */
function get(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Linkerd's duration form: an integer and a unit (ms, s, m, h, d); a bare "0" is zero. Clamped to MAX_DURATION_MS. */
export function parseDuration(text: string, name: string): number {
  const m = /^\s*(\d+)(ms|s|m|h|d)?\s*$/.exec(text);
  const expected = 'an integer with a unit ms, s, m, h or d, such as "300ms", "10s" or "2m"';
  if (m === null) throw bad(name, text, expected);
  const n = Number(m[1]);
  if (m[2] === undefined) {
    if (n === 0) return 0;
    throw bad(name, text, expected);
  }
  return Math.min(n * (UNIT_MS[m[2]] ?? 1), MAX_DURATION_MS);
}

/** A positive integer (a count). */
export function parseCount(text: string, name: string): number {
  if (!/^\d{1,9}$/.test(text) || Number(text) < 1) throw bad(name, text, 'a positive integer such as 4096');
  return Number(text);
}

/** "IP:PORT" or "[IPv6]:PORT"; no names, like Linkerd. Port 0 asks for an ephemeral port. */
export function parseListenAddr(text: string, name: string): Addr {
  const expected = 'IP:PORT such as 0.0.0.0:4143 or [::]:4143';
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]]+):(\d{1,5})$/.exec(text);
  if (m === null) throw bad(name, text, expected);
  const host = m[1] ?? '';
  const port = Number(m[2]);
  const family = isIP(host);
  // A bracketed host must be IPv6, a bare one IPv4.
  if (family === 0 || (family === 6) !== text.startsWith('[') || port > 65535) throw bad(name, text, expected);
  return { host, port };
}

export function parseBool(text: string, name: string): boolean {
  const t = text.toLowerCase();
  if (t === 'true') return true;
  if (t === 'false') return false;
  throw bad(name, text, 'true or false');
}

const TRACING_LEVELS: Record<string, LogLevel> = {
  trace: 'trace',
  debug: 'debug',
  info: 'info',
  warn: 'warn',
  error: 'error',
  off: 'silent',
};
const VERBOSITY: Record<LogLevel, number> = { trace: 6, debug: 5, info: 4, warn: 3, error: 2, fatal: 1, silent: 0 };

/** Split a tracing filter at top-level commas; span filters ("[{headers}]=off") may hold commas. */
function directives(filter: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < filter.length; i++) {
    const c = filter[i];
    if (c === '[' || c === '{') depth++;
    else if ((c === ']' || c === '}') && depth > 0) depth--;
    else if (c === ',' && depth === 0) {
      out.push(filter.slice(start, i));
      start = i + 1;
    }
  }
  out.push(filter.slice(start));
  return out.map((d) => d.trim()).filter((d) => d !== '');
}

/**
 * LINKERD2_PROXY_LOG is a tracing filter ("warn,linkerd=info,[{headers}]=off");
 * pino has one level per logger, so: the most verbose level given to a target
 * that starts with "linkerd" (linkerd, linkerd2_proxy, linkerd_app_...) when
 * there is one, else the bare level, else warn. Directives for other targets
 * or with span filters ("[...]") are ignored; "off" maps to pino's "silent".
 */
export function logLevelOfFilter(filter: string, name = PROXY_ENV.log): LogLevel {
  const expected = 'a filter such as "warn,linkerd=info" with levels trace, debug, info, warn, error or off';
  const levelOf = (text: string): LogLevel => {
    const l = TRACING_LEVELS[text.toLowerCase()];
    if (l === undefined) throw bad(name, filter, expected);
    return l;
  };
  let bare: LogLevel | undefined;
  let linkerd: LogLevel | undefined;
  for (const d of directives(filter)) {
    if (d.includes('[')) continue;
    const eq = d.indexOf('=');
    if (eq < 0) {
      // A bare word is either the default level or a target with every level enabled.
      if (TRACING_LEVELS[d.toLowerCase()] !== undefined) bare = levelOf(d);
      else if (d.startsWith('linkerd')) linkerd = 'trace';
      continue;
    }
    if (!d.slice(0, eq).trim().startsWith('linkerd')) continue;
    const l = levelOf(d.slice(eq + 1).trim());
    if (linkerd === undefined || VERBOSITY[l] > VERBOSITY[linkerd]) linkerd = l;
  }
  return linkerd ?? bare ?? 'warn';
}

function parseLogFormat(text: string, name: string): LogOptions['logFormat'] {
  const t = text.toLowerCase();
  if (t === 'plain' || t === 'json') return t;
  throw bad(name, text, 'plain or json');
}

const DNS_NAME = /^(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

/** localhost (with or without the root dot) or a loopback IP. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost' || h === 'localhost.') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  return h === '::1';
}

/** "NAME:PORT", "IP:PORT" or "[IPv6]:PORT", port 1-65535: a control-plane address. */
export function parseHostPort(text: string, name: string): Addr {
  const expected = 'HOST:PORT such as linkerd-dst-headless.linkerd.svc.cluster.local.:8086, 127.0.0.1:8086 or [::1]:8086';
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]]+):(\d{1,5})$/.exec(text);
  if (m === null) throw bad(name, text, expected);
  const host = m[1] ?? '';
  const port = Number(m[2]);
  const family = isIP(host);
  const hostOk = text.startsWith('[') ? family === 6 : family === 4 || DNS_NAME.test(host);
  if (!hostOk || port < 1 || port > 65535) throw bad(name, text, expected);
  return { host, port };
}

function parseDnsName(text: string, name: string): string {
  if (!DNS_NAME.test(text) || text.endsWith('.')) throw bad(name, text, 'a DNS name such as default.emojivoto.serviceaccount.identity.linkerd.cluster.local');
  return text.toLowerCase();
}

function parseTrustAnchors(text: string, name: string): string {
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  const expected = 'one or more PEM certificates (-----BEGIN CERTIFICATE-----)';
  if (blocks.length === 0) throw bad(name, text.length > 40 ? `${text.slice(0, 40)}…` : text, expected);
  for (const b of blocks) {
    try {
      new X509Certificate(b);
    } catch (err) {
      throw bad(name, `${b.slice(0, 40)}…`, expected, err);
    }
  }
  return `${blocks.join('\n')}\n`;
}

/** …_SVC_ADDR and …_SVC_NAME: plaintext on loopback, otherwise TLS expecting the name, which is then required. */
function parseControlAddr(env: NodeJS.ProcessEnv, addrVar: string, nameVar: string): ControlAddr | undefined {
  const text = get(env, addrVar);
  if (text === undefined) return undefined;
  const addr = parseHostPort(text, addrVar);
  const loopback = isLoopbackHost(addr.host);
  const nameText = get(env, nameVar);
  if (nameText === undefined && !loopback) {
    throw new BpfmeshError(ErrorCodes.BAD_ENV, `${nameVar} is required when ${addrVar} ("${text}") is not on loopback: TLS to the control plane expects that identity`);
  }
  return { addr, name: nameText === undefined ? undefined : parseDnsName(nameText, nameVar), loopback };
}

function parseIdentity(env: NodeJS.ProcessEnv): IdentityConfig | undefined {
  const E = PROXY_ENV;
  // Linkerd's injector writes LINKERD2_PROXY_IDENTITY_DISABLED=disabled; any value turns identity off.
  if (get(env, E.identityDisabled) !== undefined) return undefined;
  const required = [E.identityLocalName, E.identityTokenFile, E.identityTrustAnchors, E.identitySvcAddr] as const;
  const given = required.filter((n) => get(env, n) !== undefined);
  if (given.length === 0) return undefined;
  const missing = required.filter((n) => get(env, n) === undefined);
  if (missing.length > 0) {
    throw new BpfmeshError(ErrorCodes.BAD_ENV, `${missing.join(', ')} must be set with ${given.join(', ')} (or set ${E.identityDisabled})`);
  }
  const need = (n: string): string => get(env, n) ?? '';
  const svc = parseControlAddr(env, E.identitySvcAddr, E.identitySvcName);
  if (svc === undefined) return undefined; // not reached: the address is one of the required variables
  return {
    svc,
    localName: parseDnsName(need(E.identityLocalName), E.identityLocalName),
    tokenFile: need(E.identityTokenFile),
    trustAnchorsPem: parseTrustAnchors(need(E.identityTrustAnchors), E.identityTrustAnchors),
    dir: get(env, E.identityDir),
  };
}

function parsePorts(text: string, name: string): PortRange[] {
  try {
    return parsePortList(text, name);
  } catch (err) {
    throw bad(name, text, 'a comma-separated list of ports (1-65535) and ranges such as "25,3306,8000-8100"', err);
  }
}

/** Whether `port` is one of the configured opaque ports. */
export function isOpaquePort(config: Pick<ProxyConfig, 'opaquePorts'>, port: number): boolean {
  return config.opaquePorts.some((r) => port >= r.lo && port <= r.hi);
}

export function formatOpaquePorts(config: Pick<ProxyConfig, 'opaquePorts'>): string {
  return config.opaquePorts.map(formatPortRange).join(',');
}

/** Reads the proxy's configuration; throws BPFMESH_E_BAD_ENV naming the variable and the expected form. */
export function parseProxyEnv(env: NodeJS.ProcessEnv): ProxyConfig {
  const addr = (name: string, dflt: string): Addr => parseListenAddr(get(env, name) ?? dflt, name);
  const duration = (name: string, dfltMs: number): number => {
    const v = get(env, name);
    return v === undefined ? dfltMs : parseDuration(v, name);
  };
  const E = PROXY_ENV;

  // Unlike the other settings, an empty port list means "no opaque ports".
  const opaqueText = env[E.opaquePorts] ?? DEFAULT_OPAQUE_PORTS;
  const logFilter = get(env, E.log) ?? DEFAULT_LOG_FILTER;
  const shutdownEnabled = get(env, E.shutdownEndpointEnabled);
  const logFormat = get(env, E.logFormat);

  const count = (name: string, dflt: number): number => {
    const v = get(env, name);
    return v === undefined ? dflt : parseCount(v, name);
  };
  const L = DEFAULT_LIMITS;

  return {
    limits: {
      requestHeadTimeoutMs: duration(E.requestHeadTimeout, L.requestHeadTimeoutMs),
      requestBodyTimeoutMs: duration(E.requestBodyTimeout, L.requestBodyTimeoutMs),
      responseHeadTimeoutMs: duration(E.responseHeadTimeout, L.responseHeadTimeoutMs),
      httpIdleTimeoutMs: duration(E.httpIdleTimeout, L.httpIdleTimeoutMs),
      tcpIdleTimeoutMs: duration(E.tcpIdleTimeout, L.tcpIdleTimeoutMs),
      maxConnections: count(E.maxConnections, L.maxConnections),
      maxAuthorities: count(E.maxAuthorities, L.maxAuthorities),
    },
    inbound: {
      listenAddr: addr(E.inboundListenAddr, '0.0.0.0:4143'),
      connectTimeoutMs: duration(E.inboundConnectTimeout, 300),
      detectTimeoutMs: duration(E.inboundDetectTimeout, 10_000),
      httpFailfastTimeoutMs: duration(E.inboundHttpFailfastTimeout, 1000),
      http1PoolIdleTimeoutMs: duration(E.inboundHttp1PoolIdleTimeout, 3000),
    },
    outbound: {
      listenAddr: addr(E.outboundListenAddr, '127.0.0.1:4140'),
      connectTimeoutMs: duration(E.outboundConnectTimeout, 1000),
      detectTimeoutMs: duration(E.outboundDetectTimeout, 10_000),
      httpFailfastTimeoutMs: duration(E.outboundHttpFailfastTimeout, 3000),
      tcpFailfastTimeoutMs: duration(E.outboundTcpFailfastTimeout, 3000),
      http1PoolIdleTimeoutMs: duration(E.outboundHttp1PoolIdleTimeout, 3000),
    },
    adminListenAddr: addr(E.adminListenAddr, '127.0.0.1:4191'),
    controlListenAddr: addr(E.controlListenAddr, '0.0.0.0:4190'),
    opaquePorts: parsePorts(opaqueText, E.opaquePorts),
    shutdownGracePeriodMs: duration(E.shutdownGracePeriod, 120_000),
    shutdownEndpointEnabled: shutdownEnabled === undefined ? false : parseBool(shutdownEnabled, E.shutdownEndpointEnabled),
    log: {
      logLevel: logLevelOfFilter(logFilter),
      logFormat: logFormat === undefined ? 'plain' : parseLogFormat(logFormat, E.logFormat),
    },
    logFilter,
    destination: (() => {
      const svc = parseControlAddr(env, E.destinationSvcAddr, E.destinationSvcName);
      return svc === undefined ? undefined : { ...svc, contextToken: get(env, E.destinationContext) ?? '' };
    })(),
    identity: parseIdentity(env),
    policy: parsePolicyEnv(env, parseControlAddr),
    tap: parseTapEnv(env),
  };
}
