// The network configuration on stdin: the CNI fields, linkerd-cni's
// `linkerd` and `kubernetes` blocks (so bpfmesh drops into a linkerd-cni
// install) and bpfmesh's own optional `bpfmesh` block. Unknown keys are
// ignored, as CNI plugins do. Validation happens here; bad values are CNI
// code 7 with a message that names the key.
import { ErrorCodes } from '../errors.js';
import { DEFAULT_BPFFS } from '../config/paths.js';
import { LOG_LEVELS, parseHighWater, type LogFormat, type LogLevel } from '../config/pod-flags.js';
import type { PodPolicy } from '../intercept/rules.js';
import { parseCidr, type Cidr } from '../util/ip.js';
import { parsePort, parsePortList, type PortRange } from '../util/ports.js';
import { cniError, isSupportedVersion, SUPPORTED_VERSIONS } from './spec.js';

export interface KubeSettings {
  apiRoot: string | undefined;
  kubeconfig: string | undefined;
}

export interface BpfmeshSettings {
  /** Where the node-wide programs attach; undefined = the cgroup2 mount root. */
  cgroupRoot: string | undefined;
  bpffs: string;
  bpffsExplicit: boolean;
  logFile: string | undefined;
  logFormat: LogFormat;
}

export interface CniNetConf {
  cniVersion: string;
  name: string;
  type: string;
  /** The previous plugin's result, passed through unchanged. */
  prevResult: Record<string, unknown> | undefined;
  logLevel: LogLevel;
  simulate: boolean;
  /** The linkerd block's settings (before a pod's annotations). */
  policy: PodPolicy;
  kubernetes: KubeSettings | undefined;
  bpfmesh: BpfmeshSettings;
  /** GC (1.1.0): the attachments the runtime still has. */
  validAttachments: Array<{ containerId: string; ifname: string }> | undefined;
}

// linkerd2-proxy-init's defaults (docs/linkerd-compat.md), which `bpfmesh init` uses too.
export const DEFAULT_POLICY: PodPolicy = {
  incomingProxyPort: 4143,
  outgoingProxyPort: 4140,
  adminPort: 4191,
  controlPort: 4190,
  proxyUid: 2102,
  proxyGid: undefined,
  inboundPortsToIgnore: [],
  outboundPortsToIgnore: [],
  portsToRedirect: [],
  subnetsToIgnore: [],
  failOpen: false,
  sockpath: true,
  sockpathHighWater: 2 << 20,
};

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** stdin -> a JSON object, or CNI code 6. */
export function decodeConf(text: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw cniError(ErrorCodes.CNI_DECODE, `the network configuration on stdin is not JSON (${(err as Error).message}); check the conflist the runtime reads`);
  }
  if (!isObject(v)) throw cniError(ErrorCodes.CNI_DECODE, 'the network configuration on stdin must be a JSON object');
  return v;
}

/** The cniVersion, checked against what we speak (CNI code 1); undefined when absent. */
export function confVersion(conf: Json): string | undefined {
  const v = conf['cniVersion'];
  if (v === undefined) return undefined;
  if (!isSupportedVersion(v)) {
    throw cniError(ErrorCodes.CNI_VERSION, `cniVersion ${JSON.stringify(v)} is not supported; bpfmesh-cni speaks ${SUPPORTED_VERSIONS.join(', ')}: set one of them in the conflist`);
  }
  return v;
}

const bad = (key: string, why: string): Error => cniError(ErrorCodes.CNI_CONFIG, `${key}: ${why}`);

