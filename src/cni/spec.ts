// What the CNI specification fixes for a plugin: the versions it speaks,
// the well-known error codes, and the error object printed on stdout.
// bpfmesh's own failures get codes 100 and up (the spec reserves 0-99),
// one per BPFMESH_E_* code, so a runtime's log says which one it was.
import { BpfmeshError, ErrorCodes } from '../errors.js';

/** Oldest first; the last one is what VERSION answers with by default. */
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export const LATEST_VERSION = SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.length - 1]!;

export const isSupportedVersion = (v: unknown): v is string => typeof v === 'string' && (SUPPORTED_VERSIONS as readonly string[]).includes(v);

/** Numeric order of "a.b.c" versions; CHECK exists from 0.4.0, STATUS and GC from 1.1.0. */
export function versionAtLeast(v: string, min: string): boolean {
  const a = v.split('.').map(Number);
  const b = min.split('.').map(Number);
  for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  return true;
}

/** The spec's well-known codes (CNI spec, "Error" section). */
export const CniCode = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  CONTAINER_UNKNOWN: 3,
  INVALID_ENV: 4,
  IO_FAILURE: 5,
  DECODE: 6,
  INVALID_CONFIG: 7,
  TRY_AGAIN_LATER: 11,
  PLUGIN_NOT_AVAILABLE: 50,
} as const;

/** bpfmesh's codes from 100. Stable: append, never renumber (README "CNI plugin" lists them). */
export const BPFMESH_CNI_CODES: Record<string, number> = {
  [ErrorCodes.INTERNAL]: 100,
  [ErrorCodes.PERMISSION]: 101,
  [ErrorCodes.NO_BPFFS]: 102,
  [ErrorCodes.NO_CGROUP]: 103,
  [ErrorCodes.NO_NETNS]: 104,
  [ErrorCodes.VERIFIER]: 105,
  [ErrorCodes.KERNEL_FEATURE]: 106,
  [ErrorCodes.NOT_INSTALLED]: 107,
  [ErrorCodes.INCOMPATIBLE_PINS]: 108,
  [ErrorCodes.CODEC_MISMATCH]: 109,
  [ErrorCodes.ADDON_MISSING]: 110,
  [ErrorCodes.OBJECT_MISSING]: 111,
  [ErrorCodes.SYSCALL]: 112,
  [ErrorCodes.STATE]: 113,
  [ErrorCodes.NOT_FOUND]: 114,
  [ErrorCodes.EXISTS]: 115,
  [ErrorCodes.BAD_ARGUMENT]: 116,
  [ErrorCodes.MISMATCH]: 117,
  [ErrorCodes.KUBE_CONFIG]: 118,
  [ErrorCodes.UNKNOWN_LAYOUT]: 119,
};

/** Our codes that are the spec's well-known conditions. */
const SPEC_CODES: Record<string, number> = {
  [ErrorCodes.CNI_VERSION]: CniCode.INCOMPATIBLE_VERSION,
  [ErrorCodes.CNI_ENV]: CniCode.INVALID_ENV,
  [ErrorCodes.CNI_DECODE]: CniCode.DECODE,
  [ErrorCodes.CNI_CONFIG]: CniCode.INVALID_CONFIG,
  // Bad values in the linkerd block (or a pod's annotations) are invalid configuration.
  [ErrorCodes.BAD_FLAG]: CniCode.INVALID_CONFIG,
  [ErrorCodes.BAD_PORT]: CniCode.INVALID_CONFIG,
  [ErrorCodes.BAD_PORT_RANGE]: CniCode.INVALID_CONFIG,
  [ErrorCodes.BAD_CIDR]: CniCode.INVALID_CONFIG,
};

/** Codes of conditions that pass: the runtime should retry the sandbox (the API server is down, the node lock is busy, the node proxy could not serve the pod). */
const TRANSIENT = new Set<string>([ErrorCodes.KUBE_API, ErrorCodes.KUBE_EXPIRED, ErrorCodes.KUBE_EXEC, ErrorCodes.BUSY, ErrorCodes.UNAVAILABLE]);

export interface CniErrorJson {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

export function cniCodeOf(bpfmeshCode: string): number {
  return SPEC_CODES[bpfmeshCode] ?? (TRANSIENT.has(bpfmeshCode) ? CniCode.TRY_AGAIN_LATER : (BPFMESH_CNI_CODES[bpfmeshCode] ?? 100));
}

/** Any thrown value as the CNI error object: msg says what failed and what to do, details carry the BPFMESH_E code. */
export function toCniError(err: unknown, cniVersion: string): CniErrorJson {
  const e = (typeof err === 'object' && err !== null ? err : {}) as Partial<BpfmeshError> & { message?: unknown; cniCode?: unknown };
  const code = typeof e.code === 'string' && e.code.startsWith('BPFMESH_E_') ? e.code : ErrorCodes.INTERNAL;
  const text = typeof e.message === 'string' && e.message !== '' ? e.message : String(err);
  const msg = code === ErrorCodes.INTERNAL ? `bpfmesh-cni failed unexpectedly (${text}); see its log on the runtime's stderr and report it` : text;
  const details = [code, e.syscall !== undefined ? `syscall ${e.syscall}` : '', e.errno ? `errno ${e.errno}` : ''].filter(Boolean).join('; ');
  // A spec code chosen where the error was raised (STATUS's 50) wins over the mapping.
  const forced = e.cniCode;
  return { cniVersion: isSupportedVersion(cniVersion) ? cniVersion : LATEST_VERSION, code: typeof forced === 'number' ? forced : cniCodeOf(code), msg, details };
}

export const cniError = (code: string, message: string): BpfmeshError => new BpfmeshError(code, message);
