// The workload's certificate from Linkerd's Identity API.
//
// At start: an ECDSA P-256 key (kept in memory for the process's life) and a
// DER CSR whose only SAN is the DNS name LINKERD2_PROXY_IDENTITY_LOCAL_NAME
// (empty subject: identities may exceed the 64-character CN limit). Then
// Certify, with the token re-read from its file on every call (the kubelet
// rotates it); the answer is checked (our key, our name, a chain to the
// trust anchors) before it is installed and announced. The next Certify is
// at 70% of the remaining lifetime, clamped to [10 s, 24 h]; after a failure,
// 10 s later, whatever the status: InvalidArgument and FailedPrecondition
// will not fix themselves, and a fixed delay never makes a tight loop.
import { EventEmitter } from 'node:events';
import { webcrypto, X509Certificate } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { IdentityConfig } from '../config/proxy-env.js';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { Backoff } from './backoff.js';
import { openControlClient, statusName, type ControlClient } from './channel.js';
import { x509 } from './x509.js';
import { identityClientCtor, timestampToMs, type CertifyResponseMsg, type IdentityClientStub } from './protos.js';

/** Linkerd's refresh clamp and retry delay. */
export const MIN_REFRESH_MS = 10_000;
export const MAX_REFRESH_MS = 24 * 3_600_000;
export const RETRY_MS = 10_000;
/** Share of the remaining lifetime after which the certificate is renewed. */
export const REFRESH_RATIO = 0.7;

/** What the TLS module needs to serve and originate mTLS as this workload. */
export interface WorkloadCertificate {
  identity: string;
  /** PKCS#8 PEM of the workload key. */
  keyPem: string;
  /** The leaf then the intermediates, PEM. */
  certPem: string;
  leafDer: Buffer;
  intermediatesDer: Buffer[];
  expiresAt: Date;
}

export interface IdentityClientOptions {
  /** ProxyConfig.identity. */
  config: IdentityConfig;
  registry: Registry;
  log: Logger;
  /** Floor of the refresh delay; Linkerd's 10 s. Tests lower it to renew short-lived certificates quickly. */
  minRefreshMs?: number;
  maxRefreshMs?: number;
  /** Delay after a failed Certify; Linkerd's 10 s. */
  retryMs?: number;
  /** Deadline of one Certify call; default 10 s. */
  callTimeoutMs?: number;
  /**
   * A channel to the identity service shared with other clients (the node
   * proxy's pods: Identity is TLS without a client certificate, the same for
   * every pod), used as is and left open by close(). Default: one of its own.
   */
  channel?: ControlClient<IdentityClientStub>;
}

/** The channel an IdentityClient opens for itself, for callers that share one between clients. */
export function openIdentityChannel(config: IdentityConfig, log: Logger, registry?: Registry): ControlClient<IdentityClientStub> {
  // Off loopback: TLS verified against the trust anchors, for …_IDENTITY_SVC_NAME; no client certificate (we have none yet).
  return openControlClient({
    svc: config.svc,
    service: 'identity',
    ctor: identityClientCtor(),
    tls: { kind: 'tls', trustAnchorsPem: config.trustAnchorsPem },
    backoff: new Backoff(),
    log,
    ...(registry ? { registry } : {}),
  });
}

/** When to renew a certificate that expires at expiresAtMs: 70% of what is left, clamped. */
export function refreshDelayMs(expiresAtMs: number, nowMs: number, minMs = MIN_REFRESH_MS, maxMs = MAX_REFRESH_MS): number {
  const left = Math.max(0, expiresAtMs - nowMs);
  return Math.min(maxMs, Math.max(minMs, Math.floor(left * REFRESH_RATIO)));
}

const toPem = (der: ArrayBuffer | Buffer, label: string): string =>
  `-----BEGIN ${label}-----\n${(Buffer.from(der as ArrayBuffer).toString('base64').match(/.{1,64}/g) ?? []).join('\n')}\n-----END ${label}-----\n`;

function splitPem(pem: string): X509Certificate[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((b) => new X509Certificate(b));
}

function dnsNames(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? '')
    .split(', ')
    .filter((n) => n.startsWith('DNS:'))
    .map((n) => n.slice(4).toLowerCase());
}

/** Certifications by the identity service, and what we make of them. */
export interface IdentityEvents {
  certificate: [WorkloadCertificate];
  refreshError: [Error];
}

