// The differential corpus of issue #11: hand-made hostile HTTP/1 inputs and
// seeded variants of them. Each case is raw bytes; test/unit/http1-differential
// sends them to a node:http server directly (llhttp's verdict) and through
// the proxies, and compares.

export interface Case {
  name: string;
  bytes: Buffer;
}

const FORGE = 'l5d-client-id: forged.ns.serviceaccount.identity.linkerd.cluster.local';

/** The hand-made cases: the defects of the issue, and the classic smuggling inputs. */
export function handMade(): Case[] {
  const c = (name: string, s: string): Case => ({ name, bytes: Buffer.from(s, 'latin1') });
  const te = (body: string, extra = ''): string => `POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n${extra}\r\n${body}`;
  return [
    c('plain GET', 'GET /a HTTP/1.1\r\nHost: a\r\n\r\n'),
    c('forged head', `GET /a HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n\r\n`),
    c('leading CRLF', `\r\nGET /a HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n\r\n`),
    c('leading LF', `\n\nGET /a HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n\r\n`),
    c('double space', `GET  /a HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n\r\n`),
    c('double space 2', `GET /a  HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n\r\n`),
    c('long line', `GET /${'x'.repeat(2000)} HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n\r\n`),
    c('no version', `GET /x\r\n${FORGE}\r\n\r\n`),
    c('HTTP/0.9 version', `GET /a HTTP/0.9\r\nHost: a\r\n${FORGE}\r\n\r\n`),
    c('HTTP/2.0 version', `GET /a HTTP/2.0\r\nHost: a\r\n${FORGE}\r\n\r\n`),
    c('HTTP/1.2', `GET /a HTTP/1.2\r\nHost: a\r\n${FORGE}\r\n\r\n`),
    c('HTTP/1.0', `GET /a HTTP/1.0\r\n${FORGE}\r\n\r\n`),
    c('upper-case forged', `GET /a HTTP/1.1\r\nHost: a\r\nL5D-CLIENT-ID: x\r\n\r\n`),
    c('space before colon', `GET /a HTTP/1.1\r\nHost: a\r\nl5d-client-id : x\r\n\r\n`),
    c('obs-fold forged', `GET /a HTTP/1.1\r\nHost: a\r\nx-a: b\r\n l5d-client-id: x\r\n\r\n`),
    c('bare LF lines', `GET /a HTTP/1.1\nHost: a\n${FORGE}\n\n`),
    c('forged second request', `GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n\r\n`),
    c('forged trailer', te(`5\r\nhello\r\n0\r\n${FORGE}\r\n\r\n`)),
    c('trailer request line', te('5\r\nhello\r\n0\r\nGET /s HTTP/1.1\r\n\r\n')),
    c('trailer NUL', te('5\r\nhello\r\n0\r\nx: a\0b\r\n\r\n')),
    c('trailer obs-fold', te('5\r\nhello\r\n0\r\nx: a\r\n b\r\n\r\n')),
    c('trailer CL', te('5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n')),
    c('chunk size trailing space', te('5 \r\nhello\r\n0\r\n\r\n')),
    c('chunk size junk', te('5 junk\r\nhello\r\n0\r\n\r\n')),
    c('chunk size two numbers', te('5 6\r\nhello\r\n0\r\n\r\n')),
    c('chunk ext', te('5;a=b\r\nhello\r\n0\r\n\r\n')),
    c('CL list', 'POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello'),
    c('CL twice', 'POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello'),
    c('CL.TE', 'POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG'),
    c('TE.CL', 'POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n'),
    c('TE obfuscated', 'POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n'),
    c('TE space before colon', 'POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n'),
    c('TE twice', 'POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n'),
    c('1.0 chunked keep-alive', `POST /c HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n\r\n`),
    c('lower-case method', `get /a HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n\r\n`),
    c('unknown method', `FOO /a HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n\r\n`),
    c('PRI not a preface', `PRI /a HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n\r\n`),
    c('CONNECT', `CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n${FORGE}\r\n\r\n`),
    c('absolute form', `GET http://a/x HTTP/1.1\r\nHost: a\r\n${FORGE}\r\n\r\n`),
    c('NUL in header', `GET /a HTTP/1.1\r\nHost: a\r\nx: a\0b\r\n${FORGE}\r\n\r\n`),
    c('CR only', `GET /a HTTP/1.1\rHost: a\r${FORGE}\r\r`),
  ];
}

