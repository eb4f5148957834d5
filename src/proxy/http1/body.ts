// Message bodies as a byte pump. The pump is told how the body is framed
// and fed the source's chunks by the connection that owns the sockets; it
// writes the body's bytes to the destination as they come and says where
// the body ends, so what follows (a pipelined request, an unexpected extra
// byte) goes back to the owner. Chunked bodies are forwarded as received
// (the decoder only tracks the chunk boundaries), or de-chunked for an
// HTTP/1.0 client. Backpressure: when the destination's write() returns
// false the source is paused until 'drain'.
import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import { HttpErrorCodes, httpError, type BodyFraming } from './head-parser.js';

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// eslint-disable-next-line no-control-regex -- field values may not hold controls other than HTAB
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
/** Framing fields have no meaning in trailers (RFC 9110 §6.5.1); llhttp refuses them there too. */
const FRAMING = new Set(['content-length', 'transfer-encoding']);

/**
 * A trailer section (field lines and the empty line that ends it) checked
 * line by line like header fields (RFC 9112 §7.1.2): a name that is a token,
 * a value without controls, no obs-fold, no framing field; throws
 * BPFMESH_E_HTTP_MALFORMED otherwise. `stripL5d`: l5d-* fields are left out
 * (inbound: only the proxy sets them). Returns the bytes to forward.
 */
export function checkTrailers(raw: Buffer, stripL5d: boolean): Buffer {
  const text = raw.toString('latin1');
  if (text === '\r\n') return raw;
  let out = '';
  let dropped = false;
  let pos = 0;
  const end = text.length - 2;
  while (pos < end) {
    const eol = text.indexOf('\r\n', pos);
    const line = text.slice(pos, eol);
    pos = eol + 2;
    const c0 = line.charCodeAt(0);
    if (c0 === 0x20 || c0 === 0x09) throw malformedChunk('obs-fold in trailers');
    const colon = line.indexOf(':');
    if (colon <= 0) throw malformedChunk('trailer line without a field name');
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) throw malformedChunk(`bad trailer name ${JSON.stringify(name.slice(0, 40))}`);
    if (BAD_VALUE.test(line.slice(colon + 1))) throw malformedChunk(`bad value for trailer ${name}`);
    const lower = name.toLowerCase();
    if (FRAMING.has(lower)) throw malformedChunk(`${lower} in trailers`);
    if (stripL5d && lower.startsWith('l5d-')) {
      dropped = true;
      continue;
    }
    out += `${line}\r\n`;
  }
  return dropped ? Buffer.from(`${out}\r\n`, 'latin1') : raw;
}

/** A chunk-size line (size and extensions) longer than this is refused. */
const MAX_SIZE_LINE = 4096;
/** A head and body part up to this size are joined into one write. */
const JOIN_MAX = 16 * 1024;
/** Trailer section limit. */
const MAX_TRAILERS = 64 * 1024;

const enum S {
  SIZE,
  EXT,
  SIZE_LF,
  DATA,
  DATA_CR,
  DATA_LF,
  TRAILER_START,
  TRAILER,
  TRAILER_LF,
  END_LF,
  DONE,
}

const malformedChunk = (what: string): Error => httpError(HttpErrorCodes.MALFORMED, `malformed chunked body: ${what}`);

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  if (l >= 0x61 && l <= 0x66) return l - 0x61 + 10;
  return -1;
}

/**
 * Tracks the structure of a chunked body (RFC 9112 §7.1) across arbitrary
 * splits of its bytes. Data is never copied: in de-chunk mode the data
 * parts are handed out as views of the input.
 */
export class ChunkedDecoder {
  private state = S.SIZE;
  private size = 0;
  private digits = 0;
  private lineLen = 0;
  private trailerLen = 0;
  /** The trailer section's bytes (held, not forwarded: see feed()). */
  private trailer: Buffer[] = [];
  /** Set by feed(): where in its input the bytes to forward as received end (the trailer section starts there). */
  forwardEnd = 0;

  get done(): boolean {
    return this.state === S.DONE;
  }

  /** The trailer section as received (field lines and the final CRLF), once done. */
  get trailerBytes(): Buffer {
    return this.trailer.length === 1 ? this.trailer[0]! : Buffer.concat(this.trailer);
  }

  private inTrailer(): boolean {
    return this.state === S.TRAILER_START || this.state === S.TRAILER || this.state === S.TRAILER_LF || this.state === S.END_LF || this.state === S.DONE;
  }

