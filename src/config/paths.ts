// Where bpfmesh finds its BPF objects and keeps its pins. The only reader of
// BPFMESH_* path variables.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const REPO_ROOT = resolve(__dirname, '..', '..', '..');

/** Directory of the built BPF objects; BPFMESH_BPF_DIR overrides (tests, packaging). */
export function bpfObjectDir(): string {
  return process.env['BPFMESH_BPF_DIR'] ?? join(REPO_ROOT, 'build', 'bpf');
}

/** Path of one BPF object; BPFMESH_OBJECT_<NAME> (e.g. BPFMESH_OBJECT_INTERCEPT) overrides one. */
export function bpfObjectPath(name: 'intercept' | 'inbound' | 'probe' | 'upgrade'): string {
  return process.env[`BPFMESH_OBJECT_${name.toUpperCase()}`] ?? join(bpfObjectDir(), `${name}.bpf.o`);
}

export const DEFAULT_BPFFS = '/sys/fs/bpf';
export const PIN_DIR_NAME = 'bpfmesh';

export function addonBuilt(): boolean {
  return existsSync(join(REPO_ROOT, 'build', 'Release', 'bpfmesh.node'));
}
