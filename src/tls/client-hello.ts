// Reads the SNI from the first bytes of a connection: TLS record header(s),
// then the ClientHello handshake message and its server_name extension
// (RFC 8446 4.1.2, RFC 6066 3). Pure and incremental: call it again with
// more bytes while it answers 'more'. It decides as early as the bytes
// allow, so a plaintext protocol is told apart on its first byte or three.
// Unlike linkerd2-proxy's parser, a ClientHello split over several
// handshake records is reassembled (the bound is the caller's byte limit).

export type HelloVerdict =
  | { kind: 'more' }
  /** Not a TLS ClientHello (or a malformed one): plaintext for the next layer. */
  | { kind: 'not_tls' }
  /** A ClientHello; `sni` is undefined when it has no (valid) host_name, or it could not be inspected within the limit. */
  | { kind: 'client_hello'; sni: string | undefined };

const HANDSHAKE = 22;
const CLIENT_HELLO = 1;
const MAX_RECORD = 1 << 14; // TLSPlaintext.length limit
const EXT_SERVER_NAME = 0;
const HOST_NAME = 0;

const MORE: HelloVerdict = { kind: 'more' };
const NOT_TLS: HelloVerdict = { kind: 'not_tls' };
const helloWith = (sni: string | undefined): HelloVerdict => ({ kind: 'client_hello', sni });

// A DNS name as Linkerd's identity names are: LDH labels (underscore
// tolerated), no empty label; anything else counts as no SNI, as in Linkerd.
const DNS_NAME = /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

/**
 * Classifies `buf` (every byte read so far). `max` bounds the bytes looked
 * at: a ClientHello that does not fit is reported without SNI.
 */
export function parseClientHello(buf: Buffer, max = 16 * 1024): HelloVerdict {
  const fragments: Buffer[] = [];
  let have = 0;
  let off = 0;
  for (;;) {
    // Record header: type, legacy_record_version {3, 1..3}, length.
    if (buf.length <= off) return MORE;
    if (buf[off] !== HANDSHAKE) return NOT_TLS;
    if (buf.length <= off + 1) return MORE;
    if (buf[off + 1] !== 3) return NOT_TLS;
    if (buf.length <= off + 2) return MORE;
    const minor = buf[off + 2]!;
    if (minor < 1 || minor > 3) return NOT_TLS;
    if (buf.length < off + 5) return MORE;
    const len = buf.readUInt16BE(off + 3);
    if (len === 0 || len > MAX_RECORD) return NOT_TLS;
    const body = buf.subarray(off + 5, Math.min(buf.length, off + 5 + len));
    fragments.push(body);
    have += body.length;

    const hs = fragments.length === 1 ? body : Buffer.concat(fragments, have);
    if (have >= 1 && hs[0] !== CLIENT_HELLO) return NOT_TLS;
    if (have >= 4) {
      const helloLen = hs.readUIntBE(1, 3);
      // Too big to inspect within the limit: TLS, SNI unknown.
      if (5 + 4 + helloLen > max) return helloWith(undefined);
      if (have >= 4 + helloLen) return parseHello(hs.subarray(4, 4 + helloLen));
    }
    if (body.length < len) return MORE;
    off += 5 + len;
    if (off >= max) return helloWith(undefined);
  }
}

/** ClientHello body: version, random, session_id, cipher_suites, compression_methods, extensions. */
function parseHello(b: Buffer): HelloVerdict {
  let p = 0;
  const end = b.length;
  if (end < 2 + 32 + 1) return NOT_TLS;
  // legacy_version: 0x0303 for TLS 1.2 and 1.3; older clients 0x0301/0x0302.
  if (b[0] !== 3 || b[1]! < 1 || b[1]! > 3) return NOT_TLS;
  p = 2 + 32;
  const sid = b[p]!;
  if (sid > 32) return NOT_TLS;
  p += 1 + sid;
  if (p + 2 > end) return NOT_TLS;
  const suites = b.readUInt16BE(p);
  if (suites < 2 || suites % 2 !== 0) return NOT_TLS;
  p += 2 + suites;
  if (p + 1 > end) return NOT_TLS;
  const comp = b[p]!;
  if (comp < 1) return NOT_TLS;
  p += 1 + comp;
  if (p > end) return NOT_TLS;
  if (p === end) return helloWith(undefined); // no extensions at all
  if (p + 2 > end) return NOT_TLS;
  const extEnd = p + 2 + b.readUInt16BE(p);
  if (extEnd > end) return NOT_TLS;
  p += 2;
  while (p < extEnd) {
    if (p + 4 > extEnd) return NOT_TLS;
    const type = b.readUInt16BE(p);
    const len = b.readUInt16BE(p + 2);
    p += 4;
    if (p + len > extEnd) return NOT_TLS;
    if (type === EXT_SERVER_NAME) return helloWith(hostName(b.subarray(p, p + len)));
    p += len;
  }
  return helloWith(undefined);
}

/** server_name extension body: ServerNameList; the first host_name entry counts. */
function hostName(ext: Buffer): string | undefined {
  if (ext.length < 2) return undefined;
  const listEnd = 2 + ext.readUInt16BE(0);
  if (listEnd > ext.length) return undefined;
  let p = 2;
  while (p + 3 <= listEnd) {
    const nameType = ext[p]!;
    const len = ext.readUInt16BE(p + 1);
    p += 3;
    if (p + len > listEnd) return undefined;
    if (nameType === HOST_NAME) {
      const name = ext.toString('latin1', p, p + len);
      return DNS_NAME.test(name) ? name : undefined;
    }
    p += len;
  }
  return undefined;
}
