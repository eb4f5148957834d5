// The development control plane's certificate authority: a trust anchor
// (root) and an issuer (intermediate) that signs workload leaves from DER
// CSRs, as Linkerd's identity service does. Keys are ECDSA P-256.
import { createPrivateKey, createPublicKey, randomBytes, webcrypto, X509Certificate as NodeX509 } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { x509 } from '../control/x509.js';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { Logger } from '../log/logger.js';

const EC: EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGNING: EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
/** Linkerd's issuer backdates leaves by its clock-skew allowance (20 s). */
export const CLOCK_SKEW_MS = 20_000;
/** X.520 upper bound of a CommonName; longer identities get an empty subject and a critical SAN. */
const CN_MAX = 64;

export interface Issuer {
  cert: x509.X509Certificate;
  /** The issuer first, then any further intermediates: CertifyResponse.intermediate_certificates. */
  chainDer: Buffer[];
  key: CryptoKey;
  /** PEM of the roots that proxies trust; empty when unknown (an issuer given without its anchors). */
  trustAnchorsPem: string;
  /** Where the trust anchors are, for the operator. */
  trustAnchorsFile: string | undefined;
}

export interface IssuerSource {
  /** Both files, or neither: then the state dir holds a generated root and issuer. */
  certFile?: string;
  keyFile?: string;
  trustAnchorsFile?: string;
}

function configError(message: string, cause?: unknown): BpfmeshError {
  return new BpfmeshError(ErrorCodes.CONTROL_PLANE_CONFIG, message, cause === undefined ? {} : { cause });
}

const pemBlocks = (text: string): string[] => text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];

/** A PEM private key of any form Node reads (PKCS#8, SEC1) as a WebCrypto P-256 signing key. */
async function importSigningKey(pem: string, file: string): Promise<CryptoKey> {
  try {
    const der = createPrivateKey(pem).export({ type: 'pkcs8', format: 'der' });
    return (await webcrypto.subtle.importKey('pkcs8', der, EC, true, ['sign'])) as CryptoKey; // Node's KeyUsage is wider than the DOM lib's
  } catch (err) {
    throw configError(`${file}: not an ECDSA P-256 private key (${(err as Error).message})`, err);
  }
}

async function writeAtomic(file: string, data: string, mode: number): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, data, { mode });
  await chmod(tmp, mode); // the umask may have narrowed it
  await rename(tmp, file);
}

const toPem = (der: ArrayBuffer | Buffer, label: string): string =>
  `-----BEGIN ${label}-----\n${(Buffer.from(der as ArrayBuffer).toString('base64').match(/.{1,64}/g) ?? []).join('\n')}\n-----END ${label}-----\n`;

async function exportKeyPem(key: CryptoKey): Promise<string> {
  return toPem(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

async function generateKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair; // Node's KeyUsage is wider than the DOM lib's
}

/** A 16-byte positive serial number. */
function serial(): string {
  const b = randomBytes(16);
  b[0] = (b[0] ?? 0) & 0x7f;
  return b.toString('hex');
}

/** Creates a root (10 years) and an issuer (1 year) for `trustDomain`, like `linkerd install` without --identity-external-issuer. */
async function generateAuthority(trustDomain: string, now: number): Promise<{ rootPem: string; issuerPem: string; issuerKeyPem: string }> {
  const rootKeys = await generateKeys();
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=root.linkerd.${trustDomain}`,
    notBefore: new Date(now - CLOCK_SKEW_MS),
    notAfter: new Date(now + 10 * 365 * 86_400_000),
    keys: rootKeys,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey),
    ],
  });
  const issuerKeys = await generateKeys();
  const issuer = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=identity.linkerd.${trustDomain}`,
    issuer: root.subjectName,
    notBefore: new Date(now - CLOCK_SKEW_MS),
    notAfter: new Date(now + 365 * 86_400_000),
    publicKey: issuerKeys.publicKey,
    signingKey: rootKeys.privateKey,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(issuerKeys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(rootKeys.publicKey),
    ],
  });
  return { rootPem: root.toString('pem') + '\n', issuerPem: issuer.toString('pem') + '\n', issuerKeyPem: await exportKeyPem(issuerKeys.privateKey) };
}

export const STATE_FILES = { trustAnchors: 'trust-anchors.pem', issuerCert: 'issuer.crt', issuerKey: 'issuer.key' } as const;

async function readText(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw configError(`cannot read the ${what} ${file}: ${(err as Error).message}`, err);
  }
}

/**
 * The issuer from the given files, or from the state dir (generated there on
 * first start, with the trust anchor the proxies need in trust-anchors.pem).
 */
