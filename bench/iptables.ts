// The nat rules linkerd2-proxy-init writes, for IPv4 and IPv6, applied the
// way it applies them (save, one iptables call per rule, save): the
// baseline bpfmesh is measured against.
export interface ProxyInitRules {
  incomingPort: number;
  outgoingPort: number;
  proxyUid: number;
  inboundPortsToIgnore: number[];
}

export function proxyInitCommands(r: ProxyInitRules): string[][] {
  const cmds: string[][] = [];
  for (const bin of ['iptables', 'ip6tables']) {
    const nat = (...args: string[]): void => void cmds.push([bin, '-t', 'nat', ...args]);
    cmds.push([`${bin}-save`, '-t', 'nat']);
    nat('-N', 'PROXY_INIT_REDIRECT');
    nat('-A', 'PROXY_INIT_REDIRECT', '-p', 'tcp', '--match', 'multiport', '--dports', r.inboundPortsToIgnore.join(','), '-j', 'RETURN', '-m', 'comment', '--comment', 'proxy-init/ignore-port');
    nat('-A', 'PROXY_INIT_REDIRECT', '-p', 'tcp', '-j', 'REDIRECT', '--to-port', String(r.incomingPort), '-m', 'comment', '--comment', 'proxy-init/redirect-all-incoming-to-proxy-port');
    nat('-A', 'PREROUTING', '-j', 'PROXY_INIT_REDIRECT', '-m', 'comment', '--comment', 'proxy-init/install-proxy-init-prerouting');
    nat('-N', 'PROXY_INIT_OUTPUT');
    nat('-A', 'PROXY_INIT_OUTPUT', '-m', 'owner', '--uid-owner', String(r.proxyUid), '-j', 'RETURN', '-m', 'comment', '--comment', 'proxy-init/ignore-proxy-user-id');
    nat('-A', 'PROXY_INIT_OUTPUT', '-o', 'lo', '-j', 'RETURN', '-m', 'comment', '--comment', 'proxy-init/ignore-loopback');
    nat('-A', 'PROXY_INIT_OUTPUT', '-p', 'tcp', '-j', 'REDIRECT', '--to-port', String(r.outgoingPort), '-m', 'comment', '--comment', 'proxy-init/redirect-all-outgoing-to-proxy-port');
    nat('-A', 'OUTPUT', '-j', 'PROXY_INIT_OUTPUT', '-m', 'comment', '--comment', 'proxy-init/install-proxy-init-output');
    cmds.push([`${bin}-save`, '-t', 'nat']);
  }
  return cmds;
}

export const DEFAULT_RULES: ProxyInitRules = { incomingPort: 4143, outgoingPort: 4140, proxyUid: 2102, inboundPortsToIgnore: [4190, 4191] };
