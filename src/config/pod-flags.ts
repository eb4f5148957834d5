// Flags of `bpfmesh init`, `reset` and `inspect`: the linkerd2-proxy-init
// flags plus bpfmesh's own. Parsing and validation happen here and nowhere
// else; the rest of the code gets typed options.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { parseCidr, type Cidr } from '../util/ip.js';
import { parsePort, parsePortList, type PortRange } from '../util/ports.js';
import { DEFAULT_BPFFS } from './paths.js';

export type LogFormat = 'plain' | 'json';
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LogOptions {
  logFormat: LogFormat;
  logLevel: LogLevel;
}

/** Which pod: its cgroup, its network namespace and the name of its pin folder. */
export interface PodTarget {
  /** cgroup v2 directory; undefined = the caller's own cgroup. */
  cgroup: string | undefined;
  /** Network namespace file (/run/netns/NAME, /proc/PID/ns/net); undefined = the caller's own. */
  netns: string | undefined;
  /** Name of the pin folder under <bpffs>/bpfmesh/; undefined = derived from the netns. */
  podName: string | undefined;
  bpffs: string;
  /** true when --bpffs was given, so a missing bpffs is an error instead of mounted. */
  bpffsExplicit: boolean;
}

export interface InitOptions extends LogOptions, PodTarget {
  incomingProxyPort: number;
  outgoingProxyPort: number;
  adminPort: number;
  controlPort: number;
  proxyUid: number;
  proxyGid: number | undefined;
  inboundPortsToIgnore: PortRange[];
  outboundPortsToIgnore: PortRange[];
  portsToRedirect: PortRange[];
  subnetsToIgnore: Cidr[];
  simulate: boolean;
  failOpen: boolean;
  sockpath: boolean;
  /** Socket path high mark: bytes queued at the peer above which writes take loopback TCP. */
  sockpathHighWater: number;
  /** proxy-init flags accepted for drop-in use that mean nothing with BPF. */
  ignoredFlags: string[];
}

export interface ResetOptions extends LogOptions, PodTarget {
  /** Remove the node-wide install (CNI / bpfmesh node) and every pod enrolled in it. */
  node: boolean;
}

export interface InspectOptions extends LogOptions {
  bpffs: string;
  podName: string | undefined;
  json: boolean;
}

const LOG_FLAGS = {
  'log-format': { type: 'string', default: 'plain' },
  'log-level': { type: 'string', default: 'info' },
} as const;

const TARGET_FLAGS = {
  cgroup: { type: 'string' },
  netns: { type: 'string' },
  'pod-name': { type: 'string' },
  bpffs: { type: 'string' },
} as const;

// proxy-init flags that configure iptables itself; accepted so an existing
// injector's arguments work unchanged, and reported as ignored.
const IPTABLES_ONLY_FLAGS = {
  'firewall-bin-path': { type: 'string' },
  'firewall-save-bin-path': { type: 'string' },
  ipv6: { type: 'string' },
  'timeout-close-wait-secs': { type: 'string' },
} as const;

const INIT_FLAGS = {
  ...LOG_FLAGS,
  ...TARGET_FLAGS,
  ...IPTABLES_ONLY_FLAGS,
  'incoming-proxy-port': { type: 'string', default: '4143' },
  'outgoing-proxy-port': { type: 'string', default: '4140' },
  'admin-port': { type: 'string', default: '4191' },
  'control-port': { type: 'string', default: '4190' },
  'proxy-uid': { type: 'string', default: '2102' },
  'proxy-gid': { type: 'string' },
  'inbound-ports-to-ignore': { type: 'string', multiple: true },
  'outbound-ports-to-ignore': { type: 'string', multiple: true },
  'ports-to-redirect': { type: 'string', multiple: true },
  'subnets-to-ignore': { type: 'string', multiple: true },
  simulate: { type: 'boolean', default: false },
  'fail-open': { type: 'boolean', default: false },
  'no-sockpath': { type: 'boolean', default: false },
  'sockpath-high-water': { type: 'string', default: '2Mi' },
} as const;

function parse<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T, command: string) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new BpfmeshError(ErrorCodes.BAD_FLAG, `bpfmesh ${command}: ${(err as Error).message}; see "bpfmesh ${command} --help"`);
  }
}

function parseId(text: string, flag: string): number {
  // proxy-init takes -1 for "not set".
  if (text.trim() === '-1') return -1;
  if (!/^\d{1,10}$/.test(text.trim()) || Number(text) > 0xfffffffe) {
    throw new BpfmeshError(ErrorCodes.BAD_FLAG, `${flag}: "${text}" is not a uid/gid (0-4294967294, or -1 for none)`);
  }
  return Number(text);
}

function parseLog(values: { 'log-format'?: string; 'log-level'?: string }): LogOptions {
  const logFormat = values['log-format'] ?? 'plain';
  if (logFormat !== 'plain' && logFormat !== 'json') {
    throw new BpfmeshError(ErrorCodes.BAD_FLAG, `--log-format: "${logFormat}" is not one of plain, json`);
  }
  const logLevel = (values['log-level'] ?? 'info').toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new BpfmeshError(ErrorCodes.BAD_FLAG, `--log-level: "${logLevel}" is not one of ${LOG_LEVELS.join(', ')}`);
  }
  return { logFormat, logLevel: logLevel as LogLevel };
}

