// The inbound-policy part of the proxy's environment (Linkerd's names):
// where the policy API is, which workload we are, the default policy, the
// cluster networks, and the ports to watch from the start.
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { parseCidr, type Cidr } from '../util/ip.js';
import type { ControlAddr } from './proxy-env.js';

export const POLICY_ENV = {
  svcAddr: 'LINKERD2_PROXY_POLICY_SVC_ADDR',
  svcName: 'LINKERD2_PROXY_POLICY_SVC_NAME',
  workload: 'LINKERD2_PROXY_POLICY_WORKLOAD',
  defaultPolicy: 'LINKERD2_PROXY_INBOUND_DEFAULT_POLICY',
  clusterNetworks: 'LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS',
  inboundPorts: 'LINKERD2_PROXY_INBOUND_PORTS',
} as const;

export const DEFAULT_POLICIES = ['all-unauthenticated', 'all-authenticated', 'cluster-unauthenticated', 'cluster-authenticated', 'deny', 'audit'] as const;
export type DefaultPolicyName = (typeof DEFAULT_POLICIES)[number];

/** Linkerd's default cluster networks (the private ranges, CGNAT, IPv6 ULA). */
export const DEFAULT_CLUSTER_NETWORKS = '10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8';

export interface PolicyConfig {
  /** Undefined without LINKERD2_PROXY_POLICY_SVC_ADDR: the default policy applies to every port. */
  svc: ControlAddr | undefined;
  /** PortSpec.workload, verbatim ({"ns":"…","pod":"…"} or "ns:pod"). */
  workload: string;
  defaultPolicy: DefaultPolicyName;
  clusterNetworks: Cidr[];
  /** Ports watched from the start (others on their first connection). */
  ports: number[];
}

const bad = (name: string, value: string, expected: string): BpfmeshError => new BpfmeshError(ErrorCodes.BAD_ENV, `${name}: "${value}" is not valid; expected ${expected}`);

function get(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

export function parseCidrList(text: string, name: string): Cidr[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => {
      const c = parseCidr(s);
      if (c === null) throw bad(name, text, 'a comma-separated list of CIDRs such as "10.0.0.0/8,fd00::/8"');
      return c;
    });
}

/** `parseSvc` is proxy-env's parser of …_SVC_ADDR / …_SVC_NAME (plaintext only on loopback). */
export function parsePolicyEnv(env: NodeJS.ProcessEnv, parseSvc: (env: NodeJS.ProcessEnv, addrVar: string, nameVar: string) => ControlAddr | undefined): PolicyConfig {
  const E = POLICY_ENV;
  const svc = parseSvc(env, E.svcAddr, E.svcName);
  const workload = get(env, E.workload) ?? '';
  if (svc !== undefined && workload === '') {
    throw new BpfmeshError(ErrorCodes.BAD_ENV, `${E.workload} is required with ${E.svcAddr}: the policy API answers per workload ({"ns":"<ns>","pod":"<pod>"})`);
  }
  const dp = (get(env, E.defaultPolicy) ?? 'all-unauthenticated').toLowerCase();
  if (!(DEFAULT_POLICIES as readonly string[]).includes(dp)) throw bad(E.defaultPolicy, dp, DEFAULT_POLICIES.join(', '));
  const portsText = get(env, E.inboundPorts) ?? '';
  const ports = portsText
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '')
    .map((p) => {
      const n = Number(p);
      if (!/^\d{1,5}$/.test(p) || n < 1 || n > 65535) throw bad(E.inboundPorts, portsText, 'a comma-separated list of ports such as "8080,9090"');
      return n;
    });
  return {
    svc,
    workload,
    defaultPolicy: dp as DefaultPolicyName,
    clusterNetworks: parseCidrList(get(env, E.clusterNetworks) ?? DEFAULT_CLUSTER_NETWORKS, E.clusterNetworks),
    ports: [...new Set(ports)],
  };
}
