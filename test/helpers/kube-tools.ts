// kubectl (for `kubectl kustomize`) and helm, as scripts/install-kube-tools.sh
// installs them: $BPFMESH_KUBECTL / $BPFMESH_HELM, else the pinned ones in
// /opt/bpfmesh-kube/bin, else the first on PATH. Tests that need one skip
// with the reason without it, and fail under CI=true.
import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

export type KubeTool = 'kubectl' | 'helm';

const PINNED_DIR = process.env['BPFMESH_KUBE_TOOLS'] ?? '/opt/bpfmesh-kube';

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The tool's path, or undefined when there is none. */
export function findKubeTool(tool: KubeTool): string | undefined {
  const fromEnv = process.env[tool === 'kubectl' ? 'BPFMESH_KUBECTL' : 'BPFMESH_HELM'];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  const candidates = [join(PINNED_DIR, 'bin', tool), ...(process.env['PATH'] ?? '').split(delimiter).filter(Boolean).map((d) => join(d, tool))];
  return candidates.find(executable);
}

/** false when the tool is there; the reason to skip otherwise (an error under CI=true). */
export function kubeToolSkipReason(tool: KubeTool): string | false {
  if (findKubeTool(tool) !== undefined) return false;
  const reason = `${tool} not found (run scripts/install-kube-tools.sh, or set ${tool === 'kubectl' ? 'BPFMESH_KUBECTL' : 'BPFMESH_HELM'})`;
  if (process.env['CI'] === 'true') throw new Error(`manifest tests cannot run under CI=true: ${reason}`);
  return reason;
}

/** Run the tool; its stdout. Throws with its stderr when it fails. */
export function runKubeTool(tool: KubeTool, args: string[]): string {
  const path = findKubeTool(tool);
  if (path === undefined) throw new Error(`${tool} not found`);
  try {
    return execFileSync(path, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`${tool} ${args.join(' ')} failed: ${e.stderr ?? e.message}`);
  }
}
