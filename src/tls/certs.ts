// Certificate helpers for mTLS: split PEM bundles, read a certificate's
// identity names (DNS and URI SANs), and check that local material chains to
// the trust anchors before it is installed (Linkerd validates a new
// certificate with its own client verifier before publishing it).
import { X509Certificate, type KeyObject } from 'node:crypto';

export interface SanEntry {
  /** As Node prints it: "DNS", "URI", "IP Address", "email", "DirName", ... */
  type: string;
  value: string;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The certificates of a PEM bundle, in order. */
export function splitPem(pem: string): string[] {
  return pem.match(PEM_CERT) ?? [];
}

/**
 * Parses Node's `subjectAltName` text ("DNS:a, URI:spiffe://b"). Since the
 * fix for CVE-2021-44532, Node prints a value that holds a comma, a quote, a
 * backslash or a control character as a JSON string, so ", " only ever
 * separates entries and a value cannot smuggle in another entry. Entries that
 * cannot be read end the parse: what was read so far is returned.
 */
export function parseSubjectAltName(text: string | undefined): SanEntry[] {
  const out: SanEntry[] = [];
  if (text === undefined) return out;
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(':', i);
    if (colon < 0) break;
    const type = text.slice(i, colon);
    let j = colon + 1;
    let value: string;
    if (text[j] === '"') {
      let k = j + 1;
      while (k < text.length && text[k] !== '"') k += text[k] === '\\' ? 2 : 1;
      try {
        value = JSON.parse(text.slice(j, k + 1)) as string;
      } catch {
        break;
      }
      j = k + 1;
    } else {
      const end = text.indexOf(', ', j);
      j = end < 0 ? text.length : end;
      value = text.slice(colon + 1, j);
    }
    out.push({ type, value });
    if (j >= text.length) break;
    if (!text.startsWith(', ', j)) break;
    i = j + 2;
  }
  return out;
}

// Identity names end up in headers and metric labels: visible ASCII only.
const PRINTABLE = /^[\x21-\x7e]+$/;

/** The names a certificate may be identified by: its DNS and URI SANs, in certificate order (names with spaces or control characters left out). */
export function identityNames(cert: X509Certificate): SanEntry[] {
  return parseSubjectAltName(cert.subjectAltName).filter((e) => (e.type === 'DNS' || e.type === 'URI') && PRINTABLE.test(e.value));
}

/** DNS names compare without case; URIs (SPIFFE IDs) exactly. */
export function nameMatches(e: SanEntry, expected: string): boolean {
  return e.type === 'DNS' ? e.value.toLowerCase() === expected.toLowerCase() : e.value === expected;
}

/** Linkerd's client identity: the first DNS or URI SAN of the leaf. */
export function firstIdentity(cert: X509Certificate): string | undefined {
  return identityNames(cert)[0]?.value;
}

/** Parses every certificate of a PEM bundle; throws on the first that Node cannot read. */
export function parseBundle(pem: string): X509Certificate[] {
  return splitPem(pem).map((p) => new X509Certificate(p));
}

const validity = (c: X509Certificate): [number, number] => [Date.parse(c.validFrom), Date.parse(c.validTo)];

/**
 * Checks that `chain` (leaf first, then intermediates, maybe the root) leads
 * to one of `anchors` by issuer name and signature, every issuer being a CA,
 * and that each certificate on the path is valid at `now`. Returns why not,
 * or null. A sanity check for our own material, not a replacement for
 * OpenSSL's verification of peers (no EKU or name-constraint checks).
 */
export function chainProblem(chain: readonly X509Certificate[], anchors: readonly X509Certificate[], now: Date): string | null {
  const leaf = chain[0];
  if (leaf === undefined) return 'no certificate';
  const t = now.getTime();
  const timeProblem = (c: X509Certificate): string | null => {
    const [from, to] = validity(c);
    if (Number.isFinite(from) && t < from) return `${c.subject.replace(/\n/g, ',') || 'certificate'} is not valid before ${c.validFrom}`;
    if (Number.isFinite(to) && t > to) return `${c.subject.replace(/\n/g, ',') || 'certificate'} expired ${c.validTo}`;
    return null;
  };
  const issuedBy = (c: X509Certificate, by: X509Certificate): boolean => by.ca && c.checkIssued(by) && c.verify(by.publicKey);
  const used = new Set<X509Certificate>();
  let cur = leaf;
  // Bounded: each step consumes one intermediate.
  for (let depth = 0; depth <= chain.length; depth++) {
    const tp = timeProblem(cur);
    if (tp !== null) return tp;
    if (anchors.some((a) => a.fingerprint256 === cur.fingerprint256)) return null;
    const anchor = anchors.find((a) => issuedBy(cur, a));
    if (anchor !== undefined) return timeProblem(anchor);
    const next = chain.find((c, i) => i > 0 && !used.has(c) && issuedBy(cur, c));
    if (next === undefined) return `no issuer for ${cur.issuer.replace(/\n/g, ',')} among the intermediates or the trust anchors`;
    used.add(next);
    cur = next;
  }
  return 'chain too long';
}

/** Whether `key` is the private key of `cert`. */
export function keyMatches(cert: X509Certificate, key: KeyObject): boolean {
  try {
    return cert.checkPrivateKey(key);
  } catch {
    return false;
  }
}
