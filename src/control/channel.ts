// How a control-plane client reaches its server, as Linkerd's proxy does:
// - on loopback: plaintext (the only place Linkerd allows it);
// - Identity off loopback: TLS, the server's chain verified against the
//   trust anchors and its DNS/URI SANs checked for …_SVC_NAME (also sent as
//   SNI); no client certificate, the proxy has none yet;
// - Destination and policy off loopback: the same, plus the workload
//   certificate as client certificate (mTLS). The client is built once the
//   first certificate is installed and built again on every rotation; the
//   callers move their open calls to the new client (openControlClient's
//   onChange) and only then is the old one closed.
// TLS 1.3 only, as between proxies. A failed connection is explained once
// per few seconds by a probe of our own (diagnose()): gRPC only says
// UNAVAILABLE, the probe says whether the chain, the name or TLS itself
// failed, with a BPFMESH_E_CONTROL_* code and what to do.
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, createSecureContext, type PeerCertificate, type SecureContext } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { Counter, type Registry } from 'prom-client';
import type { ControlAddr } from '../config/proxy-env.js';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { formatAddr } from '../util/addr.js';
import { nameMatches, parseSubjectAltName } from '../tls/certs.js';
import type { TlsStore } from '../tls/tls-store.js';
import type { Backoff } from './backoff.js';

/** TLS towards a control-plane service off loopback. */
export type ControlTls =
  /** Identity: server-authenticated TLS against the trust anchors. */
  | { kind: 'tls'; trustAnchorsPem: string }
  /** Destination, policy: mTLS with the workload certificate of the store (rebuilt on rotation). */
  | { kind: 'mtls'; store: TlsStore };

/** What a control client must offer: gRPC's generated clients, also with methods narrowed by Omit (which drops Client's private members). */
export type ClosableClient = Pick<grpc.Client, 'close'>;

export type ControlClientCtor<C> = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => C;

export interface ControlClientOptions<C extends ClosableClient> {
  svc: ControlAddr;
  /** identity, destination, policy: names the service in logs, metrics and hints (LINKERD2_PROXY_<SERVICE>_SVC_NAME). */
  service: string;
  ctor: ControlClientCtor<C>;
  /** Required off loopback; ignored on loopback (plaintext). */
  tls: ControlTls | undefined;
  /** The channel's reconnect schedule follows it. */
  backoff: Backoff;
  log: Logger;
  /** Where bpfmesh_control_* metrics go; one set per registry, shared by every service. */
  registry?: Registry;
  /** Bound on a diagnose() probe; default 5 s. */
  probeTimeoutMs?: number;
}

export interface ControlClient<C extends ClosableClient> {
  /** "host:port" dialled. */
  readonly target: string;
  /** TLS (or mTLS) rather than loopback plaintext. */
  readonly secure: boolean;
  /** The client to start calls on; undefined while mTLS waits for the first workload certificate. */
  readonly current: C | undefined;
  /** Called with each new client (the first one, then one per rotation); move open calls to it. Returns an unsubscribe function. */
  onChange(listener: (client: C) => void): () => void;
  /**
   * Why TLS to the service fails, as a coded error (CONTROL_TLS_VERIFY,
   * CONTROL_IDENTITY_MISMATCH, CONTROL_TLS_HANDSHAKE), or null when TLS is
   * fine or the server cannot be reached at all. Probes at most once per 5 s
   * (the last answer is reused meanwhile) and logs each new failure at warn.
   */
  diagnose(): Promise<BpfmeshError | null>;
  close(): void;
}

interface ChannelMetrics {
  builds: Counter<'service'>;
  tlsFailures: Counter<'service' | 'code'>;
}

const metricsByRegistry = new WeakMap<Registry, ChannelMetrics>();

function channelMetrics(registry: Registry | undefined): ChannelMetrics | undefined {
  if (registry === undefined) return undefined;
  let m = metricsByRegistry.get(registry);
  if (m === undefined) {
    m = {
      builds: new Counter({
        name: 'bpfmesh_control_channel_builds_total',
        help: 'Control-plane gRPC clients built, by service: the first one, then one per workload certificate rotation (mTLS).',
        labelNames: ['service'] as const,
        registers: [registry],
      }),
      tlsFailures: new Counter({
        name: 'bpfmesh_control_tls_failures_total',
        help: 'Failed TLS probes of a control-plane service after gRPC reported it unavailable, by service and error code.',
        labelNames: ['service', 'code'] as const,
        registers: [registry],
      }),
    };
    metricsByRegistry.set(registry, m);
  }
  return m;
}