function parseTarget(values: { cgroup?: string; netns?: string; 'pod-name'?: string; bpffs?: string }): PodTarget {
  const podName = values['pod-name'];
  if (podName !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(podName)) {
    throw new BpfmeshError(ErrorCodes.BAD_FLAG, `--pod-name: "${podName}" must be 1-63 of [A-Za-z0-9_.-], starting alphanumeric`);
  }
  return {
    cgroup: values.cgroup,
    netns: values.netns,
    podName,
    bpffs: values.bpffs ?? DEFAULT_BPFFS,
    bpffsExplicit: values.bpffs !== undefined,
  };
}

const SOCKPATH_HIGH_MIN = 64 << 10; // BPFMESH_SOCKPATH_HIGH_MIN
const SOCKPATH_HIGH_MAX = 1 << 30;
const SIZE_UNITS: Record<string, number> = { '': 1, K: 1024, Ki: 1024, M: 1 << 20, Mi: 1 << 20, G: 1 << 30, Gi: 1 << 30 };

/** The socket path's high mark: bytes, or a number with a Ki, Mi or Gi (K, M, G) suffix; 64Ki to 1Gi. */
export function parseHighWater(text: string | number, flag: string): number {
  const m = /^\s*(\d{1,10})\s*(Ki|Mi|Gi|K|M|G)?\s*$/.exec(String(text));
  const n = m ? Number(m[1]) * SIZE_UNITS[m[2] ?? '']! : NaN;
  if (!(n >= SOCKPATH_HIGH_MIN && n <= SOCKPATH_HIGH_MAX)) {
    throw new BpfmeshError(ErrorCodes.BAD_FLAG, `${flag}: "${text}" is not a size from 64Ki to 1Gi (bytes, or with a Ki, Mi or Gi suffix, e.g. 4Mi)`);
  }
  return n;
}

const joinList = (v: string[] | undefined): string => (v ?? []).join(',');

export function parseInitFlags(argv: string[]): InitOptions {
  const v = parse(argv, INIT_FLAGS, 'init');
  const subnetsToIgnore: Cidr[] = [];
  for (const item of joinList(v['subnets-to-ignore']).split(',')) {
    if (item.trim() === '') continue;
    const cidr = parseCidr(item.trim());
    if (cidr === null) throw new BpfmeshError(ErrorCodes.BAD_CIDR, `--subnets-to-ignore: "${item}" is not a CIDR such as 10.0.0.0/8 or fd00::/8`);
    subnetsToIgnore.push(cidr);
  }
  const uid = parseId(v['proxy-uid'], '--proxy-uid');
  if (uid < 0) throw new BpfmeshError(ErrorCodes.BAD_FLAG, '--proxy-uid: the proxy needs a uid; outbound steering exempts it');
  const gid = v['proxy-gid'] === undefined ? -1 : parseId(v['proxy-gid'], '--proxy-gid');
  return {
    ...parseLog(v),
    ...parseTarget(v),
    incomingProxyPort: parsePort(v['incoming-proxy-port'], '--incoming-proxy-port'),
    outgoingProxyPort: parsePort(v['outgoing-proxy-port'], '--outgoing-proxy-port'),
    adminPort: parsePort(v['admin-port'], '--admin-port'),
    controlPort: parsePort(v['control-port'], '--control-port'),
    proxyUid: uid,
    proxyGid: gid < 0 ? undefined : gid,
    inboundPortsToIgnore: parsePortList(joinList(v['inbound-ports-to-ignore']), '--inbound-ports-to-ignore'),
    outboundPortsToIgnore: parsePortList(joinList(v['outbound-ports-to-ignore']), '--outbound-ports-to-ignore'),
    portsToRedirect: parsePortList(joinList(v['ports-to-redirect']), '--ports-to-redirect'),
    subnetsToIgnore,
    simulate: v.simulate,
    failOpen: v['fail-open'],
    sockpath: !v['no-sockpath'],
    sockpathHighWater: parseHighWater(v['sockpath-high-water'], '--sockpath-high-water'),
    ignoredFlags: Object.keys(IPTABLES_ONLY_FLAGS).filter((f) => (v as Record<string, unknown>)[f] !== undefined),
  };
}

export function parseResetFlags(argv: string[]): ResetOptions {
  const v = parse(argv, { ...LOG_FLAGS, ...TARGET_FLAGS, node: { type: 'boolean', default: false } }, 'reset');
  return { ...parseLog(v), ...parseTarget(v), node: v.node };
}

export function parseInspectFlags(argv: string[]): InspectOptions {
  const v = parse(argv, { ...LOG_FLAGS, 'pod-name': { type: 'string' }, bpffs: { type: 'string' }, json: { type: 'boolean', default: false } }, 'inspect');
  return { ...parseLog(v), bpffs: v.bpffs ?? DEFAULT_BPFFS, podName: v['pod-name'], json: v.json };
}

export interface ProxyFlags {
  /** Names the pod whose pinned counters the proxy exports; undefined = find its own. */
  podName: string | undefined;
  netns: string | undefined;
  cgroup: string | undefined;
  bpffs: string;
}

export function parseProxyFlags(argv: string[]): ProxyFlags {
  const v = parse(argv, TARGET_FLAGS, 'proxy');
  const t = parseTarget(v);
  return { podName: t.podName, netns: t.netns, cgroup: t.cgroup, bpffs: t.bpffs };
}
