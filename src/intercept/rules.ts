// The rows a pod's settings turn into, and reconciling them with what the
// maps hold: only the difference is written, so re-running init (or a
// control loop) is idempotent and cheap.
import * as c from '../bpf/codecs.js';
import type { TypedMap } from '../bpf/typed-map.js';
import type { InitOptions } from '../config/pod-flags.js';
import { formatCidr, parseIp, type Cidr } from '../util/ip.js';
import { rangeToPrefixes, type PortRange } from '../util/ports.js';
import type { PodMaps } from './layout.js';
import { withSockpathProbe } from './probe-sockpath.js';

export type PodPolicy = Pick<
  InitOptions,
  | 'incomingProxyPort'
  | 'outgoingProxyPort'
  | 'adminPort'
  | 'controlPort'
  | 'proxyUid'
  | 'proxyGid'
  | 'inboundPortsToIgnore'
  | 'outboundPortsToIgnore'
  | 'portsToRedirect'
  | 'subnetsToIgnore'
  | 'failOpen'
  | 'sockpath'
  | 'sockpathHighWater'
> & {
  /** Served by the node proxy (`bpfmesh node --proxy`): its marked sockets are exempt, as the proxy uid's are. */
  nodeProxy?: boolean;
};

export function settingsOf(p: PodPolicy): c.PodSettings {
  return {
    incomingPort: p.incomingProxyPort,
    outgoingPort: p.outgoingProxyPort,
    adminPort: p.adminPort,
    controlPort: p.controlPort,
    proxyUid: p.proxyUid,
    proxyGid: p.proxyGid ?? c.ID_UNSET,
    flags:
      (p.failOpen ? c.Flags.FAIL_OPEN : 0) |
      (p.sockpath ? c.Flags.SOCKPATH : 0) |
      (p.portsToRedirect.length > 0 ? c.Flags.INBOUND_ONLY_LISTED : 0) |
      (p.nodeProxy === true ? c.Flags.NODE_PROXY : 0),
    sockpathHigh: p.sockpathHighWater,
  };
}

/** Inbound ignore always holds the admin and control ports, as with proxy-init. */
export function inboundIgnored(p: PodPolicy): PortRange[] {
  return [{ lo: p.controlPort, hi: p.controlPort }, { lo: p.adminPort, hi: p.adminPort }, ...p.inboundPortsToIgnore];
}

export function portRulesOf(p: PodPolicy, netnsCookie: bigint): c.PortRuleKey[] {
  const rows: c.PortRuleKey[] = [];
  const add = (kind: c.RuleKindValue, ranges: PortRange[]): void => {
    for (const r of ranges) for (const pre of rangeToPrefixes(r.lo, r.hi)) rows.push({ kind, netnsCookie, port: pre.port, portBits: pre.bits });
  };
  add(c.RuleKind.INBOUND_IGNORE, inboundIgnored(p));
  add(c.RuleKind.OUTBOUND_IGNORE, p.outboundPortsToIgnore);
  add(c.RuleKind.INBOUND_REDIRECT, p.portsToRedirect);
  return rows;
}

/**
 * --subnets-to-ignore applies both ways: inbound by source (proxy-init's
 * meaning) and outbound by destination (what `config.linkerd.io/skip-subnets`
 * users want for traffic to, say, a node-local DNS or a DinD bridge).
 */
export function subnetRulesOf(subnets: Cidr[], netnsCookie: bigint): c.SubnetKey[] {
  const rows: c.SubnetKey[] = [];
  for (const s of subnets) {
    for (const kind of [c.RuleKind.INBOUND_IGNORE, c.RuleKind.OUTBOUND_IGNORE]) {
      rows.push({ kind, netnsCookie, family: s.family, addr: s.bytes, prefix: s.prefix });
    }
  }
  return rows;
}

/**
 * The pod's own addresses as /32 and /128 rows (kind LOCAL_ADDR): an app
 * dialling its own pod IP goes out lo, which proxy-init's `-o lo` rule
 * leaves alone, so it reaches its app directly. Loopback is passed anyway.
 */
