// Protocol detection as a layer (linkerd2-proxy's `detect`): read once, up to
// 1024 bytes, within a timeout; decide HTTP/2 (the client preface), HTTP/1
// (a request line) or opaque; hand the bytes read back for replay. The
// socket is left paused, so whatever arrives after detection stays in the
// socket for the next layer and nothing is lost. Being paused explicitly, it
// needs resume() (or pipe()) to flow again: a new 'data' listener alone does
// not restart it.
import { METHODS } from 'node:http';
import type { Socket } from 'node:net';
import type { Protocol } from './types.js';

export interface DetectOptions {
  /** Linkerd's default is 10 s. */
  timeoutMs: number;
  /** How many bytes may be inspected; Linkerd reads at most 1024. */
  maxBytes?: number;
}

export interface DetectResult {
  protocol: Protocol;
  /** Every byte read from the socket, to be replayed by the next layer (may exceed maxBytes when one read returned more). */
  buffered: Buffer;
  timedOut: boolean;
  /** The peer closed its side (or the socket failed) during detection; 'end' has already been emitted. */
  eof: boolean;
  /** performance.now() of the first byte read, when there was one: an HTTP/1 head's time bound counts from it. */
  firstByteAt?: number;
}

export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const DEFAULT_MAX = 1024;

type Verdict = Protocol | 'more';

// RFC 9110 tchar, as a table indexed by byte.
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") TCHAR[c.charCodeAt(0)] = 1;

const HTTP_1 = 'HTTP/1.';

/**
 * Classify a request line prefix: 'http1' when a complete `METHOD SP target SP
 * HTTP/1.x CRLF` is there, 'more' when the bytes could still become one,
 * 'opaque' as soon as they cannot.
 */
export function classifyRequestLine(b: Buffer, n = b.length): Verdict {
  let i = 0;
  while (i < n && TCHAR[b[i]!] === 1) i++;
  if (i === n) return 'more';
  if (i === 0 || b[i] !== 0x20) return 'opaque';
  const t = ++i;
  // request-target: visible ASCII; obs-text and controls are not valid here
  while (i < n && b[i]! > 0x20 && b[i]! < 0x7f) i++;
  if (i === n) return 'more';
  if (i === t || b[i] !== 0x20) return 'opaque';
  i++;
  for (let k = 0; k < HTTP_1.length; k++, i++) {
    if (i === n) return 'more';
    if (b[i] !== HTTP_1.charCodeAt(k)) return 'opaque';
  }
  if (i === n) return 'more';
  if (b[i]! < 0x30 || b[i]! > 0x39) return 'opaque';
  if (++i === n) return 'more';
  if (b[i] !== 0x0d) return 'opaque';
  if (++i === n) return 'more';
  return b[i] === 0x0a ? 'http1' : 'opaque';
}

// The methods Node's HTTP parser (llhttp) accepts: whatever it would parse as
// a request must be handled as HTTP here, or a client could skip the HTTP
// layer (and its header filtering) by sending a request that only the app
// reads as one.
// PRI is not in http.METHODS, but llhttp reads "PRI *\r\n" as a request
// (found by test/unit/http1-differential.test.ts); the HTTP/2 preface is
// told apart before this.
const LLHTTP_METHODS = [...METHODS, 'PRI'];
const KNOWN_METHODS = new Set(LLHTTP_METHODS);
const METHOD_PREFIXES = new Set<string>();
for (const m of LLHTTP_METHODS) for (let k = 1; k <= m.length; k++) METHOD_PREFIXES.add(m.slice(0, k));
const MAX_METHOD = Math.max(...LLHTTP_METHODS.map((m) => m.length));

const isCrLf = (c: number): boolean => c === 0x0d || c === 0x0a;

/**
 * The start of an HTTP/1 request as llhttp reads one: empty lines (CR or LF)
 * skipped, then a method it knows and a space. 'http1' once that is there,
 * 'more' while the bytes are a prefix of it, 'opaque' otherwise.
 */