const TLS13 = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' } as const;
const PROBE_EVERY_MS = 5000;

const envName = (service: string): string => `LINKERD2_PROXY_${service.toUpperCase()}_SVC_NAME`;
const firstLine = (s: string): string => s.split('\n', 1)[0] ?? s;

/** Whether a certificate Node handed over names `expected` among its DNS/URI SANs; the names it has otherwise. */
function certNames(cert: PeerCertificate | undefined): string[] {
  return parseSubjectAltName(cert?.subjectaltname)
    .filter((e) => e.type === 'DNS' || e.type === 'URI')
    .map((e) => `${e.type}:${e.value}`);
}

function namesMatch(cert: PeerCertificate | undefined, expected: string): boolean {
  return parseSubjectAltName(cert?.subjectaltname).some((e) => (e.type === 'DNS' || e.type === 'URI') && nameMatches(e, expected));
}

/**
 * Builds the gRPC client of one control-plane service, as Linkerd's proxy
 * reaches it (see the top of this file), and builds it again whenever the
 * workload certificate rotates (mTLS). The one place control-plane clients
 * get their transport: Identity, Destination, and the policy API use it.
 * Throws BPFMESH_E_CONTROL_TLS_UNSUPPORTED off loopback without `tls`.
 */
export function openControlClient<C extends ClosableClient>(opts: ControlClientOptions<C>): ControlClient<C> {
  const { svc, service } = opts;
  const target = formatAddr(svc.addr);
  const log = opts.log.child({ component: `${service}-channel` });
  const metrics = channelMetrics(opts.registry);
  const options: grpc.ChannelOptions = {
    // The channel's own reconnect schedule matches ours, so a returning
    // control plane is reached as soon as our backoff retries.
    'grpc.initial_reconnect_backoff_ms': opts.backoff.minMs,
    'grpc.max_reconnect_backoff_ms': opts.backoff.maxMs,
    // Our own connections: a rotated client must not reuse a subchannel of the old one.
    'grpc.use_local_subchannel_pool': 1,
  };
  const listeners = new Set<(c: C) => void>();
  let current: C | undefined;
  let closed = false;

  const build = (credentials: grpc.ChannelCredentials): void => {
    const prev = current;
    current = new opts.ctor(target, credentials, options);
    metrics?.builds.inc({ service });
    for (const l of [...listeners]) l(current);
    // The callers have moved their calls; what is left on the old client ends now.
    prev?.close();
  };

  if (svc.loopback) {
    build(grpc.credentials.createInsecure());
    return {
      target,
      secure: false,
      get current() {
        return current;
      },
      onChange(l) {
        listeners.add(l);
        return () => void listeners.delete(l);
      },
      diagnose: () => Promise.resolve(null),
      close() {
        closed = true;
        current?.close();
      },
    };
  }

  const tls = opts.tls;
  const name = svc.name;
  if (tls === undefined || name === undefined) {
    throw new BpfmeshError(
      ErrorCodes.CONTROL_TLS_UNSUPPORTED,
      `the ${service} service at ${target} is not on loopback: it needs ${service === 'identity' ? 'TLS' : 'mTLS with the workload certificate'} expecting ${name ?? `${envName(service)} (unset)`}` +
        `${tls === undefined && service !== 'identity' ? ', and identity is disabled (no workload certificate): enable identity, or run the control plane on loopback' : ''}`,
    );
  }
  options['grpc.ssl_target_name_override'] = name; // SNI, and the name our check below is given
  const verify: grpc.VerifyOptions = {
    // The chain is verified by OpenSSL against the anchors (rejectUnauthorized stays on); this checks the name.
    checkServerIdentity: (_host, cert) =>
      namesMatch(cert, name)
        ? undefined
        : new BpfmeshError(ErrorCodes.CONTROL_IDENTITY_MISMATCH, `the ${service} service at ${target} is [${certNames(cert).join(', ')}], not ${name}`),
  };
  const anchorsContext = tls.kind === 'tls' ? createSecureContext({ ca: tls.trustAnchorsPem, ...TLS13 }) : undefined;
  const context = (): SecureContext | undefined => (tls.kind === 'tls' ? anchorsContext : tls.store.ready ? tls.store.clientContext : undefined);

  let unsubscribe: (() => void) | undefined;
  if (tls.kind === 'tls') build(grpc.credentials.createFromSecureContext(anchorsContext!, verify));
  else {
    const rebuild = (): void => {
      if (closed) return;
      const first = current === undefined;
      build(grpc.credentials.createFromSecureContext(tls.store.clientContext, verify));
      log.info({ addr: target, name, serial: tls.store.leaf?.serialNumber }, first ? `${service} channel built (mTLS)` : `${service} channel rebuilt with the rotated workload certificate`);
    };
    if (tls.store.ready) rebuild();
    unsubscribe = tls.store.onUpdate(rebuild);
  }

  let lastProbe = 0;
  let lastResult: Promise<BpfmeshError | null> = Promise.resolve(null);
  let lastLogged: string | undefined;
  const diagnose = (): Promise<BpfmeshError | null> => {
    const ctx = context();
    if (ctx === undefined || closed) return Promise.resolve(null);
    if (Date.now() - lastProbe < PROBE_EVERY_MS) return lastResult;
    lastProbe = Date.now();
    lastResult = probeTls({ svc, service, name, context: ctx, timeoutMs: opts.probeTimeoutMs ?? 5000 }).then((err) => {
      if (err === null) {
        lastLogged = undefined;
        return null;
      }
      metrics?.tlsFailures.inc({ service, code: err.code });
      if (err.message !== lastLogged) {
        lastLogged = err.message;
        log.warn({ code: err.code, err: err.message, addr: target, name }, `TLS to the ${service} service failed`);
      }
      return err;
    });
    return lastResult;
  };

  return {
    target,
    secure: true,
    get current() {
      return current;
    },
    onChange(l) {
      listeners.add(l);
      return () => void listeners.delete(l);
    },
    diagnose,
    close() {
      closed = true;
      unsubscribe?.();
      current?.close();
    },
  };
}