export function localAddressRows(addresses: string[], netnsCookie: bigint): c.SubnetKey[] {
  const rows: c.SubnetKey[] = [];
  for (const text of addresses) {
    const ip = parseIp(text);
    if (ip === null) continue;
    if (ip.family === 4 ? ip.bytes[0] === 127 : ip.bytes.equals(LOOPBACK6)) continue;
    rows.push({ kind: c.RuleKind.LOCAL_ADDR, netnsCookie, family: ip.family, addr: ip.bytes, prefix: ip.family === 4 ? 32 : 128 });
  }
  return rows;
}
const LOOPBACK6 = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
const isLocalRow = (k: c.SubnetKey): boolean => k.kind === c.RuleKind.LOCAL_ADDR;

export interface ReconcileResult {
  added: number;
  removed: number;
  kept: number;
}

/** Makes the rows of one netns in `map` equal `desired` (value 1). */
export function reconcileRows<K extends { netnsCookie: bigint }>(
  map: TypedMap<K, number>,
  netnsCookie: bigint,
  desired: K[],
  id: (k: K) => string,
  only: (k: K) => boolean = () => true,
): ReconcileResult {
  const want = new Map(desired.map((k) => [id(k), k]));
  const have = [...map.keys()].filter((k) => k.netnsCookie === netnsCookie && only(k));
  let removed = 0;
  let kept = 0;
  for (const k of have) {
    if (want.delete(id(k))) kept++;
    else if (map.delete(k)) removed++;
  }
  for (const k of want.values()) map.set(k, 1);
  return { added: want.size, removed, kept };
}

const portId = (k: c.PortRuleKey): string => `${k.kind}/${k.port}/${k.portBits}`;
const subnetId = (k: c.SubnetKey): string => `${k.kind}/${formatCidr({ family: k.family, bytes: k.addr, prefix: k.prefix })}`;

export interface PolicyWriteResult {
  ports: ReconcileResult;
  subnets: ReconcileResult;
  /** The pod's own addresses; all kept when they were not given. */
  localAddresses: ReconcileResult;
  countersCreated: number;
}

/**
 * Writes a pod's policy into its maps: settings, port and subnet rules, the
 * pod's own addresses (left as they are when not given), counter rows.
 */
export function writePolicy(maps: PodMaps, netnsCookie: bigint, p: PodPolicy, localAddresses?: string[]): PolicyWriteResult {
  maps.settings.set(netnsCookie, withSockpathProbe(settingsOf(p)));
  const ports = reconcileRows(maps.portRules, netnsCookie, portRulesOf(p, netnsCookie), portId);
  const subnets = rulesBoth(maps, netnsCookie, subnetRulesOf(p.subnetsToIgnore, netnsCookie), (k) => !isLocalRow(k));
  const local =
    localAddresses === undefined
      ? { added: 0, removed: 0, kept: [...maps.subnets4.keys(), ...maps.subnets6.keys()].filter((k) => k.netnsCookie === netnsCookie && isLocalRow(k)).length }
      : rulesBoth(maps, netnsCookie, localAddressRows(localAddresses, netnsCookie), isLocalRow);
  let countersCreated = 0;
  for (let id = 0; id < c.COUNTER_NAMES.length; id++) {
    if (maps.counters.get({ netnsCookie, id }) === null) {
      maps.counters.set({ netnsCookie, id }, 0n);
      countersCreated++;
    }
  }
  return { ports, subnets, localAddresses: local, countersCreated };
}

function rulesBoth(maps: PodMaps, netnsCookie: bigint, rows: c.SubnetKey[], only?: (k: c.SubnetKey) => boolean): ReconcileResult {
  const r4 = reconcileRows(maps.subnets4, netnsCookie, rows.filter((r) => r.family === 4), subnetId, only);
  const r6 = reconcileRows(maps.subnets6, netnsCookie, rows.filter((r) => r.family === 6), subnetId, only);
  return { added: r4.added + r6.added, removed: r4.removed + r6.removed, kept: r4.kept + r6.kept };
}

/** Deletes every row of one netns from the pod's maps (before the maps go, or in shared maps). */
export function deletePodRows(maps: PodMaps, netnsCookie: bigint): void {
  maps.settings.delete(netnsCookie);
  reconcileRows(maps.portRules, netnsCookie, [], portId);
  rulesBoth(maps, netnsCookie, []);
  for (let id = 0; id < c.COUNTER_NAMES.length; id++) maps.counters.delete({ netnsCookie, id });
}