export function classifyRequestStart(b: Buffer, n = b.length): Verdict {
  let i = 0;
  while (i < n && isCrLf(b[i]!)) i++;
  const m = i;
  while (i < n && i - m <= MAX_METHOD && TCHAR[b[i]!] === 1) i++;
  const method = b.toString('latin1', m, i);
  if (i === n) return method === '' || METHOD_PREFIXES.has(method) ? 'more' : 'opaque';
  return b[i] === 0x20 && KNOWN_METHODS.has(method) ? 'http1' : 'opaque';
}

/** Decide from the bytes so far (at most `max` of them are looked at). */
export function classify(buf: Buffer, max = DEFAULT_MAX): Verdict {
  const n = Math.min(buf.length, max);
  if (n === 0) return 'more';
  const p = Math.min(n, H2_PREFACE.length);
  if (buf.compare(H2_PREFACE, 0, p, 0, p) === 0) {
    if (p === H2_PREFACE.length) return 'h2';
    return n < max ? 'more' : 'opaque';
  }
  const start = classifyRequestStart(buf, n);
  if (start === 'http1') return 'http1';
  // Only empty lines so far, as many as may be inspected: llhttp would still be waiting for a request.
  if (start === 'more' && n >= max && isCrLf(buf[n - 1]!)) return 'http1';
  // Linkerd's own test: a whole `TOKEN SP target SP HTTP/1.x CRLF` line (any token).
  const v = classifyRequestLine(buf, n);
  if (v !== 'more') return start === 'more' && v === 'opaque' ? 'more' : v;
  // A request line longer than what we may inspect is not one we accept.
  return n >= max ? 'opaque' : 'more';
}

/**
 * Whether bytes that never made up their mind (a timeout) are the start of
 * an HTTP request: a slow client is then served (and answered 408) as HTTP,
 * never relayed unfiltered.
 */
export function isRequestPrefix(buf: Buffer): boolean {
  if (buf.length === 0) return false;
  const p = Math.min(buf.length, H2_PREFACE.length);
  if (buf.compare(H2_PREFACE, 0, p, 0, p) === 0) return true;
  return classifyRequestStart(buf, Math.min(buf.length, DEFAULT_MAX)) !== 'opaque';
}

/**
 * Detect the protocol of an accepted connection. Never rejects: a socket
 * error or an EOF gives 'opaque' with what was read (and `eof` set), a
 * timeout gives 'opaque' with `timedOut` set, or 'http1' (also `timedOut`)
 * when what came so far is the start of a request.
 */
export function detectProtocol(sock: Socket, opts: DetectOptions): Promise<DetectResult> {
  const max = opts.maxBytes ?? DEFAULT_MAX;
  return new Promise((resolve) => {
    let buffered: Buffer = Buffer.alloc(0);
    let settled = false;
    let firstByteAt: number | undefined;
    const finish = (protocol: Protocol, timedOut: boolean, eof: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.pause();
      sock.removeListener('data', onData);
      sock.removeListener('end', onEnd);
      sock.removeListener('error', onError);
      sock.removeListener('close', onEnd);
      resolve(firstByteAt === undefined ? { protocol, buffered, timedOut, eof } : { protocol, buffered, timedOut, eof, firstByteAt });
    };
    const onData = (chunk: Buffer): void => {
      firstByteAt ??= performance.now();
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const v = classify(buffered, max);
      if (v !== 'more') finish(v, false, false);
    };
    // The owner of the socket sees errors through its own listeners; here an
    // error only ends detection (the socket is destroyed by then).
    const onError = (): void => finish('opaque', false, true);
    const onEnd = (): void => finish('opaque', false, true);
    // A request that is still arriving when time is up is HTTP (slowloris gets its 408 there).
    const timer = setTimeout(() => finish(isRequestPrefix(buffered) ? 'http1' : 'opaque', true, false), opts.timeoutMs);
    if (sock.destroyed || sock.readableEnded) return finish('opaque', false, true);
    sock.on('data', onData);
    sock.on('end', onEnd);
    sock.on('error', onError);
    sock.on('close', onEnd);
    sock.resume();
  });
}
