// Kernel tests need root. Outside CI they skip with the reason; under
// CI=true a missing capability is a failure, never a silent skip.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../../src/config/paths.js';

export function kernelSkipReason(): string | false {
  const reasons: string[] = [];
  if (process.getuid?.() !== 0) reasons.push('needs root (BPF programs, network namespaces, cgroups)');
  if (!existsSync(join(REPO_ROOT, 'build', 'Release', 'bpfmesh.node'))) reasons.push('native addon not built (npm install)');
  if (!existsSync(join(REPO_ROOT, 'build', 'bpf', 'intercept.bpf.o'))) reasons.push('BPF objects not built (npm install)');
  if (reasons.length === 0) return false;
  const reason = reasons.join('; ');
  if (process.env['CI'] === 'true') throw new Error(`kernel tests cannot run under CI=true: ${reason}`);
  return reason;
}
