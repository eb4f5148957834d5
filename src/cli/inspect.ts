// bpfmesh inspect: per pod, what is attached, pinned and in the maps.
import { parseInspectFlags } from '../config/pod-flags.js';
import { inspectAll, type PodState } from '../admin/inspect.js';
import { pinRoot } from '../intercept/pod.js';

export const usage = `bpfmesh inspect [--json] [--pod-name NAME] [--bpffs DIR]   show every pod's interception
`;

const table = (rows: string[][]): string => {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => '  ' + r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
};

export function formatPod(p: PodState): string {
  const s = p.settings;
  const out = [`pod ${p.pod}  (${p.pinDir}, netns cookie ${p.netnsCookie ?? '?'})`];
  out.push(table([['HOOK', 'PROGRAM', 'PROG ID', 'LINK ID', 'ATTACHED TO'], ...p.hooks.map((h) => [h.attachType, h.program, String(h.progId), String(h.linkId), h.target])]));
  if (s !== null) {
    out.push(`  settings     inbound ${s.incomingPort}, outbound ${s.outgoingPort}, admin ${s.adminPort}, control ${s.controlPort}; proxy uid ${s.proxyUid}` +
      `${s.proxyGid === 0xffffffff ? '' : `, gid ${s.proxyGid}`}; ${s.mode}; socket path ${s.socketPath ? `on (high mark ${s.sockpathHigh || 2 << 20} B)` : s.socketPathRefused ? 'off (kernel cannot bound it)' : 'off'}`);
  }
  const list = (xs: string[]): string => (xs.length ? xs.join(', ') : '-');
  out.push(`  inbound      ignored ${list(p.inboundPortsIgnored)}; steered ${p.inboundPortsRedirected.length ? list(p.inboundPortsRedirected) : 'all other ports'}`);
  out.push(`  outbound     ignored ${list(p.outboundPortsIgnored)}`);
  out.push(`  subnets      ${list(p.subnetsIgnored.map((x) => `${x.cidr} (${x.direction})`))}`);
  out.push(`  own IPs      ${list(p.localAddresses)} (dialled by the pod itself: straight to its app)`);
  out.push(`  listeners    ${p.listeners.map((l) => `${l.family} ${l.registered ? 'registered' : 'none'}`).join(', ')}`);
  out.push(`  socket path  ${p.socketPathSockets} sockets in the sockhash; ${p.pendingRedirects} redirects not yet established`);
  out.push(`  connections  ${p.originalDestinations.length} with an original destination`);
  if (p.originalDestinations.length > 0) {
    out.push(table([['APP', 'PROXY', 'ORIGINAL DST'], ...p.originalDestinations.slice(0, 20).map((d) => [d.app, d.proxy, d.originalDst])]));
  }
  const counters = Object.entries(p.counters).filter(([, v]) => v !== '0');
  out.push(`  counters     ${counters.length ? counters.map(([k, v]) => `${k}=${v}`).join(' ') : 'all zero'}`);
  if (p.observe !== null) out.push(`  observe      ${p.observe.on ? 'on (an observer runs)' : 'off'}; ${p.observe.dropped} events lost to a full ring (${p.observe.ringBytes >> 10} KiB)`);
  for (const problem of p.problems) out.push(`  PROBLEM      ${problem}`);
  out.push(`  pins         ${p.pins.join(' ')}`);
  return out.join('\n');
}

export async function run(argv: string[]): Promise<number> {
  const opts = parseInspectFlags(argv);
  const pods = inspectAll(pinRoot(opts.bpffs), opts.podName);
  if (opts.json) {
    process.stdout.write(JSON.stringify({ pods }, null, 2) + '\n');
    return 0;
  }
  if (pods.length === 0) {
    process.stdout.write(`no pods are intercepted (nothing under ${pinRoot(opts.bpffs)})\n`);
    return 0;
  }
  process.stdout.write(pods.map(formatPod).join('\n\n') + '\n\nSee also: bpftool cgroup tree; bpftool link show; bpftool map dump pinned <pin folder>/v<layout>/mesh_counters\n');
  return 0;
}
