// The development control plane's own TLS, as Linkerd's control plane
// presents it to proxies: Identity over TLS (no client certificate: a proxy
// asking for its first certificate has none), Destination and the policy API
// over mTLS (a client certificate from the trust anchors is required). The
// server certificates name the services' identities
// (linkerd-identity.linkerd.serviceaccount.identity.linkerd.<trust domain>,
// linkerd-destination.…), are signed by the control plane's own issuer, live
// as long as a workload leaf (identity.leafLifetime) and are renewed at 70%
// of their lifetime: open connections keep theirs, new ones get the new one.
// TLS 1.3 only.
import { webcrypto } from 'node:crypto';
import type { SecureContextOptions } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { x509 } from '../control/x509.js';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { signLeaf, type Issuer } from './ca.js';

export interface ServerNames {
  identity: string;
  destination: string;
}

/** Linkerd's defaults: the service accounts of the identity and destination controllers in namespace linkerd. */
export function defaultServerNames(trustDomain: string, namespace = 'linkerd'): ServerNames {
  return {
    identity: `linkerd-identity.${namespace}.serviceaccount.identity.${namespace}.${trustDomain}`,
    destination: `linkerd-destination.${namespace}.serviceaccount.identity.${namespace}.${trustDomain}`,
  };
}

/** A server certificate that can be replaced under a running server (grpc-js calls setSecureContext). */
export class RotatingServerCredentials extends grpc.ServerCredentials {
  readonly #base: SecureContextOptions;

  constructor(requireClientCert: boolean, trustAnchorsPem: string, material: { keyPem: string; certPem: string }) {
    const base: SecureContextOptions = { ca: trustAnchorsPem, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' };
    // rejectUnauthorized: a client certificate must verify against the anchors when one is required.
    super({ requestCert: requireClientCert, rejectUnauthorized: requireClientCert }, { ...base, key: material.keyPem, cert: material.certPem });
    this.#base = base;
  }

  rotate(material: { keyPem: string; certPem: string }): void {
    this.updateSecureContextOptions({ ...this.#base, key: material.keyPem, cert: material.certPem });
  }

  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

const toPem = (der: ArrayBuffer | Buffer, label: string): string =>
  `-----BEGIN ${label}-----\n${(Buffer.from(der as ArrayBuffer).toString('base64').match(/.{1,64}/g) ?? []).join('\n')}\n-----END ${label}-----\n`;

/** A fresh P-256 key and a leaf for `name` from the issuer, with the issuer's chain: what the server presents. */
export async function serverCertificate(issuer: Issuer, name: string, lifetimeMs: number): Promise<{ keyPem: string; certPem: string; notAfter: Date }> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const spki = await webcrypto.subtle.exportKey('spki', keys.publicKey);
  const leaf = await signLeaf(issuer, new x509.PublicKey(spki), name, lifetimeMs);
  return {
    keyPem: toPem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY'),
    certPem: [leaf.der, ...issuer.chainDer].map((d) => toPem(d, 'CERTIFICATE')).join(''),
    notAfter: leaf.notAfter,
  };
}

export interface ServerTls {
  /** For the Identity port: TLS, no client certificate. */
  identity: RotatingServerCredentials;
  /** For the Destination (and policy) port: mTLS. */
  destination: RotatingServerCredentials;
  names: ServerNames;
  /** Server certificates issued so far (2 at start, 2 per renewal). */
  readonly issued: number;
  close(): void;
}

/** Issues both server certificates and keeps renewing them; lifetimeMs is the workload leaf lifetime. */
export async function startServerTls(opts: { issuer: Issuer; names: ServerNames; lifetimeMs: () => number; log: Logger }): Promise<ServerTls> {
  const { issuer, names, log } = opts;
  if (issuer.trustAnchorsPem === '') {
    throw new BpfmeshError(
      ErrorCodes.CONTROL_PLANE_CONFIG,
      'serving off loopback needs the trust anchors (mTLS for Destination verifies client certificates against them): give identity.trustAnchorsFile',
    );
  }
  const issue = async (): Promise<{ id: Awaited<ReturnType<typeof serverCertificate>>; dst: Awaited<ReturnType<typeof serverCertificate>> }> => ({
    id: await serverCertificate(issuer, names.identity, opts.lifetimeMs()),
    dst: await serverCertificate(issuer, names.destination, opts.lifetimeMs()),
  });
  let first;
  try {
    first = await issue();
  } catch (err) {
    throw new BpfmeshError(ErrorCodes.CONTROL_PLANE_CONFIG, `cannot issue the control plane's server certificates: ${(err as Error).message}`, { cause: err });
  }
  let issued = 2;
  const identity = new RotatingServerCredentials(false, issuer.trustAnchorsPem, first.id);
  const destination = new RotatingServerCredentials(true, issuer.trustAnchorsPem, first.dst);
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const schedule = (notAfter: Date): void => {
    // 70% of what is left, as the proxies renew theirs; at least 1 s, at most a day.
    const delay = Math.min(86_400_000, Math.max(1000, Math.floor((notAfter.getTime() - Date.now()) * 0.7)));
    timer = setTimeout(() => void renew(), delay);
    timer.unref();
  };
  const renew = async (): Promise<void> => {
    if (closed) return;
    try {
      const next = await issue();
      if (closed) return;
      identity.rotate(next.id);
      destination.rotate(next.dst);
      issued += 2;
      log.info({ identity: names.identity, destination: names.destination, validUntil: next.id.notAfter.toISOString() }, 'server certificates renewed');
      schedule(next.id.notAfter);
    } catch (err) {
      log.error({ err: (err as Error).message }, 'cannot renew the server certificates; retrying in 10 s');
      timer = setTimeout(() => void renew(), 10_000);
      timer.unref();
    }
  };
  schedule(first.id.notAfter);
  return {
    identity,
    destination,
    names,
    get issued() {
      return issued;
    },
    close() {
      closed = true;
      clearTimeout(timer);
    },
  };
}