  /**
   * Consume buf[start..]; returns the offset just past the body's last byte
   * when the body ends in this buffer, or buf.length. When `data` is given,
   * the chunk data parts are pushed to it (de-chunking). Throws
   * BPFMESH_E_HTTP_MALFORMED on a framing error.
   */
  feed(buf: Buffer, start = 0, data?: Buffer[]): number {
    const wasTrailer = this.inTrailer();
    this.cut = -1;
    const used = this.scan(buf, start, data);
    // The trailer section is held back for checkTrailers(); what comes before it is forwarded as received.
    const from = wasTrailer ? start : this.cut;
    this.forwardEnd = from === -1 ? used : from;
    if (from !== -1 && used > from) this.trailer.push(buf.subarray(from, used));
    return used;
  }

  /** Where the trailer section began in the current feed() input, or -1. */
  private cut = -1;

  private scan(buf: Buffer, start: number, data?: Buffer[]): number {
    const n = buf.length;
    let i = start;
    while (i < n) {
      switch (this.state) {
        case S.DATA: {
          const take = Math.min(this.size, n - i);
          if (data !== undefined) data.push(take === n && i === 0 ? buf : buf.subarray(i, i + take));
          i += take;
          this.size -= take;
          if (this.size === 0) this.state = S.DATA_CR;
          continue;
        }
        case S.SIZE: {
          const c = buf[i]!;
          const v = hexValue(c);
          if (v !== -1) {
            if (++this.digits > 16) throw malformedChunk('chunk size too long');
            this.size = this.size * 16 + v;
            if (this.size > Number.MAX_SAFE_INTEGER) throw malformedChunk('chunk size too large');
          } else if (this.digits === 0) {
            throw malformedChunk('expected a chunk size');
          } else if (c === 0x0d) {
            this.state = S.SIZE_LF;
          } else if (c === 0x3b) {
            // ";ext". Whitespace between the size and ";" (BWS) is refused, as llhttp does:
            // "5 ", "5 junk" and "5 6" must not mean different sizes to different hops.
            this.state = S.EXT;
          } else {
            throw malformedChunk('bad chunk size');
          }
          if (++this.lineLen > MAX_SIZE_LINE) throw malformedChunk('chunk size line too long');
          i++;
          continue;
        }
        case S.EXT: {
          const c = buf[i]!;
          if (c === 0x0d) this.state = S.SIZE_LF;
          else if ((c < 0x20 && c !== 0x09) || c === 0x7f) throw malformedChunk('control character in chunk extension');
          if (++this.lineLen > MAX_SIZE_LINE) throw malformedChunk('chunk size line too long');
          i++;
          continue;
        }
        case S.SIZE_LF:
          if (buf[i] !== 0x0a) throw malformedChunk('expected LF after chunk size');
          i++;
          this.lineLen = 0;
          this.digits = 0;
          this.state = this.size === 0 ? S.TRAILER_START : S.DATA;
          if (this.size === 0) this.cut = i;
          continue;
        case S.DATA_CR:
          if (buf[i] !== 0x0d) throw malformedChunk('expected CRLF after chunk data');
          i++;
          this.state = S.DATA_LF;
          continue;
        case S.DATA_LF:
          if (buf[i] !== 0x0a) throw malformedChunk('expected CRLF after chunk data');
          i++;
          this.state = S.SIZE;
          continue;
        case S.TRAILER_START:
          if (buf[i] === 0x0d) {
            this.state = S.END_LF;
            i++;
            continue;
          }
          this.state = S.TRAILER;
          continue;
        case S.TRAILER: {
          const c = buf[i]!;
          if (c === 0x0d) this.state = S.TRAILER_LF;
          else if (c === 0x0a) throw malformedChunk('bare LF in trailers');
          if (++this.trailerLen > MAX_TRAILERS) throw malformedChunk('trailers too large');
          i++;
          continue;
        }
        case S.TRAILER_LF:
          if (buf[i] !== 0x0a) throw malformedChunk('expected LF after trailer');
          i++;
          this.state = S.TRAILER_START;
          continue;
        case S.END_LF:
          if (buf[i] !== 0x0a) throw malformedChunk('expected LF after last chunk');
          this.state = S.DONE;
          return i + 1;
        case S.DONE:
          return i;
      }
    }
    return n;
  }
}

/**
 * One chunk of a chunked body (size line, data, CRLF) as one corked write.
 * Every part is always written; the result is write()'s for the whole: false
 * when `dst` is over its high-water mark and the source should wait for
 * 'drain'. (Chaining the three writes with && stopped at the first false and
 * dropped the rest of the chunk.)
 */
export function writeChunk(dst: Writable, data: Buffer): boolean {
  dst.cork();
  dst.write(`${data.length.toString(16)}\r\n`, 'latin1');
  dst.write(data);
  const ok = dst.write('\r\n', 'latin1');
  dst.uncork();
  return ok;
}

