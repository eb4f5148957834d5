// What `init` would do, as data: printed by --simulate and logged by init.
import type { InitOptions } from '../config/pod-flags.js';
import { formatCidr } from '../util/ip.js';
import { formatPortRange } from '../util/ports.js';
import { LINKS, SOCKMAP_PROGRAMS, MapNames } from './layout.js';
import type { Pod } from './pod.js';
import { inboundIgnored } from './rules.js';

export interface InstallPlan {
  pod: string;
  pinDir: string;
  cgroup: string;
  netns: string;
  hooks: Array<{ program: string; attachTo: string; pin: string; what: string }>;
  maps: string[];
  settings: {
    incomingProxyPort: number;
    outgoingProxyPort: number;
    adminPort: number;
    controlPort: number;
    proxyUid: number;
    proxyGid: number | null;
    mode: 'fail-closed' | 'fail-open';
    socketPath: boolean;
  };
  inboundPortsIgnored: string[];
  outboundPortsIgnored: string[];
  inboundPortsRedirected: string[] | 'all';
  subnetsIgnored: string[];
  ignoredFlags: string[];
}

export function planInstall(pod: Pod, o: InitOptions): InstallPlan {
  return {
    pod: pod.name,
    pinDir: pod.pinDir,
    cgroup: pod.cgroupPath,
    netns: pod.netnsPath,
    hooks: [
      ...LINKS.map((l) => ({
        program: l.program,
        attachTo: l.target === 'cgroup' ? `cgroup ${pod.cgroupPath}` : `netns ${pod.netnsPath}`,
        pin: `${pod.pinDir}/${l.pin}`,
        what: l.what,
      })),
      ...SOCKMAP_PROGRAMS.map((p) => ({ program: p.program, attachTo: `sockhash ${MapNames.sockPairs}`, pin: '(lives with the map)', what: p.what })),
    ],
    maps: Object.values(MapNames).map((m) => `${pod.pinDir}/${m}`),
    settings: {
      incomingProxyPort: o.incomingProxyPort,
      outgoingProxyPort: o.outgoingProxyPort,
      adminPort: o.adminPort,
      controlPort: o.controlPort,
      proxyUid: o.proxyUid,
      proxyGid: o.proxyGid ?? null,
      mode: o.failOpen ? 'fail-open' : 'fail-closed',
      socketPath: o.sockpath,
    },
    inboundPortsIgnored: inboundIgnored(o).map(formatPortRange),
    outboundPortsIgnored: o.outboundPortsToIgnore.map(formatPortRange),
    inboundPortsRedirected: o.portsToRedirect.length === 0 ? 'all' : o.portsToRedirect.map(formatPortRange),
    subnetsIgnored: o.subnetsToIgnore.map(formatCidr),
    ignoredFlags: o.ignoredFlags,
  };
}

export function formatPlan(p: InstallPlan): string {
  const list = (xs: string[]): string => (xs.length === 0 ? '-' : xs.join(', '));
  const s = p.settings;
  const lines = [
    `bpfmesh init --simulate: nothing was changed. It would install, for pod ${p.pod}:`,
    `  pin folder        ${p.pinDir}`,
    ...p.hooks.map((h) => `  attach            ${h.program.padEnd(16)} to ${h.attachTo}  [${h.what}]`),
    `  maps              ${p.maps.length} maps pinned in the pin folder`,
    `  proxy ports       inbound ${s.incomingProxyPort}, outbound ${s.outgoingProxyPort}, admin ${s.adminPort}, control ${s.controlPort}`,
    `  proxy identity    uid ${s.proxyUid}, gid ${s.proxyGid ?? '-'}`,
    `  mode              ${s.mode}, same-host socket path ${s.socketPath ? 'on' : 'off'}`,
    `  inbound ignored   ${list(p.inboundPortsIgnored)}`,
    `  inbound steered   ${p.inboundPortsRedirected === 'all' ? 'all other ports' : list(p.inboundPortsRedirected)}`,
    `  outbound ignored  ${list(p.outboundPortsIgnored)} (and loopback, and the proxy's uid${s.proxyGid === null ? '' : '/gid'})`,
    `  subnets ignored   ${list(p.subnetsIgnored)}`,
  ];
  if (p.ignoredFlags.length > 0) lines.push(`  not applicable    --${p.ignoredFlags.join(', --')} (iptables settings; ignored)`);
  return lines.join('\n') + '\n';
}
