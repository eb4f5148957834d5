// Kernel facts, each asked of the running kernel: version (reported, and the
// supported floor), BTF, and every program type, attach type, map type and
// helper the install uses, through libbpf's probes (native/probe.cc).
import { existsSync } from 'node:fs';
import { release } from 'node:os';
import { ErrorCodes, errorCode } from '../errors.js';
import { native } from '../bpf/native.js';
import { fail, pass, type CheckLine } from './types.js';
import { requirementsOfObjects } from './requirements.js';

/** The oldest kernel the test runs cover (README "Kernels"). */
export const SUPPORTED_FLOOR: readonly [number, number] = [6, 1];

export function kernelVersion(text = release()): [number, number, number] | null {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(text);
  return m === null ? null : [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
}

export function checkKernelVersion(text = release()): CheckLine {
  const v = kernelVersion(text);
  const title = 'kernel version';
  if (v === null) return fail('kernel', title, `cannot read a version from "${text}"`, ErrorCodes.KERNEL_FEATURE, 'run on Linux 6.1 or newer');
  const [maj, min] = SUPPORTED_FLOOR;
  if (v[0] > maj || (v[0] === maj && v[1] >= min)) return pass('kernel', title, `${text} (6.1 LTS and newer are tested)`);
  return fail('kernel', title, `${text} is older than 6.1, the oldest kernel bpfmesh is tested on`, ErrorCodes.KERNEL_FEATURE, 'upgrade the node to Linux 6.1 or newer');
}

export function checkBtf(path = '/sys/kernel/btf/vmlinux'): CheckLine {
  if (existsSync(path)) return pass('btf', 'kernel BTF', `${path} is there`);
  return fail('btf', 'kernel BTF', `${path} is missing`, ErrorCodes.KERNEL_FEATURE, 'use a kernel built with CONFIG_DEBUG_INFO_BTF=y (the BPF objects are built against it)');
}

/** One probe as a line; an error from the probe itself is a failed line too, never a crash. */
function probeLine(id: string, title: string, probe: () => boolean, missing: string, fix: string): CheckLine {
  try {
    return probe() ? pass(id, title, 'supported') : fail(id, title, missing, ErrorCodes.KERNEL_FEATURE, fix);
  } catch (err) {
    const code = errorCode(err) ?? ErrorCodes.SYSCALL;
    return fail(id, title, `the probe failed: ${(err as Error).message}`, code, code === ErrorCodes.PERMISSION ? 'run as root (see the capabilities line)' : fix);
  }
}

const UPGRADE = 'use a kernel with CONFIG_BPF_SYSCALL, CONFIG_CGROUP_BPF, CONFIG_BPF_STREAM_PARSER and CONFIG_NET (Linux 6.1+)';

/** Program, attach and map types and helpers of the built objects, probed. */
export function checkFeatures(): CheckLine[] {
  let req: ReturnType<typeof requirementsOfObjects>;
  try {
    req = requirementsOfObjects();
  } catch (err) {
    return [fail('objects', 'BPF objects', (err as Error).message, errorCode(err) ?? ErrorCodes.OBJECT_MISSING, 'build them: npm install')];
  }
  if ('missing' in req) return [fail('objects', 'BPF objects', `${req.missing} is missing`, ErrorCodes.OBJECT_MISSING, 'build them: npm install (needs clang, bpftool, libbpf-dev)')];
  const n = native();
  const lines: CheckLine[] = [];
  for (const t of req.progTypes) {
    lines.push(probeLine(`prog_type.${t}`, `program type ${t}`, () => n.probeProgType(t), 'the kernel does not load this program type', UPGRADE));
  }
  for (const [t, a] of req.attachTypes) {
    lines.push(probeLine(`attach_type.${a}`, `attach type ${a} (${t})`, () => n.probeAttachType(t, a), 'the kernel refuses this attach type for this program type', UPGRADE));
  }
  for (const m of req.mapTypes) {
    lines.push(probeLine(`map_type.${m}`, `map type ${m}`, () => n.probeMapType(m), 'the kernel does not create this map type', UPGRADE));
  }
  for (const [t, h, at] of req.helpers) {
    lines.push(probeLine(`helper.${t}.${h}`, `helper bpf_${h} in ${t}`, () => n.probeHelper(t, h, at === '' ? undefined : at), 'the verifier does not offer this helper to this program type', UPGRADE));
  }
  return lines;
}

/**
 * Kernel commit 929e30f93125 (in 6.6.128+, 6.12.75+, 6.18.14+): a socket in
 * a sockmap without an SK_SKB verdict reports FIONREAD 0 and misses epoll
 * wake-ups. Measured, not looked up: a loopback socket in a private
 * SOCKHASH, with and without a pass-through verdict (bpf/intercept.bpf.c
 * mesh_sk_skb is bpfmesh's guard).
 */
export function checkSockmapStall(): CheckLine {
  const id = 'sockmap_fionread';
  const title = 'sockmap FIONREAD (kernel commit 929e30f93125)';
  try {
    const bare = native().sockmapFionread(false);
    if (bare.peeked !== bare.written) {
      return fail(id, title, `the probe's ${bare.written} bytes did not arrive within 2 s (peeked ${bare.peeked})`, ErrorCodes.KERNEL_FEATURE, 'run again; if it persists, use --no-sockpath');
    }
    if (bare.fionread === bare.written) return pass(id, title, `not affected: FIONREAD reads ${bare.fionread} of ${bare.written} bytes without a verdict; the guard is not needed here`);
    const guarded = native().sockmapFionread(true);
    if (guarded.fionread === guarded.written) {
      return pass(id, title, `affected (FIONREAD reads ${bare.fionread} of ${bare.written} bytes without a verdict); bpfmesh's pass-through sk_skb verdict covers it (${guarded.fionread} of ${guarded.written} with it)`);
    }
    return fail(id, title, `FIONREAD reads ${bare.fionread} without and ${guarded.fionread} with a pass-through verdict, of ${bare.written} bytes`, ErrorCodes.KERNEL_FEATURE,
      'the socket path would stall readers on this kernel: install with --no-sockpath (CNI: "sockpath": false), or use a kernel with commit 04af4efde58a');
  } catch (err) {
    return fail(id, title, `the probe failed: ${(err as Error).message}`, errorCode(err) ?? ErrorCodes.SYSCALL, 'run as root; if it persists, use --no-sockpath');
  }
}
