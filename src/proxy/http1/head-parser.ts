// HTTP/1.x message heads: accumulate bytes up to the blank line, parse the
// start line and the header fields, and work out how the body is framed.
// Only heads are parsed; bodies move as bytes (body.ts). The head is kept as
// received (bytes and a latin1 string over them) so that forwarding it is
// either a write of the same bytes or a few string slices, never a
// re-serialisation from objects.
import { BpfmeshError, ErrorCodes } from '../../errors.js';

export const HttpErrorCodes = {
  MALFORMED: ErrorCodes.HTTP_MALFORMED,
  HEADERS_TOO_LARGE: ErrorCodes.HTTP_HEADERS_TOO_LARGE,
} as const;

export const DEFAULT_MAX_HEAD_BYTES = 64 * 1024;

/** How the body that follows a head ends. */
export type BodyFraming =
  | 'none' // no body (or Content-Length: 0)
  | 'length' // exactly contentLength bytes
  | 'chunked' // chunked transfer coding is the last coding
  | 'close'; // until the connection closes (responses only)

/** Per-header flags: which fields a hop must drop or handle. */
export const HeaderFlag = {
  /** Connection-specific: Connection, Keep-Alive, Proxy-Connection, TE, Trailer, and fields named in Connection. */
  HOP: 1,
  /** Upgrade: hop-by-hop, but kept when the connection is upgraded. */
  UPGRADE: 2,
  /** Transfer-Encoding: forwarded when the body is forwarded as is, dropped when de-chunked. */
  TRANSFER_ENCODING: 4,
  /** l5d-* (l5d-client-id and the rest): set by the proxies only, so a client's own are dropped inbound. */
  CLIENT_ID: 8,
} as const;

interface HeadCommon {
  /** 0 for HTTP/1.0, 1 for HTTP/1.1 (and for any later 1.x, which is to be treated as 1.1). */
  versionMinor: number;
  /** The minor version digit as received: anything but 1 means the start line is rewritten to the proxy's own HTTP/1.1. */
  wireMinor: number;
  /** Flat [name, value, name, value, ...]: names as received, values without surrounding whitespace. */
  headers: string[];
  framing: BodyFraming;
  /** The body's length when framing is 'length', 0 for 'none', -1 otherwise. */
  contentLength: number;
  /** Whether the sender allows the connection to persist after this message. */
  keepAlive: boolean;
  /** Connection: upgrade together with an Upgrade field. */
  upgrade: boolean;
  /** The head's bytes as received, start line through the blank line. */
  raw: Buffer;
  /** `raw` as a latin1 string. */
  text: string;
  /** Per header: [start, end) of its line in `text`, CRLF included. */
  lines: number[];
  /** Per header: HeaderFlag bits. */
  flags: number[];
  /** End of the start line in `text`, CRLF included. */
  startLineEnd: number;
}

export interface RequestHead extends HeadCommon {
  kind: 'request';
  method: string;
  target: string;
  host: string | undefined;
  /** Expect: 100-continue (only meaningful from a 1.1 client). */
  expectContinue: boolean;
}

export interface ResponseHead extends HeadCommon {
  kind: 'response';
  statusCode: number;
  reason: string;
}

export function httpError(code: string, message: string): BpfmeshError {
  return new BpfmeshError(code, message);
}
const malformed = (what: string): BpfmeshError => httpError(HttpErrorCodes.MALFORMED, `malformed HTTP/1 message: ${what}`);

const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');

/**
 * Accumulates bytes until a head is complete. After push() returns true,
 * `head` holds the head's bytes and `rest` what followed it in the input.
 */
export class HeadReader {
  head: Buffer = CRLFCRLF;
  rest: Buffer = CRLFCRLF;
  private pending: Buffer | null = null;

  /** skipLeadingCrlf: a server ignores empty lines (CR, LF) before a request line (RFC 9112 §2.2). */
  constructor(
    readonly maxBytes = DEFAULT_MAX_HEAD_BYTES,
    private readonly skipLeadingCrlf = false,
  ) {}

  get buffering(): boolean {
    return this.pending !== null;
  }

  reset(): void {
    this.pending = null;
  }