export class IdentityClient extends EventEmitter<IdentityEvents> {
  readonly identity: string;
  /** LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS, for the TLS module. */
  readonly trustAnchorsPem: string;
  /** Resolves with the first certificate installed. */
  readonly ready: Promise<WorkloadCertificate>;
  readonly #config: IdentityConfig;
  readonly #channel: ControlClient<IdentityClientStub>;
  readonly #ownChannel: boolean;
  readonly #log: Logger;
  readonly #minRefreshMs: number;
  readonly #maxRefreshMs: number;
  readonly #retryMs: number;
  readonly #callTimeoutMs: number;
  readonly #anchors: X509Certificate[];
  readonly #expiry: Gauge;
  readonly #refreshes: Counter<'result'>;
  #resolveReady!: (c: WorkloadCertificate) => void;
  #current: WorkloadCertificate | undefined;
  #timer: NodeJS.Timeout | undefined;
  #call: grpc.ClientUnaryCall | undefined;
  #started = false;
  #closed = false;

  constructor(opts: IdentityClientOptions) {
    super();
    this.#config = opts.config;
    this.identity = opts.config.localName;
    this.trustAnchorsPem = opts.config.trustAnchorsPem;
    this.#anchors = splitPem(this.trustAnchorsPem);
    this.#log = opts.log.child({ component: 'identity' });
    this.#minRefreshMs = opts.minRefreshMs ?? MIN_REFRESH_MS;
    this.#maxRefreshMs = opts.maxRefreshMs ?? MAX_REFRESH_MS;
    this.#retryMs = opts.retryMs ?? RETRY_MS;
    this.#callTimeoutMs = opts.callTimeoutMs ?? 10_000;
    this.#ownChannel = opts.channel === undefined;
    this.#channel = opts.channel ?? openIdentityChannel(opts.config, opts.log, opts.registry);
    this.ready = new Promise((resolve) => (this.#resolveReady = resolve));
    this.#expiry = new Gauge({
      name: 'bpfmesh_identity_cert_expiry_timestamp_seconds',
      help: 'When the installed workload certificate expires (Unix seconds); 0 before the first one.',
      registers: [opts.registry],
    });
    this.#refreshes = new Counter({
      name: 'bpfmesh_identity_refreshes_total',
      help: 'Certify calls, by result (ok, error).',
      labelNames: ['result'] as const,
      registers: [opts.registry],
    });
  }

  /** The installed certificate; undefined until the first Certify succeeds. */
  get current(): WorkloadCertificate | undefined {
    return this.#current;
  }

  /** /ready: true once a certificate is installed. */
  get isReady(): boolean {
    return this.#current !== undefined;
  }

  /** Generates the key and CSR, then certifies and keeps renewing. Resolves once the loop runs; await `ready` for the certificate. */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    // Node 24's KeyUsage adds KEM usages the DOM lib (which @peculiar/x509 types against) lacks; only sign/verify here.
    const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
    const keyPem = toPem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
    const spki = Buffer.from(await webcrypto.subtle.exportKey('spki', keys.publicKey));
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: this.identity }])],
    });
    const csrDer = Buffer.from(csr.rawData);
    if (this.#config.dir !== undefined) await this.#write('csr.der', csrDer, 0o644);
    this.#log.info({ identity: this.identity, addr: `${this.#config.svc.addr.host}:${this.#config.svc.addr.port}` }, 'certifying');
    const loop = (): void => {
      if (this.#closed) return;
      void this.#certify(keyPem, spki, csrDer).then((delay) => {
        if (this.#closed) return;
        this.#timer = setTimeout(loop, delay);
        this.#timer.unref();
      });
    };
    loop();
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#call?.cancel();
    if (this.#ownChannel) this.#channel.close();
  }

  /** One Certify; the delay until the next. */
  async #certify(keyPem: string, spki: Buffer, csrDer: Buffer): Promise<number> {
    try {
      const token = await readFile(this.#config.tokenFile).catch((err: Error) => {
        throw new BpfmeshError(ErrorCodes.CONTROL, `cannot read the identity token ${this.#config.tokenFile}: ${err.message}`, { cause: err });
      });
      const res = await this.#call1({ identity: this.identity, token, certificate_signing_request: csrDer }).catch(async (err: Error & { grpcCode?: number }) => {
        // gRPC only says UNAVAILABLE; a TLS failure gets its own code and what to do.
        throw (err.grpcCode === grpc.status.UNAVAILABLE ? await this.#channel.diagnose() : null) ?? err;
      });
      const cert = this.#check(res, keyPem, spki);
      this.#current = cert;
      this.#expiry.set(cert.expiresAt.getTime() / 1000);
      this.#refreshes.inc({ result: 'ok' });
      if (this.#config.dir !== undefined) {
        await this.#write('key.pem', keyPem, 0o600);
        await this.#write('cert.pem', cert.certPem, 0o644);
      }
      const delay = refreshDelayMs(cert.expiresAt.getTime(), Date.now(), this.#minRefreshMs, this.#maxRefreshMs);
      this.#log.info({ identity: this.identity, expiresAt: cert.expiresAt.toISOString(), refreshInMs: delay }, 'certificate installed');
      this.emit('certificate', cert);
      this.#resolveReady(cert);
      return delay;
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      this.#refreshes.inc({ result: 'error' });
      if (!this.#closed) {
        this.#log.warn({ identity: this.identity, err: e.message, code: (e as Partial<BpfmeshError>).code, retryMs: this.#retryMs }, 'certify failed');
        if (this.listenerCount('refreshError') > 0) this.emit('refreshError', e);
      }
      return this.#retryMs;
    }
  }

  #call1(req: { identity: string; token: Buffer; certificate_signing_request: Buffer }): Promise<CertifyResponseMsg> {
    return new Promise((resolve, reject) => {
      const client = this.#channel.current;
      if (client === undefined) return reject(new BpfmeshError(ErrorCodes.CONTROL, 'Certify: no channel to the identity service'));
      this.#call = client.Certify(req, new grpc.Metadata(), { deadline: Date.now() + this.#callTimeoutMs }, (err, res) => {
        this.#call = undefined;
        if (err !== null || res === undefined) {
          const code = err === null ? 'EMPTY' : statusName(err.code);
          reject(
            Object.assign(new BpfmeshError(ErrorCodes.CONTROL, `Certify: ${code}: ${err?.details ?? 'no response'}`, { cause: err }), {
              grpcCode: err?.code,
            }),
          );
        } else resolve(res);
      });
    });
  }

  /** The response as a certificate we can use: our key, our name, a chain to a trust anchor, not expired. */
  #check(res: CertifyResponseMsg, keyPem: string, spki: Buffer): WorkloadCertificate {
    const unusable = (why: string, cause?: unknown): BpfmeshError =>
      new BpfmeshError(ErrorCodes.CONTROL, `the identity service's certificate is unusable: ${why}`, cause === undefined ? {} : { cause });
    let leaf: X509Certificate;
    let intermediates: X509Certificate[];
    try {
      leaf = new X509Certificate(res.leaf_certificate);
      intermediates = res.intermediate_certificates.map((d) => new X509Certificate(d));
    } catch (err) {
      throw unusable(`not DER X.509 (${(err as Error).message})`, err);
    }
    if (!leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(spki)) throw unusable('it is not for our key');
    if (!dnsNames(leaf).includes(this.identity)) throw unusable(`its DNS SANs ${dnsNames(leaf).join(', ') || '(none)'} do not include ${this.identity}`);
    // Walk up from the leaf through the intermediates to a trust anchor.
    let cur = leaf;
    for (let depth = 0; ; depth++) {
      if (this.#anchors.some((a) => cur.checkIssued(a) && cur.verify(a.publicKey))) break;
      const next = intermediates.find((i) => i !== cur && cur.checkIssued(i) && cur.verify(i.publicKey));
      if (next === undefined || depth > 8) throw unusable(`no chain from ${cur.subject || '(empty subject)'} to the trust anchors`);
      cur = next;
    }
    const notAfter = new Date(leaf.validTo).getTime();
    const validUntil = timestampToMs(res.valid_until) ?? notAfter;
    const expiresAt = Math.min(validUntil, notAfter);
    if (expiresAt <= Date.now()) throw unusable(`it expired at ${new Date(expiresAt).toISOString()}`);
    return {
      identity: this.identity,
      keyPem,
      certPem: [leaf, ...intermediates].map((c) => c.toString()).join(''),
      leafDer: res.leaf_certificate,
      intermediatesDer: res.intermediate_certificates,
      expiresAt: new Date(expiresAt),
    };
  }

  async #write(name: string, data: string | Buffer, mode: number): Promise<void> {
    const dir = this.#config.dir ?? '';
    const file = join(dir, name);
    try {
      await mkdir(dir, { recursive: true });
      const tmp = `${file}.${process.pid}.tmp`;
      await writeFile(tmp, data, { mode });
      await chmod(tmp, mode);
      await rename(tmp, file);
    } catch (err) {
      this.#log.warn({ file, err: (err as Error).message }, 'cannot write to LINKERD2_PROXY_IDENTITY_DIR');
    }
  }
}