export async function loadIssuer(opts: { source: IssuerSource; stateDir: string; trustDomain: string; log: Logger; now?: number }): Promise<Issuer> {
  const { source, stateDir, log } = opts;
  let certFile = source.certFile;
  let keyFile = source.keyFile;
  let anchorsFile = source.trustAnchorsFile;
  if ((certFile === undefined) !== (keyFile === undefined)) throw configError('identity.issuer needs both certFile and keyFile');
  if (certFile === undefined) {
    certFile = join(stateDir, STATE_FILES.issuerCert);
    keyFile = join(stateDir, STATE_FILES.issuerKey);
    anchorsFile = join(stateDir, STATE_FILES.trustAnchors);
    const exists = await readFile(certFile).then(
      () => true,
      () => false,
    );
    if (!exists) {
      const g = await generateAuthority(opts.trustDomain, opts.now ?? Date.now());
      await mkdir(stateDir, { recursive: true, mode: 0o755 });
      await writeAtomic(keyFile, g.issuerKeyPem, 0o600);
      await writeAtomic(certFile, g.issuerPem, 0o644);
      // World-readable: the proxies' LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS comes from here.
      await writeAtomic(anchorsFile, g.rootPem, 0o644);
      log.info({ stateDir, trustAnchors: anchorsFile, trustDomain: opts.trustDomain }, 'generated a trust anchor and an issuer');
    }
  }
  const keyPath = keyFile ?? '';
  const certPem = await readText(certFile, 'issuer certificate');
  const blocks = pemBlocks(certPem);
  if (blocks.length === 0) throw configError(`${certFile}: no PEM certificate`);
  let chain: x509.X509Certificate[];
  try {
    chain = blocks.map((b) => new x509.X509Certificate(b));
  } catch (err) {
    throw configError(`${certFile}: ${(err as Error).message}`, err);
  }
  const cert = chain[0];
  if (cert === undefined) throw configError(`${certFile}: no PEM certificate`);
  const keyPem = await readText(keyPath, 'issuer key');
  const key = await importSigningKey(keyPem, keyPath);
  // The key must be the certificate's, or every leaf would fail verification.
  const fromKey = createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' });
  if (!Buffer.from(cert.publicKey.rawData).equals(fromKey)) throw configError(`${keyPath} is not the key of ${certFile}`);
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  if (bc === null || !bc.ca) throw configError(`${certFile} is not a CA certificate (basicConstraints CA:TRUE)`);

  let trustAnchorsPem = '';
  if (anchorsFile !== undefined) {
    trustAnchorsPem = pemBlocks(await readText(anchorsFile, 'trust anchors')).join('\n') + '\n';
  } else {
    const last = chain[chain.length - 1];
    if (last !== undefined && (await last.isSelfSigned())) trustAnchorsPem = last.toString('pem') + '\n';
    else log.warn({ certFile }, 'the trust anchors are unknown: give identity.trustAnchorsFile so proxies can be configured');
  }
  // A self-signed root in the issuer file is a trust anchor, not an intermediate.
  const intermediates = [];
  for (const c of chain) if (c === cert || !(await c.isSelfSigned())) intermediates.push(c);
  return {
    cert,
    chainDer: intermediates.map((c) => Buffer.from(c.rawData)),
    key,
    trustAnchorsPem,
    trustAnchorsFile: anchorsFile,
  };
}

const SAN_OID = '2.5.29.17';

/** Why a CSR was refused: becomes InvalidArgument. */
export class CsrError extends Error {}

/** The CSR's public key, after checking its signature, its key type and that its only SAN is DNS `identity`. */
export async function checkCsr(der: Buffer, identity: string): Promise<x509.PublicKey> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(new Uint8Array(der));
  } catch (err) {
    throw new CsrError(`the CSR is not DER PKCS#10: ${(err as Error).message}`);
  }
  if (!(await csr.verify())) throw new CsrError('the CSR signature does not verify');
  const alg = csr.publicKey.algorithm as EcKeyAlgorithm;
  if (alg.name !== 'ECDSA' || alg.namedCurve !== 'P-256') throw new CsrError(`the CSR key is ${alg.name} ${alg.namedCurve ?? ''}; ECDSA P-256 is required`);
  const sans = csr.extensions.filter((e) => e.type === SAN_OID).map((e) => new x509.SubjectAlternativeNameExtension(e.rawData));
  const names = sans.flatMap((e) => e.names.items);
  if (names.length !== 1 || names[0]?.type !== 'dns') {
    throw new CsrError(`the CSR must have exactly one SAN, a DNS name; it has ${names.map((n) => `${n.type}:${n.value}`).join(', ') || 'none'}`);
  }
  if (names[0].value.toLowerCase() !== identity.toLowerCase()) throw new CsrError(`the CSR's SAN ${names[0].value} is not the identity ${identity}`);
  const cn = csr.subjectName.getField('CN');
  if (cn.some((v) => v.toLowerCase() !== identity.toLowerCase())) throw new CsrError(`the CSR's CN ${cn.join(',')} is neither empty nor the identity`);
  return csr.publicKey;
}

/** The issuer's own key identifier when it has one: OpenSSL matches AKI against it when building chains. */
async function authorityKeyId(cert: x509.X509Certificate): Promise<x509.AuthorityKeyIdentifierExtension> {
  const ski = cert.getExtension(x509.SubjectKeyIdentifierExtension);
  return ski === null ? x509.AuthorityKeyIdentifierExtension.create(cert.publicKey) : new x509.AuthorityKeyIdentifierExtension(ski.keyId);
}

/** A leaf for `identity` valid from now − skew to now + lifetime (never past the issuer's expiry). */
export async function signLeaf(
  issuer: Issuer,
  publicKey: x509.PublicKey,
  identity: string,
  lifetimeMs: number,
  now = Date.now(),
): Promise<{ der: Buffer; notAfter: Date }> {
  // Whole seconds: what the certificate can encode, so valid_until says exactly what it holds.
  const notAfter = new Date(Math.floor(Math.min(now + lifetimeMs, issuer.cert.notAfter.getTime()) / 1000) * 1000);
  const short = identity.length <= CN_MAX;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: short ? `CN=${identity}` : '',
    issuer: issuer.cert.subjectName,
    notBefore: new Date(now - CLOCK_SKEW_MS),
    notAfter,
    publicKey,
    signingKey: issuer.key,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      // RFC 5280: with an empty subject the SAN must be critical.
      new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: identity }], !short),
      await authorityKeyId(issuer.cert),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
    ],
  });
  // Node's parser is the one the proxies' TLS stack uses: refuse to hand out what it cannot read.
  const der = Buffer.from(leaf.rawData);
  new NodeX509(der);
  return { der, notAfter };
}
