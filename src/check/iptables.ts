// Leftovers of linkerd2-proxy-init in a pod's netns: its nat chains
// (PROXY_INIT_REDIRECT, PROXY_INIT_OUTPUT) would redirect connections before
// or beside bpfmesh. Read with every iptables-save variant present on the
// host, run inside the netns through nsenter.
import { spawnSync } from 'node:child_process';
import { ErrorCodes } from '../errors.js';
import { fail, pass, type CheckLine } from './types.js';

export const SAVE_TOOLS = ['iptables-save', 'iptables-nft-save', 'iptables-legacy-save', 'ip6tables-save', 'ip6tables-nft-save', 'ip6tables-legacy-save'];

function available(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
}

/** PROXY_INIT_* chain names declared in iptables-save output (":NAME POLICY [p:b]"). */
export function proxyInitChains(saveOutput: string): string[] {
  return [...saveOutput.matchAll(/^:(PROXY_INIT_[A-Za-z0-9_]+)\s/gm)].map((m) => m[1]!);
}

export function checkProxyInitLeftovers(netns: string, tools = SAVE_TOOLS.filter(available)): CheckLine {
  const id = 'proxy_init_rules';
  const title = `proxy-init iptables rules in ${netns}`;
  if (tools.length === 0) return pass(id, title, `not looked for: no iptables-save on this host (${SAVE_TOOLS.slice(0, 2).join(', ')})`);
  const found = new Map<string, string[]>();
  const errors: string[] = [];
  for (const tool of tools) {
    const r = spawnSync('nsenter', [`--net=${netns}`, '--', tool, '-t', 'nat'], { encoding: 'utf8', timeout: 10_000 });
    if (r.status !== 0) {
      errors.push(`${tool}: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim().split('\n')[0]}`);
      continue;
    }
    const chains = proxyInitChains(r.stdout);
    if (chains.length > 0) found.set(tool, chains);
  }
  if (found.size > 0) {
    const what = [...found].map(([tool, chains]) => `${tool}: ${chains.join(', ')}`).join('; ');
    const tool = [...found.keys()][0]!;
    return fail(id, title, what, ErrorCodes.IPTABLES_LEFTOVER,
      `proxy-init ran in this pod, and its rules would steer traffic beside bpfmesh: remove them (nsenter --net=${netns} ${tool} -t nat | grep -v PROXY_INIT_ | nsenter --net=${netns} ${tool.replace('-save', '-restore')} -T nat) or recreate the pod without linkerd-init`);
  }
  if (errors.length === tools.length) return fail(id, title, `could not read the rules: ${errors.join('; ')}`, ErrorCodes.SYSCALL, 'run as root with nsenter (util-linux) installed');
  return pass(id, title, `no PROXY_INIT_* chains (${tools.join(', ')})`);
}