function optString(block: Json, key: string, where: string): string | undefined {
  const v = block[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw bad(`${where}${key}`, `expected a string, got ${JSON.stringify(v)}`);
  return v;
}

function optBool(block: Json, key: string, where: string, dflt: boolean): boolean {
  const v = block[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') throw bad(`${where}${key}`, `expected true or false, got ${JSON.stringify(v)}`);
  return v;
}

function optBlock(conf: Json, key: string): Json | undefined {
  const v = conf[key];
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw bad(key, 'expected an object');
  return v;
}

/** A port as linkerd-cni writes it (an int), or a numeric string. */
function port(block: Json, key: string, dflt: number): number {
  const v = block[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'number' && typeof v !== 'string') throw cniError(ErrorCodes.BAD_PORT, `linkerd.${key}: ${JSON.stringify(v)} is not a port (1-65535)`);
  return parsePort(String(v), `linkerd.${key}`);
}

/** A uid/gid: an int >= 0, or -1 (linkerd's "not set"). */
export function parseId(v: unknown, key: string): number | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const text = typeof v === 'number' || typeof v === 'string' ? String(v).trim() : '';
  if (!/^(-1|\d{1,10})$/.test(text) || Number(text) > 0xfffffffe) {
    throw bad(key, `${JSON.stringify(v)} is not a uid/gid (0-4294967294, or -1 for none)`);
  }
  return Number(text) < 0 ? undefined : Number(text);
}

/** linkerd-cni's port lists: ["4191","8000-8100"] (strings) or [80, 443] (ints); a comma string is taken too. */
export function portList(v: unknown, key: string): PortRange[] {
  if (v === undefined || v === null) return [];
  const items = Array.isArray(v) ? v : [v];
  for (const item of items) {
    if (typeof item !== 'string' && typeof item !== 'number') throw cniError(ErrorCodes.BAD_PORT, `${key}: ${JSON.stringify(item)} is not a port or a range such as "8000-8100"`);
  }
  return parsePortList(items.map(String).join(','), key);
}

export function subnetList(v: unknown, key: string): Cidr[] {
  if (v === undefined || v === null) return [];
  const items = Array.isArray(v) ? v : [v];
  const out: Cidr[] = [];
  for (const item of items) {
    if (typeof item !== 'string') throw cniError(ErrorCodes.BAD_CIDR, `${key}: ${JSON.stringify(item)} is not a CIDR such as "10.0.0.0/8"`);
    for (const part of item.split(',')) {
      if (part.trim() === '') continue;
      const cidr = parseCidr(part.trim());
      if (cidr === null) throw cniError(ErrorCodes.BAD_CIDR, `${key}: "${part.trim()}" is not a CIDR such as 10.0.0.0/8 or fd00::/8`);
      out.push(cidr);
    }
  }
  return out;
}

function logLevel(conf: Json): LogLevel {
  const v = optString(conf, 'log_level', '');
  if (v === undefined) return 'info';
  const level = v.toLowerCase() === 'warning' ? 'warn' : v.toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw bad('log_level', `"${v}" is not one of ${LOG_LEVELS.join(', ')}`);
  return level as LogLevel;
}

function policyOf(linkerd: Json, own: Json): PodPolicy {
  const uid = parseId(linkerd['proxy-uid'], 'linkerd.proxy-uid');
  return {
    ...DEFAULT_POLICY,
    incomingProxyPort: port(linkerd, 'incoming-proxy-port', DEFAULT_POLICY.incomingProxyPort),
    outgoingProxyPort: port(linkerd, 'outgoing-proxy-port', DEFAULT_POLICY.outgoingProxyPort),
    proxyUid: uid ?? DEFAULT_POLICY.proxyUid,
    proxyGid: parseId(linkerd['proxy-gid'], 'linkerd.proxy-gid'),
    portsToRedirect: portList(linkerd['ports-to-redirect'], 'linkerd.ports-to-redirect'),
    inboundPortsToIgnore: portList(linkerd['inbound-ports-to-ignore'], 'linkerd.inbound-ports-to-ignore'),
    outboundPortsToIgnore: portList(linkerd['outbound-ports-to-ignore'], 'linkerd.outbound-ports-to-ignore'),
    subnetsToIgnore: subnetList(linkerd['subnets-to-ignore'], 'linkerd.subnets-to-ignore'),
    failOpen: optBool(own, 'fail_open', 'bpfmesh.', DEFAULT_POLICY.failOpen),
    sockpath: optBool(own, 'sockpath', 'bpfmesh.', DEFAULT_POLICY.sockpath),
    sockpathHighWater: highWater(own),
  };
}

function highWater(own: Json): number {
  const v = own['sockpath_high_water'];
  if (v === undefined) return DEFAULT_POLICY.sockpathHighWater;
  if (typeof v !== 'number' && typeof v !== 'string') throw bad('bpfmesh.sockpath_high_water', `${JSON.stringify(v)} is not a size such as 4194304 or "4Mi"`);
  try {
    return parseHighWater(v, 'bpfmesh.sockpath_high_water');
  } catch (err) {
    throw bad('bpfmesh.sockpath_high_water', (err as Error).message);
  }
}

function bpfmeshOf(own: Json): BpfmeshSettings {
  const bpffs = optString(own, 'bpffs', 'bpfmesh.');
  const logFormat = optString(own, 'log_format', 'bpfmesh.') ?? 'plain';
  if (logFormat !== 'plain' && logFormat !== 'json') throw bad('bpfmesh.log_format', `"${logFormat}" is not one of plain, json`);
  return {
    cgroupRoot: optString(own, 'cgroup_root', 'bpfmesh.')?.replace(/\/+$/, ''),
    bpffs: bpffs ?? DEFAULT_BPFFS,
    bpffsExplicit: bpffs !== undefined,
    logFile: optString(own, 'log_file', 'bpfmesh.'),
    logFormat,
  };
}

function validAttachmentsOf(conf: Json): CniNetConf['validAttachments'] {
  const v = conf['cni.dev/valid-attachments'];
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw bad('cni.dev/valid-attachments', 'expected a list of {containerID, ifname}');
  return v.map((a: unknown) => {
    if (!isObject(a) || typeof a['containerID'] !== 'string') throw bad('cni.dev/valid-attachments', `${JSON.stringify(a)} has no containerID`);
    return { containerId: a['containerID'], ifname: typeof a['ifname'] === 'string' ? a['ifname'] : '' };
  });
}

/** The whole configuration of an ADD, DEL, CHECK or GC. */
export function parseNetConf(conf: Json): CniNetConf {
  const cniVersion = confVersion(conf);
  if (cniVersion === undefined) throw bad('cniVersion', `missing; set one of ${SUPPORTED_VERSIONS.join(', ')} in the conflist`);
  const prev = conf['prevResult'];
  if (prev !== undefined && prev !== null && !isObject(prev)) throw bad('prevResult', 'expected the previous plugin\'s result object');
  const linkerd = optBlock(conf, 'linkerd') ?? {};
  const own = optBlock(conf, 'bpfmesh') ?? {};
  const k8s = optBlock(conf, 'kubernetes');
  return {
    cniVersion,
    name: optString(conf, 'name', '') ?? '',
    type: optString(conf, 'type', '') ?? '',
    prevResult: isObject(prev) ? prev : undefined,
    logLevel: logLevel(conf),
    simulate: optBool(linkerd, 'simulate', 'linkerd.', false),
    policy: policyOf(linkerd, own),
    kubernetes: k8s === undefined ? undefined : { apiRoot: optString(k8s, 'k8s_api_root', 'kubernetes.'), kubeconfig: optString(k8s, 'kubeconfig', 'kubernetes.') },
    bpfmesh: bpfmeshOf(own),
    validAttachments: validAttachmentsOf(conf),
  };
}
