// A throwaway PKI for mTLS tests, shaped like Linkerd's: a trust anchor, an
// issuer (intermediate) and leaf certificates with exactly one DNS SAN,
// the identity; ECDSA P-256 throughout.
// @peculiar/x509 (its tsyringe) needs a Reflect metadata polyfill loaded first.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 24 * 3600 * 1000;

export interface Issued {
  cert: x509.X509Certificate;
  keys: CryptoKeyPair;
  certPem: string;
  keyPem: string;
  name: string;
}

async function keyPair(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair; // Node's KeyUsage is wider than the DOM lib's
}

async function pkcs8Pem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  const b64 = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN PRIVATE KEY-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END PRIVATE KEY-----\n`;
}

async function finish(cert: x509.X509Certificate, keys: CryptoKeyPair, name: string): Promise<Issued> {
  return { cert, keys, certPem: cert.toString('pem') + '\n', keyPem: await pkcs8Pem(keys.privateKey), name };
}

export interface Validity {
  notBefore?: Date;
  notAfter?: Date;
}

/** A self-signed trust anchor. */
export async function mintAnchor(name = 'root.linkerd.cluster.local', v: Validity = {}): Promise<Issued> {
  const keys = await keyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=${name}`,
    keys,
    signingAlgorithm: ALG,
    notBefore: v.notBefore ?? new Date(Date.now() - DAY),
    notAfter: v.notAfter ?? new Date(Date.now() + 365 * DAY),
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return finish(cert, keys, name);
}

/** An intermediate CA (Linkerd's identity issuer) signed by `parent`. */
export async function mintIssuer(parent: Issued, name = 'identity.linkerd.cluster.local', v: Validity = {}): Promise<Issued> {
  const keys = await keyPair();
  const cert = await x509.X509CertificateGenerator.create({
    subject: `CN=${name}`,
    issuer: parent.cert.subject,
    publicKey: keys.publicKey,
    signingKey: parent.keys.privateKey,
    signingAlgorithm: ALG,
    notBefore: v.notBefore ?? new Date(Date.now() - DAY),
    notAfter: v.notAfter ?? new Date(Date.now() + 30 * DAY),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(parent.keys.publicKey),
    ],
  });
  return finish(cert, keys, name);
}

/** A proxy's leaf: exactly one DNS SAN (the identity), usable as server and client certificate. */
export async function mintLeaf(issuer: Issued, identity: string, v: Validity = {}): Promise<Issued> {
  const keys = await keyPair();
  const cert = await x509.X509CertificateGenerator.create({
    subject: `CN=${identity}`,
    issuer: issuer.cert.subject,
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: ALG,
    notBefore: v.notBefore ?? new Date(Date.now() - 3600 * 1000),
    notAfter: v.notAfter ?? new Date(Date.now() + DAY),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: identity }]),
      await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey),
    ],
  });
  return finish(cert, keys, identity);
}

/** TlsStore material for a leaf: the leaf plus its issuer, as the identity service returns them. */
export const materialOf = (leaf: Issued, issuer: Issued): { identity: string; keyPem: string; certChainPem: string } => ({
  identity: leaf.name,
  keyPem: leaf.keyPem,
  certChainPem: leaf.certPem + issuer.certPem,
});
