// The kernel's own memory accounting of a pod's TCP sockets, from `ss -tmnH`
// run in the pod's netns: skmem r (rmem_alloc), rb (rcvbuf), t (wmem_alloc),
// tb (sndbuf), f (forward_alloc), w (wmem_queued), o, bl, d.
import type { Lab, LabPod } from '../../src/lab/lab.js';

export interface SockMem {
  local: string;
  peer: string;
  mem: Record<string, number>;
}

export async function skmem(lab: Lab, pod: LabPod): Promise<SockMem[]> {
  const r = await lab.exec(pod, 'ss', ['-tmnH'], {});
  if (r.code !== 0) throw new Error(`ss -tmnH: ${r.stderr}`);
  const out: SockMem[] = [];
  const lines = r.stdout.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const f = lines[i]!.trim().split(/\s+/);
    if (f.length < 5 || f[0] === '' || lines[i]!.startsWith('\t')) continue;
    // ss prints skmem on the same line, or on the next when the line wraps.
    const m = /skmem:\(([^)]*)\)/.exec(`${lines[i]!} ${lines[i + 1] ?? ''}`);
    if (!m) continue;
    const mem: Record<string, number> = {};
    for (const kv of m[1]!.split(',')) {
      const k = /^([a-z_]+?)(\d+)$/.exec(kv);
      if (k) mem[k[1]!] = Number(k[2]);
    }
    out.push({ local: f[3]!, peer: f[4]!, mem });
  }
  return out;
}

/** Bytes a socket holds in its queues: received and not read (r) plus queued to send (w). */
export const heldBytes = (s: SockMem): number => (s.mem['r'] ?? 0) + (s.mem['w'] ?? 0);