/**
 * Forwards one body from `src` to `dst`. The owner calls push() with each
 * chunk read from src; push returns how many bytes of the chunk belonged to
 * the body (when `done` turns true the rest is the owner's), and eof() when
 * src ends.
 */
export class BodyPump {
  done: boolean;
  /** Body bytes written to dst (after de-chunking). */
  written = 0;
  private remaining: number;
  private readonly chunked: ChunkedDecoder | null;
  private readonly parts: Buffer[] | undefined;
  private waitingDrain = false;
  /** A head to send along with the first body bytes (pushFirst). */
  private prefix: Buffer | null = null;

  constructor(
    private readonly src: Socket,
    private readonly dst: Writable,
    readonly framing: BodyFraming,
    contentLength: number,
    /** Write only the data of a chunked body (for an HTTP/1.0 peer, or an HTTP/2 stream). */
    dechunk = false,
    /** Leave l5d-* fields out of the trailers (an inbound request). */
    private readonly stripL5d = false,
  ) {
    this.done = framing === 'none' || (framing === 'length' && contentLength === 0);
    this.remaining = framing === 'length' ? contentLength : 0;
    this.chunked = framing === 'chunked' ? new ChunkedDecoder() : null;
    this.parts = framing === 'chunked' && dechunk ? [] : undefined;
  }

  /**
   * Write `head` and then the body's part of `chunk`, as one write when the
   * part is small: a write of two buffers (writev) costs about three times a
   * write of one on loopback, and small messages are the common case.
   */
  pushFirst(head: Buffer, chunk: Buffer): number {
    this.prefix = head;
    let used: number;
    try {
      used = this.push(chunk);
    } finally {
      if (this.prefix !== null) {
        const h = this.prefix;
        this.prefix = null;
        this.send(h);
      }
    }
    return used;
  }

  /** Forward the body's part of `chunk`; returns the number of bytes of it that were body. Throws on a chunked framing error. */
  push(chunk: Buffer): number {
    if (this.done || chunk.length === 0) return 0;
    let used: number;
    switch (this.framing) {
      case 'length':
        used = Math.min(this.remaining, chunk.length);
        this.remaining -= used;
        this.write(used === chunk.length ? chunk : chunk.subarray(0, used));
        if (this.remaining === 0) this.finish();
        return used;
      case 'close':
        this.write(chunk);
        return chunk.length;
      case 'chunked': {
        const dec = this.chunked!;
        const parts = this.parts;
        used = dec.feed(chunk, 0, parts);
        if (parts === undefined) {
          const fwd = dec.forwardEnd;
          if (fwd > 0) this.write(fwd === chunk.length ? chunk : chunk.subarray(0, fwd));
          if (dec.done) this.write(checkTrailers(dec.trailerBytes, this.stripL5d));
        } else if (parts.length === 1) {
          this.write(parts[0]!);
          parts.length = 0;
        } else if (parts.length > 1) {
          this.dst.cork(); // one writev for the data parts of this read
          for (const p of parts) this.write(p);
          this.dst.uncork();
          parts.length = 0;
        }
        if (dec.done) this.finish();
        return used;
      }
      default:
        return 0;
    }
  }

  /** The source ended: true when that completes the body (close-delimited), false when the body was cut short. */
  eof(): boolean {
    if (this.done) return true;
    if (this.framing === 'close') {
      this.finish();
      return true;
    }
    this.stop();
    return false;
  }

  /** Stop waiting for 'drain' (the owner is tearing down or took over the sockets). */
  stop(): void {
    if (this.waitingDrain) {
      this.waitingDrain = false;
      this.dst.removeListener('drain', this.onDrain);
    }
  }

  private finish(): void {
    this.done = true;
    this.stop();
  }

  private write(b: Buffer): void {
    if (b.length === 0) return;
    this.written += b.length;
    if (this.prefix !== null) {
      const h = this.prefix;
      this.prefix = null;
      if (b.length <= JOIN_MAX) return this.send(Buffer.concat([h, b], h.length + b.length));
      this.dst.write(h); // a large body: the copy would cost more than the extra write
    }
    this.send(b);
  }

  private send(b: Buffer): void {
    if (!this.dst.write(b) && !this.waitingDrain && !this.done) {
      this.waitingDrain = true;
      this.src.pause();
      this.dst.once('drain', this.onDrain);
    }
  }

  private readonly onDrain = (): void => {
    this.waitingDrain = false;
    if (!this.done && !this.src.destroyed) this.src.resume();
  };
}
