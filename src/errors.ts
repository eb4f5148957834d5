// Errors with stable codes. Every code is listed in README.md ("Error codes");
// the CLI prints `code: message` and exits non-zero.

export const ErrorCodes = {
  BAD_FLAG: 'BPFMESH_E_BAD_FLAG',
  BAD_PORT: 'BPFMESH_E_BAD_PORT',
  BAD_PORT_RANGE: 'BPFMESH_E_BAD_PORT_RANGE',
  BAD_CIDR: 'BPFMESH_E_BAD_CIDR',
  NO_CGROUP: 'BPFMESH_E_NO_CGROUP',
  NO_NETNS: 'BPFMESH_E_NO_NETNS',
  NO_BPFFS: 'BPFMESH_E_NO_BPFFS',
  PERMISSION: 'BPFMESH_E_PERMISSION',
  VERIFIER: 'BPFMESH_E_VERIFIER',
  KERNEL_FEATURE: 'BPFMESH_E_KERNEL_FEATURE',
  NOT_INSTALLED: 'BPFMESH_E_NOT_INSTALLED',
  INCOMPATIBLE_PINS: 'BPFMESH_E_INCOMPATIBLE_PINS',
  CODEC_MISMATCH: 'BPFMESH_E_CODEC_MISMATCH',
  ADDON_MISSING: 'BPFMESH_E_ADDON_MISSING',
  OBJECT_MISSING: 'BPFMESH_E_OBJECT_MISSING',
  NOT_FOUND: 'BPFMESH_E_NOT_FOUND',
  EXISTS: 'BPFMESH_E_EXISTS',
  BAD_ARGUMENT: 'BPFMESH_E_BAD_ARGUMENT',
  CLOSED: 'BPFMESH_E_CLOSED',
  STATE: 'BPFMESH_E_STATE',
  SYSCALL: 'BPFMESH_E_SYSCALL',
  NOT_ROOT: 'BPFMESH_E_NOT_ROOT',
  BAD_ENV: 'BPFMESH_E_BAD_ENV',
  CONNECT: 'BPFMESH_E_CONNECT',
  CONNECT_TIMEOUT: 'BPFMESH_E_CONNECT_TIMEOUT',
  LISTEN: 'BPFMESH_E_LISTEN',
  UNAVAILABLE: 'BPFMESH_E_UNAVAILABLE',
  FAILFAST: 'BPFMESH_E_FAILFAST',
  HTTP_MALFORMED: 'BPFMESH_E_HTTP_MALFORMED',
  HTTP_HEADERS_TOO_LARGE: 'BPFMESH_E_HTTP_HEADERS_TOO_LARGE',
  /** mTLS (src/tls/): the peer's chain does not verify against the trust anchors (untrusted, expired, ...). */
  TLS_VERIFY: 'BPFMESH_E_TLS_VERIFY',
  /** mTLS: the peer's certificate verifies but its SANs do not contain the expected identity (502). */
  IDENTITY_MISMATCH: 'BPFMESH_E_IDENTITY_MISMATCH',
  /** mTLS: the handshake failed for another reason (protocol version, alert from the peer, reset). */
  TLS_HANDSHAKE: 'BPFMESH_E_TLS_HANDSHAKE',
  /** mTLS: the handshake did not finish in time. */
  TLS_TIMEOUT: 'BPFMESH_E_TLS_TIMEOUT',
  /** mTLS: no local identity certificate yet (the proxy is not ready). */
  TLS_NOT_READY: 'BPFMESH_E_TLS_NOT_READY',
  /** mTLS: identity material or trust anchors that cannot be used (bad PEM, key/cert mismatch, not for our name, not from our anchors, expired). */
  TLS_MATERIAL: 'BPFMESH_E_TLS_MATERIAL',
  /** A control-plane address off loopback needs TLS credentials (from src/tls/) that were not given. */
  CONTROL_TLS_UNSUPPORTED: 'BPFMESH_E_CONTROL_TLS_UNSUPPORTED',
  /** TLS to the control plane: its certificate does not chain to the trust anchors (another CA, expired). */
  CONTROL_TLS_VERIFY: 'BPFMESH_E_CONTROL_TLS_VERIFY',
  /** TLS to the control plane: its certificate verifies but is not for …_SVC_NAME. */
  CONTROL_IDENTITY_MISMATCH: 'BPFMESH_E_CONTROL_IDENTITY_MISMATCH',
  /** TLS to the control plane failed otherwise: it speaks plaintext (allowed on loopback only), refused our client certificate, reset. */
  CONTROL_TLS_HANDSHAKE: 'BPFMESH_E_CONTROL_TLS_HANDSHAKE',
  /** The control plane refused or failed a request (Certify, Get), or its answer was unusable. */
  CONTROL: 'BPFMESH_E_CONTROL',
  /** `bpfmesh control-plane`: a bad mesh.yaml, or an issuer that cannot be read. */
  CONTROL_PLANE_CONFIG: 'BPFMESH_E_CONTROL_PLANE_CONFIG',
  /** `bpfmesh cni`: a CNI_* variable is missing or bad (CNI error code 4). */
  CNI_ENV: 'BPFMESH_E_CNI_ENV',
  /** `bpfmesh cni`: stdin is not a JSON network configuration (CNI error code 6). */
  CNI_DECODE: 'BPFMESH_E_CNI_DECODE',
  /** `bpfmesh cni`: a network configuration field is missing or bad (CNI error code 7). */
  CNI_CONFIG: 'BPFMESH_E_CNI_CONFIG',
  /** `bpfmesh cni`: a cniVersion this plugin does not speak (CNI error code 1). */
  CNI_VERSION: 'BPFMESH_E_CNI_VERSION',
  /** Kubernetes access: no in-cluster service account and no usable kubeconfig (missing file, no current context, unreadable credentials). */
  KUBE_CONFIG: 'BPFMESH_E_KUBE_CONFIG',
  /** The Kubernetes API answered an error status, an unparsable body, or could not be reached. */
  KUBE_API: 'BPFMESH_E_KUBE_API',
  /** The Kubernetes API no longer has the requested resourceVersion (410 Gone, or a watch ERROR event): list again. */
  KUBE_EXPIRED: 'BPFMESH_E_KUBE_EXPIRED',
  /** A kubeconfig exec credential plugin could not run, failed, timed out or printed no usable ExecCredential. */
  KUBE_EXEC: 'BPFMESH_E_KUBE_EXEC',
  /** `bpfmesh node`: a pod's config.linkerd.io/* annotation cannot be parsed; that pod is left unmeshed. */
  BAD_ANNOTATION: 'BPFMESH_E_BAD_ANNOTATION',
  /** Node-wide install: another bpfmesh holds the node lock for too long. */
  BUSY: 'BPFMESH_E_BUSY',
  /** A pod's interception differs from its configuration (CNI CHECK). */
  MISMATCH: 'BPFMESH_E_MISMATCH',
  /** `bpfmesh cni-install`: the host's CNI config is missing or unusable, the plugin entry (--config) is bad, or the install to copy is incomplete. */
  CNI_INSTALL: 'BPFMESH_E_CNI_INSTALL',
  /** `bpfmesh check`: another BPF program sits on a hook where it would rewrite the same connections (connect, getsockopt, sk_lookup). */
  FOREIGN_PROGRAM: 'BPFMESH_E_FOREIGN_PROGRAM',
  /** `bpfmesh check --netns`: linkerd2-proxy-init's PROXY_INIT_* iptables chains are still in the pod. */
  IPTABLES_LEFTOVER: 'BPFMESH_E_IPTABLES_LEFTOVER',
  /** `bpfmesh check --agent-ready`: the node agent has not reconciled its pods yet (or does not answer). */
  NOT_READY: 'BPFMESH_E_NOT_READY',
  /** The proxy holds BPFMESH_PROXY_MAX_CONNECTIONS client connections: a new one is closed at accept. */
  CONN_LIMIT: 'BPFMESH_E_CONN_LIMIT',
  /** Inbound policy: no authorization admits the client (HTTP 403, gRPC PERMISSION_DENIED, TCP closed). */
  FORBIDDEN: 'BPFMESH_E_FORBIDDEN',
  /** Inbound policy: the port's server has HTTP routes and none matches the request (404). */
  ROUTE_NOT_FOUND: 'BPFMESH_E_ROUTE_NOT_FOUND',
  /** Pins of a map layout this release does not know (made by a newer one): no upgrade in place from it. */
  UNKNOWN_LAYOUT: 'BPFMESH_E_UNKNOWN_LAYOUT',
  /** `bpfmesh tap`: the proxy refused the tapper's identity (UNAUTHENTICATED, PERMISSION_DENIED). */
  TAP_DENIED: 'BPFMESH_E_TAP_DENIED',
  /** `bpfmesh tap`: the proxy's tap server cannot be reached, its TLS fails, or it is at its stream cap. */
  TAP_UNAVAILABLE: 'BPFMESH_E_TAP_UNAVAILABLE',
  /** Tap: a match or limit the proxy cannot use (INVALID_ARGUMENT). */
  TAP_INVALID: 'BPFMESH_E_TAP_INVALID',
  /** A failure without a code of its own (a bug): the CLI prints the stack, the CNI plugin answers code 100. */
  INTERNAL: 'BPFMESH_E_INTERNAL',
  /** bin/bpfmesh.js, bin/bpfmesh-cni: dist/ (or the CNI bundle) is not built. Those launchers print it without this module. */
  NOT_BUILT: 'BPFMESH_E_NOT_BUILT',
  /**
   * Internal to the proxy: an upstream answered the HTTP/2 preface with something else (an HTTP/1 server's 400,
   * HTTP_1_1_REQUIRED) before its first SETTINGS. Nothing was processed; the request goes again over HTTP/1.
   * Never reaches a client.
   */
  PEER_NOT_H2: 'BPFMESH_E_PEER_NOT_H2',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class BpfmeshError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string | undefined;
  readonly verifierLog: string | undefined;

  constructor(
    code: string,
    message: string,
    extra: { errno?: number; syscall?: string; verifierLog?: string; cause?: unknown } = {},
  ) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = 'BpfmeshError';
    this.code = code;
    this.errno = extra.errno ?? 0;
    this.syscall = extra.syscall;
    this.verifierLog = extra.verifierLog;
  }
}