/**
 * One TLS handshake with the service, as the gRPC client makes it (same
 * context, SNI, ALPN h2), to name what fails. Null when TLS succeeds or the
 * TCP connection itself fails (that is not a TLS problem).
 */
function probeTls(p: { svc: ControlAddr; service: string; name: string; context: SecureContext; timeoutMs: number }): Promise<BpfmeshError | null> {
  const where = `the ${p.service} service at ${formatAddr(p.svc.addr)}`;
  const anchorsVar = 'LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS';
  return new Promise((resolve) => {
    const tcp: Socket = netConnect({ host: p.svc.addr.host, port: p.svc.addr.port });
    let settled = false;
    const done = (r: BpfmeshError | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      tcp.destroy();
      resolve(r);
    };
    const handshakeFailed = (why: string): BpfmeshError =>
      new BpfmeshError(
        ErrorCodes.CONTROL_TLS_HANDSHAKE,
        `no TLS with ${where} (${why}): it may be serving plaintext, which a proxy accepts on loopback only, or refusing our client certificate; serve TLS there (bpfmesh control-plane does off loopback) or point the address at the pod's loopback`,
      );
    const timer = setTimeout(() => done(tcp.readyState === 'open' ? handshakeFailed(`no handshake within ${p.timeoutMs} ms`) : null), p.timeoutMs);
    const unreachable = (): void => done(null);
    tcp.once('error', unreachable);
    tcp.once('connect', () => {
      // From here on a reset is the server's answer to our ClientHello: the TLS socket reports it.
      tcp.off('error', unreachable);
      tcp.on('error', () => {});
      const s = tlsConnect({ socket: tcp, servername: p.name, secureContext: p.context, ALPNProtocols: ['h2'], rejectUnauthorized: false, checkServerIdentity: () => undefined });
      s.once('secureConnect', () => {
        const cert = s.getPeerCertificate();
        if (!s.authorized) {
          const reason = String(s.authorizationError);
          return done(
            new BpfmeshError(
              ErrorCodes.CONTROL_TLS_VERIFY,
              `${where} presents a certificate that does not verify against ${anchorsVar} (${reason}; issuer ${firstLine(String(cert.issuer?.CN ?? '?'))}): give the proxy the trust anchors of that control plane's issuer, or point the address at the right control plane`,
            ),
          );
        }
        if (!namesMatch(cert, p.name)) {
          return done(
            new BpfmeshError(
              ErrorCodes.CONTROL_IDENTITY_MISMATCH,
              `${where} is [${certNames(cert).join(', ')}], not ${p.name}: set ${envName(p.service)} to the identity of the service the address points at, or fix the address`,
            ),
          );
        }
        s.end();
        done(null);
      });
      s.once('error', (err: Error & { code?: string }) => done(handshakeFailed(`${err.code ?? ''}${err.code ? ': ' : ''}${firstLine(err.message)}`)));
      s.once('close', () => done(handshakeFailed('closed during the handshake')));
    });
  });
}

/** A gRPC status name for logs and metric labels ("UNAVAILABLE"). */
export function statusName(code: number): string {
  return grpc.status[code] ?? String(code);
}
