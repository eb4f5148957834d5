// A leaf for any identity straight from the development control plane's
// issuer (its state dir): what `bpfmesh tap --control-plane-state` presents
// as the tap identity in a lab, where no Identity service hands one out.
import { existsSync } from 'node:fs';
import { webcrypto } from 'node:crypto';
import { join } from 'node:path';
import { x509 } from '../control/x509.js';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { loadIssuer, signLeaf, STATE_FILES } from './ca.js';

export interface IssuedIdentity {
  /** Leaf, then the issuer chain. */
  certPem: string;
  keyPem: string;
  trustAnchorsPem: string;
}

const pem = (der: ArrayBuffer | Buffer, label: string): string =>
  `-----BEGIN ${label}-----\n${(Buffer.from(der as ArrayBuffer).toString('base64').match(/.{1,64}/g) ?? []).join('\n')}\n-----END ${label}-----\n`;

/** Signs a fresh ECDSA P-256 leaf for `identity` with the issuer in `stateDir` (never generates one). */
export async function issueFromState(stateDir: string, identity: string, lifetimeMs: number, log: Logger): Promise<IssuedIdentity> {
  if (!existsSync(join(stateDir, STATE_FILES.issuerKey))) {
    throw new BpfmeshError(ErrorCodes.BAD_FLAG, `--control-plane-state ${stateDir}: no ${STATE_FILES.issuerKey} there (the --state-dir of a running bpfmesh control-plane)`);
  }
  const issuer = await loadIssuer({ source: {}, stateDir, trustDomain: 'cluster.local', log });
  const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
  const spki = await webcrypto.subtle.exportKey('spki', keys.publicKey);
  const leaf = await signLeaf(issuer, new x509.PublicKey(spki), identity, lifetimeMs);
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return {
    certPem: [leaf.der, ...issuer.chainDer].map((d) => pem(d, 'CERTIFICATE')).join(''),
    keyPem: pem(pkcs8, 'PRIVATE KEY'),
    trustAnchorsPem: issuer.trustAnchorsPem,
  };
}
