// `bpfmesh check`: every line, in the order an operator reads them.
import { ErrorCodes, errorCode } from '../errors.js';
import { native } from '../bpf/native.js';
import { cgroup2Mount, isBpffs } from '../intercept/mounts.js';
import { checkBpffs, checkCapabilities, checkCgroup2 } from './host.js';
import { checkBtf, checkFeatures, checkKernelVersion, checkSockmapStall } from './kernel.js';
import { checkForeignPrograms } from './coexist.js';
import { checkProxyInitLeftovers } from './iptables.js';
import { checkPinLayout } from './layout-marker.js';
import { checkAgentReady, checkInstalled } from './installed.js';
import { sockpathChecks } from './sockpath.js';
import { fail, type CheckLine, type CheckOptions, type CheckReport } from './types.js';

export async function runChecks(o: CheckOptions): Promise<CheckReport> {
  const lines: CheckLine[] = [checkKernelVersion(), checkBtf()];
  const cgroup2 = checkCgroup2(o.cgroupRoot);
  const bpffs = checkBpffs(o.bpffs, o.bpffsExplicit, o.pre);
  const bpffsMounted = isBpffs(o.bpffs);
  const caps = checkCapabilities(o.node);
  lines.push(cgroup2, bpffs, caps);
  let addon = true;
  try {
    native();
  } catch (err) {
    addon = false;
    lines.push(fail('addon', 'native addon', (err as Error).message, errorCode(err) ?? ErrorCodes.ADDON_MISSING, 'build it: npm install'));
  }
  if (addon && caps.ok) {
    lines.push(...checkFeatures(), checkSockmapStall(), ...sockpathChecks(o));
    if (cgroup2.ok) lines.push(...checkForeignPrograms(o.cgroupRoot ?? cgroup2Mount(), o.cgroup, o.netns));
  } else if (addon) {
    lines.push(fail('probes', 'kernel feature probes', 'not run: they need the capabilities above', ErrorCodes.PERMISSION, 'run as root'));
  }
  if (o.netns !== undefined) lines.push(checkProxyInitLeftovers(o.netns));
  if (addon && bpffsMounted) lines.push(...checkPinLayout(o.bpffs));
  if (!o.pre) {
    if (addon && bpffsMounted && cgroup2.ok) lines.push(...checkInstalled(o.bpffs, o.cgroupRoot ?? cgroup2Mount(), o.node, o.podName));
    if (o.agentReady !== undefined) lines.push(await checkAgentReady(o.agentReady));
  }
  return { ok: lines.every((l) => l.ok), mode: o.pre ? 'pre' : 'installed', lines };
}

export function formatReport(r: CheckReport): string {
  const out = r.lines.map((l) => {
    const head = `${l.ok ? '✓' : '✗'} ${l.title}: ${l.detail}`;
    return l.ok ? head : `${head}\n    ${l.code}: ${l.fix ?? ''}`;
  });
  const failed = r.lines.filter((l) => !l.ok).length;
  out.push(failed === 0 ? `all ${r.lines.length} checks passed (${r.mode === 'pre' ? 'before install' : 'installed state included'})` : `${failed} of ${r.lines.length} checks failed`);
  return out.join('\n') + '\n';
}