  /** Throws BPFMESH_E_HTTP_HEADERS_TOO_LARGE when no blank line comes within maxBytes. */
  push(chunk: Buffer): boolean {
    let buf = chunk;
    let from = 0;
    if (this.pending !== null) {
      from = Math.max(0, this.pending.length - 3);
      buf = Buffer.concat([this.pending, chunk]);
    } else if (this.skipLeadingCrlf) {
      // llhttp skips any CR or LF here; so must we, or a request it reads would be refused.
      let i = 0;
      while (i < buf.length && (buf[i] === 0x0d || buf[i] === 0x0a)) i++;
      if (i > 0) buf = buf.subarray(i);
      if (buf.length === 0) return false;
    }
    const at = buf.indexOf(CRLFCRLF, from);
    if (at === -1 || at + 4 > this.maxBytes) {
      if (buf.length >= this.maxBytes) {
        this.pending = null;
        throw httpError(HttpErrorCodes.HEADERS_TOO_LARGE, `headers too large (more than ${this.maxBytes} bytes)`);
      }
      // Socket chunks are fresh allocations: keeping a view is safe.
      this.pending = buf;
      return false;
    }
    this.pending = null;
    this.head = buf.subarray(0, at + 4);
    this.rest = buf.subarray(at + 4);
    return true;
  }
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Field values: no controls other than HTAB (which also rules out bare CR and LF).
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP\/1\.(\d)$/;
// eslint-disable-next-line no-control-regex -- a reason phrase may not contain controls
const STATUS_LINE = /^HTTP\/1\.(\d) ([1-9]\d\d)(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?$/;
const DIGITS = /^\d{1,15}$/;

interface Parsed {
  headers: string[];
  lines: number[];
  flags: number[];
  contentLength: number; // -1 when absent
  te: string | undefined; // joined Transfer-Encoding values
  connClose: boolean;
  connKeepAlive: boolean;
  connUpgrade: boolean;
  hasUpgrade: boolean;
  host: string | undefined;
  hostCount: number;
  expectContinue: boolean;
}

function parseContentLength(v: string, prev: number): number {
  // A list ("5, 5") or a second field, even with the same value, is refused
  // (RFC 9110 §8.6 allows that; llhttp does it): forwarding either as
  // received would let the next hop read the framing differently.
  if (prev !== -1) throw malformed('more than one content-length');
  if (!DIGITS.test(v)) throw malformed(`bad content-length ${JSON.stringify(v.slice(0, 40))}`);
  return Number(v);
}

/** Parse the header lines of `text` from `pos` (after the start line) to the blank line. */
function parseFields(text: string, pos: number): Parsed {
  const p: Parsed = {
    headers: [],
    lines: [],
    flags: [],
    contentLength: -1,
    te: undefined,
    connClose: false,
    connKeepAlive: false,
    connUpgrade: false,
    hasUpgrade: false,
    host: undefined,
    hostCount: 0,
    expectContinue: false,
  };
  let named: string[] | undefined; // other fields named in Connection
  const end = text.length - 2; // the final CRLF of the blank line
  while (pos < end) {
    const eol = text.indexOf('\r\n', pos);
    const colon = text.indexOf(':', pos);
    if (colon === -1 || colon > eol) throw malformed('header line without a colon');
    const name = text.slice(pos, colon);
    if (!TOKEN.test(name)) throw malformed(`bad header name ${JSON.stringify(name.slice(0, 40))}`);
    let vs = colon + 1;
    let ve = eol;
    while (vs < ve && (text.charCodeAt(vs) === 0x20 || text.charCodeAt(vs) === 0x09)) vs++;
    while (ve > vs && (text.charCodeAt(ve - 1) === 0x20 || text.charCodeAt(ve - 1) === 0x09)) ve--;
    const value = text.slice(vs, ve);
    if (BAD_VALUE.test(value)) throw malformed(`bad value for header ${name}`);
    let flag = 0;
    // l5d-*: only the proxies set these (first letter checked before any lower-casing).
    if (name.length > 4 && (name.charCodeAt(0) | 0x20) === 0x6c && name.slice(0, 4).toLowerCase() === 'l5d-') flag = HeaderFlag.CLIENT_ID;
    // Only names whose length matches one we care about are lower-cased.
    switch (name.length) {
      case 2:
        if (name.toLowerCase() === 'te') flag = HeaderFlag.HOP;
        break;
      case 4:
        if (name.toLowerCase() === 'host') {
          p.host = value;
          p.hostCount++;
        }
        break;
      case 6:
        if (name.toLowerCase() === 'expect' && value.toLowerCase() === '100-continue') p.expectContinue = true;
        break;
      case 7: {
        const l = name.toLowerCase();
        if (l === 'trailer') flag = HeaderFlag.HOP;
        else if (l === 'upgrade') {
          flag = HeaderFlag.UPGRADE;
          p.hasUpgrade = true;
        }
        break;
      }
      case 10: {
        const l = name.toLowerCase();
        if (l === 'keep-alive') flag = HeaderFlag.HOP;
        else if (l === 'connection') {
          flag = HeaderFlag.HOP;
          for (const raw of value.split(',')) {
            const tok = raw.trim().toLowerCase();
            if (tok === 'close') p.connClose = true;
            else if (tok === 'keep-alive') p.connKeepAlive = true;
            else if (tok === 'upgrade') p.connUpgrade = true;
            else if (tok !== '') (named ??= []).push(tok);
          }
        }
        break;
      }
      case 14:
        if (name.toLowerCase() === 'content-length') p.contentLength = parseContentLength(value, p.contentLength);
        break;
      case 16:
        if (name.toLowerCase() === 'proxy-connection') flag = HeaderFlag.HOP;
        break;
      case 17:
        if (name.toLowerCase() === 'transfer-encoding') {
          flag = HeaderFlag.TRANSFER_ENCODING;
          p.te = p.te === undefined ? value : `${p.te}, ${value}`;
        }
        break;
    }
    p.headers.push(name, value);
    p.lines.push(pos, eol + 2);
    p.flags.push(flag);
    pos = eol + 2;
  }
  if (named !== undefined) {
    // Fields the sender declared connection-specific (RFC 9110 §7.6.1); the
    // framing fields are never dropped this way.
    for (let i = 0; i < p.flags.length; i++) {
      const n = p.headers[2 * i]!;
      if (p.flags[i] !== 0) continue;
      const l = n.toLowerCase();
      if (named.includes(l) && l !== 'content-length' && l !== 'host') p.flags[i] = HeaderFlag.HOP;
    }
  }
  return p;
}

/** The codings of Transfer-Encoding: 'chunked' when chunked is last, 'other' otherwise. */
function teKind(te: string): 'chunked' | 'other' {
  const codings = te.split(',').map((c) => c.trim().toLowerCase());
  const chunked = codings.filter((c) => c === 'chunked').length;
  if (chunked > 1) throw malformed('chunked applied more than once');
  return codings[codings.length - 1] === 'chunked' ? 'chunked' : 'other';
}

function keepAliveOf(minor: number, p: Parsed): boolean {
  if (p.connClose) return false;
  return minor >= 1 || p.connKeepAlive;
}

/** Parse a complete request head (as returned by HeadReader). */
export function parseRequestHead(raw: Buffer): RequestHead {
  const text = raw.toString('latin1');
  const sl = text.indexOf('\r\n');
  const m = REQUEST_LINE.exec(text.slice(0, sl));
  if (m === null) throw malformed('bad request line');
  const p = parseFields(text, sl + 2);
  const wireMinor = Number(m[3]);
  // HTTP/1.2-1.9 requests are refused, as llhttp refuses them: a request the
  // app's own parser would not read must not reach it rewritten as 1.1.
  if (wireMinor > 1) throw malformed(`unsupported version HTTP/1.${wireMinor}`);
  const minor = wireMinor;
  if (p.hostCount > 1) throw malformed('more than one Host header');
  if (minor === 1 && p.hostCount === 0) throw malformed('HTTP/1.1 request without Host');
  let framing: BodyFraming = 'none';
  let contentLength = 0;
  if (p.te !== undefined) {
    if (p.contentLength !== -1) throw malformed('both content-length and transfer-encoding');
    // A request body must be self-delimiting: only chunked as the last coding frames it.
    if (teKind(p.te) !== 'chunked') throw malformed('transfer-encoding without chunked last');
    framing = 'chunked';
    contentLength = -1;
  } else if (p.contentLength > 0) {
    framing = 'length';
    contentLength = p.contentLength;
  }
  return {
    kind: 'request',
    method: m[1]!,
    target: m[2]!,
    versionMinor: minor,
    wireMinor,
    headers: p.headers,
    framing,
    contentLength,
    // HTTP/1.0 with Transfer-Encoding: faulty framing, close after it (RFC 9112 §6.1).
    keepAlive: keepAliveOf(minor, p) && !(minor === 0 && p.te !== undefined),
    upgrade: p.connUpgrade && p.hasUpgrade,
    raw,
    text,
    lines: p.lines,
    flags: p.flags,
    startLineEnd: sl + 2,
    host: p.host,
    expectContinue: minor >= 1 && p.expectContinue,
  };
}

/**
 * Parse a complete response head. `noBody`: the response answers a HEAD
 * request (or a CONNECT, whose 2xx turns the connection into a tunnel).
 */
export function parseResponseHead(raw: Buffer, noBody = false): ResponseHead {
  const text = raw.toString('latin1');
  const sl = text.indexOf('\r\n');
  const m = STATUS_LINE.exec(text.slice(0, sl));
  if (m === null) throw malformed('bad status line');
  const p = parseFields(text, sl + 2);
  const wireMinor = Number(m[1]);
  const minor = Math.min(wireMinor, 1);
  const statusCode = Number(m[2]);
  if (p.te !== undefined && p.contentLength !== -1) throw malformed('both content-length and transfer-encoding');
  let framing: BodyFraming;
  let contentLength = -1;
  if (noBody || statusCode < 200 || statusCode === 204 || statusCode === 304) {
    framing = 'none';
    contentLength = 0;
  } else if (p.te !== undefined) {
    framing = teKind(p.te) === 'chunked' ? 'chunked' : 'close';
  } else if (p.contentLength !== -1) {
    framing = p.contentLength === 0 ? 'none' : 'length';
    contentLength = p.contentLength;
  } else {
    framing = 'close';
  }
  return {
    kind: 'response',
    statusCode,
    reason: m[3] ?? '',
    versionMinor: minor,
    wireMinor,
    headers: p.headers,
    framing,
    contentLength,
    keepAlive: keepAliveOf(minor, p) && framing !== 'close' && !(minor === 0 && p.te !== undefined),
    upgrade: p.connUpgrade && p.hasUpgrade,
    raw,
    text,
    lines: p.lines,
    flags: p.flags,
    startLineEnd: sl + 2,
  };
}

/** First value of a header, by case-insensitive name. */
export function getHeader(head: { headers: string[] }, name: string): string | undefined {
  const h = head.headers;
  for (let i = 0; i < h.length; i += 2) {
    const n = h[i]!;
    if (n.length === name.length && n.toLowerCase() === name) return h[i + 1];
  }
  return undefined;
}

/**
 * The head to forward: the original bytes when nothing changes, otherwise
 * the original text without the fields whose flags intersect `dropMask`,
 * with `startLine` (no CRLF) replacing the start line when given and
 * `extra` (complete "name: value\r\n" lines) appended. One Buffer either way.
 */
export function rewriteHead(head: HeadCommon, dropMask: number, startLine?: string, extra = ''): Buffer {
  const { text, lines, flags } = head;
  let drop = false;
  for (let i = 0; i < flags.length; i++) {
    if ((flags[i]! & dropMask) !== 0) {
      drop = true;
      break;
    }
  }
  if (!drop && startLine === undefined && extra === '') return head.raw;
  let out = startLine === undefined ? text.slice(0, head.startLineEnd) : `${startLine}\r\n`;
  // Copy runs of kept lines as single slices.
  let runStart = head.startLineEnd;
  for (let i = 0; i < flags.length; i++) {
    if ((flags[i]! & dropMask) === 0) continue;
    const ls = lines[2 * i]!;
    if (ls > runStart) out += text.slice(runStart, ls);
    runStart = lines[2 * i + 1]!;
  }
  const end = text.length - 2;
  if (end > runStart) out += text.slice(runStart, end);
  out += extra + '\r\n';
  return Buffer.from(out, 'latin1');
}