/** mulberry32: a small seeded PRNG, so a failing case can be named by its seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'get', 'FOO', 'PRI', 'M-SEARCH', 'PATCH'];
const PREFIXES = ['', '', '', '\r\n', '\n', '\r\n\r\n', ' ', '\t', '\0'];
const SEPS = [' ', ' ', ' ', '  ', '\t'];
const VERSIONS = ['HTTP/1.1', 'HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/1.2', 'HTTP/0.9', 'HTTP/2.0', '', 'HTTP/1.1 ', 'http/1.1'];
const EOLS = ['\r\n', '\r\n', '\r\n', '\r\n', '\n', '\r'];
const FORGED = ['l5d-client-id: x', 'L5D-Client-Id: x', 'l5d-client-id : x', 'l5d-client-id:x', 'l5d-orig-proto: HTTP/1.1', 'l5d-dst-override: evil:80', ' l5d-client-id: x', 'x-a: b\r\n\tl5d-client-id: x'];
const CLS = ['Content-Length: 5', 'Content-Length: 5', 'Content-Length: 5, 5', 'Content-Length: +5', 'Content-Length:  5 ', 'Content-Length: 05', 'Content-Length: 4', 'Content-Length: 6'];
const TES = ['Transfer-Encoding: chunked', 'Transfer-Encoding: chunked', 'Transfer-Encoding: Chunked', 'Transfer-Encoding: chunked, chunked', 'Transfer-Encoding: gzip', 'Transfer-Encoding:  chunked', 'Transfer-Encoding: chunked\t'];
const SIZES = ['5', '5', '5', '05', '5 ', '5;x=y', '5 ;x', '0x5', '5\t', '6', '4'];

/** One seeded variant: a request built from pieces, some of them hostile. */
export function variant(seed: number): Case {
  const r = rng(seed);
  const eol = pick(r, EOLS);
  const method = pick(r, METHODS);
  const body = r() < 0.5 ? (r() < 0.5 ? 'cl' : 'te') : 'none';
  const headers = ['Host: a'];
  if (r() < 0.6) headers.splice(Math.floor(r() * 2), 0, pick(r, FORGED));
  if (body === 'cl') headers.push(pick(r, CLS));
  if (body === 'te') headers.push(pick(r, TES));
  if (r() < 0.1) headers.push(pick(r, CLS));
  const target = r() < 0.05 ? `/${'y'.repeat(1100)}` : pick(r, ['/a', '/b?x=1', 'http://a/c', '*', '/%00']);
  const version = pick(r, VERSIONS);
  const line = `${method}${pick(r, SEPS)}${target}${version === '' ? '' : pick(r, SEPS)}${version}`;
  let s = `${pick(r, PREFIXES)}${line}${eol}${headers.join(eol)}${eol}${eol}`;
  if (body === 'cl') s += 'hello';
  if (body === 'te') {
    const trailer = r() < 0.5 ? `${pick(r, FORGED)}${eol}` : '';
    s += `${pick(r, SIZES)}${eol}hello${eol}0${eol}${trailer}${eol}`;
  }
  if (r() < 0.3) s += `GET /second HTTP/1.1\r\nHost: a\r\n${r() < 0.5 ? `${pick(r, FORGED)}\r\n` : ''}\r\n`;
  return { name: `variant seed=${seed}`, bytes: Buffer.from(s, 'latin1') };
}
