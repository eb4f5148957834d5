// The proxy's mTLS credentials: the current identity (key + certificate
// chain) and the trust anchors, as node:tls SecureContexts for both roles.
// update() builds new contexts and swaps them in: a handshake takes the
// context current when it starts, and an open TLS connection keeps the one
// it was made with, so rotation reaches new connections only and never drops
// open ones. TLS 1.3 only, no session resumption (Linkerd's rules).
import { constants, createPrivateKey, type KeyObject, type X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { chainProblem, identityNames, keyMatches, nameMatches, parseBundle } from './certs.js';

/** What the identity client (src/control/) hands over after each Certify. */
export interface IdentityMaterial {
  /** Our identity, e.g. default.emojivoto.serviceaccount.identity.linkerd.cluster.local. */
  identity: string;
  /** PKCS#8 or SEC1 PEM. */
  keyPem: string;
  /** Leaf first, then intermediates (the control client's `certPem`). */
  certChainPem: string;
}

export interface TlsStoreOptions {
  /** LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS: one or more PEM CA certificates. */
  trustAnchorsPem: string;
  /**
   * The configured local name (LINKERD2_PROXY_IDENTITY_LOCAL_NAME). Known
   * before the first certificate, so that TLS meant for us is terminated
   * (and refused while not ready) rather than passed through to the app;
   * update() then refuses material for another name.
   */
  identity?: string;
  /** For tests: the clock used to check validity periods. */
  now?: () => Date;
}

interface Current {
  identity: string;
  leaf: X509Certificate;
  server: SecureContext;
  client: SecureContext;
}

// SSL_OP_NO_TICKET stops stateless tickets. In TLS 1.3 OpenSSL then issues
// stateful tickets instead, but Node keeps no server-side session cache
// (SSL_SESS_CACHE_NO_INTERNAL, and a bare TLSSocket has no 'newSession'
// handler), so nothing can be resumed. Our client never offers a session.
const NO_RESUMPTION = constants.SSL_OP_NO_TICKET;

export class TlsStore {
  readonly trustAnchorsPem: string;
  readonly #anchors: X509Certificate[];
  readonly #configuredIdentity: string | undefined;
  readonly #now: () => Date;
  readonly #listeners = new Set<() => void>();
  #current: Current | undefined;

  constructor(opts: TlsStoreOptions) {
    let anchors: X509Certificate[];
    try {
      anchors = parseBundle(opts.trustAnchorsPem);
    } catch (err) {
      throw new BpfmeshError(ErrorCodes.TLS_MATERIAL, `trust anchors: not valid PEM certificates: ${(err as Error).message}`, { cause: err });
    }
    if (anchors.length === 0) throw new BpfmeshError(ErrorCodes.TLS_MATERIAL, 'trust anchors: no PEM certificate found');
    const notCa = anchors.find((a) => !a.ca);
    if (notCa !== undefined) throw new BpfmeshError(ErrorCodes.TLS_MATERIAL, `trust anchors: ${notCa.subject.replace(/\n/g, ',')} is not a CA certificate`);
    this.trustAnchorsPem = opts.trustAnchorsPem;
    this.#anchors = anchors;
    this.#configuredIdentity = opts.identity;
    this.#now = opts.now ?? (() => new Date());
  }

  /** False until the first update(); Linkerd's /ready is 503 until then. */
  get ready(): boolean {
    return this.#current !== undefined;
  }

  /** Our name: the configured one, else the one of the installed material. */
  get identity(): string | undefined {
    return this.#configuredIdentity ?? this.#current?.identity;
  }

  /** The leaf certificate in use (expiry, serial, fingerprint for logs). */
  get leaf(): X509Certificate | undefined {
    return this.#current?.leaf;
  }

  /** For terminating inbound mTLS; throws BPFMESH_E_TLS_NOT_READY before the first update(). */
  get serverContext(): SecureContext {
    return this.#need().server;
  }

  /** For originating outbound mTLS (our certificate as client certificate). */
  get clientContext(): SecureContext {
    return this.#need().client;
  }

  /**
   * Installs new material for new connections. Throws BPFMESH_E_TLS_MATERIAL
   * (and keeps the previous material) when the key does not match the leaf,
   * the leaf lacks a DNS/URI SAN equal to the identity, the chain does not
   * lead to a trust anchor, or a certificate on the path is outside its
   * validity period.
   */
  update(m: IdentityMaterial): void {
    const fail = (why: string, cause?: unknown): never => {
      throw new BpfmeshError(ErrorCodes.TLS_MATERIAL, `identity ${m.identity}: ${why}`, cause === undefined ? {} : { cause });
    };
    if (this.#configuredIdentity !== undefined && !sameName(m.identity, this.#configuredIdentity)) {
      fail(`not the configured identity ${this.#configuredIdentity}`);
    }
    let chain: X509Certificate[] = [];
    let key: KeyObject | undefined;
    try {
      chain = parseBundle(m.certChainPem);
      key = createPrivateKey(m.keyPem);
    } catch (err) {
      fail(`unreadable key or certificate: ${(err as Error).message}`, err);
    }
    const leaf = chain[0];
    if (leaf === undefined || key === undefined) return fail('no certificate in the chain');
    if (!keyMatches(leaf, key)) fail('the private key does not match the leaf certificate');
    const names = identityNames(leaf);
    if (!names.some((n) => nameMatches(n, m.identity))) {
      fail(`the leaf certificate is for [${names.map((n) => n.value).join(', ')}]`);
    }
    const problem = chainProblem(chain, this.#anchors, this.#now());
    if (problem !== null) fail(`certificate chain: ${problem}`);

    const options = {
      key: m.keyPem,
      cert: m.certChainPem,
      ca: this.trustAnchorsPem,
      minVersion: 'TLSv1.3',
      maxVersion: 'TLSv1.3',
      secureOptions: NO_RESUMPTION,
    } as const;
    let server: SecureContext | undefined;
    let client: SecureContext | undefined;
    try {
      server = createSecureContext(options);
      client = createSecureContext(options);
    } catch (err) {
      fail(`OpenSSL refused the material: ${(err as Error).message}`, err);
    }
    if (server === undefined || client === undefined) return;
    this.#current = { identity: m.identity, leaf, server, client };
    for (const l of this.#listeners) l();
  }

  /** Called after each successful update(); returns an unsubscribe function. */
  onUpdate(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  #need(): Current {
    if (this.#current === undefined) {
      throw new BpfmeshError(ErrorCodes.TLS_NOT_READY, `no identity certificate yet${this.identity === undefined ? '' : ` for ${this.identity}`}`);
    }
    return this.#current;
  }
}

/** DNS-like identity names compare without case. */
export const sameName = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase();