/** An error from the addon or from Node that carries a code. */
export function errorCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : undefined;
}

// Node's own errno codes, for errors that come from fs or child_process.
const NODE_CODES: Record<string, string> = {
  EACCES: ErrorCodes.PERMISSION,
  EPERM: ErrorCodes.PERMISSION,
  ENOENT: ErrorCodes.NOT_FOUND,
};

/** Wrap an addon error with context, keeping its code, errno, syscall and log. */
export function withContext(err: unknown, what: string): BpfmeshError {
  if (!(err instanceof Error)) return new BpfmeshError(ErrorCodes.SYSCALL, `${what}: ${String(err)}`);
  const e = err as Error & { code?: string; errno?: number; syscall?: string; verifierLog?: string };
  const code = typeof e.code === 'string' && e.code.startsWith('BPFMESH_E_') ? e.code : (NODE_CODES[e.code ?? ''] ?? ErrorCodes.SYSCALL);
  const hint = code === ErrorCodes.PERMISSION && !e.message.includes('root') ? '; run as root (or with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)' : '';
  return new BpfmeshError(code, `${what}: ${e.message}${hint}`, {
    errno: typeof e.errno === 'number' ? Math.abs(e.errno) : 0,
    ...(e.syscall !== undefined ? { syscall: e.syscall } : {}),
    ...(e.verifierLog !== undefined ? { verifierLog: e.verifierLog } : {}),
    cause: err,
  });
}
