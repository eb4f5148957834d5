// Message bodies as a byte pump. The pump is told how the body is framed
// and fed the source's chunks by the connection that owns the sockets; it
// writes the body's bytes to the destination as they come and says where
// the body ends, so what follows (a pipelined request, an unexpected extra
// byte) goes back to the owner. Chunked bodies are forwarded as received
// (the decoder only tracks the chunk boundaries), or de-chunked for an
// HTTP/1.0 client. Backpressure: when the destination's write() returns
// false the source is paused until 'drain'.
import type { Socket } from 'node:net';
import { HttpErrorCodes, httpError, type BodyFraming } from './head-parser.js';

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

  get done(): boolean {
    return this.state === S.DONE;
  }

  /**
   * Consume buf[start..]; returns the offset just past the body's last byte
   * when the body ends in this buffer, or buf.length. When `data` is given,
   * the chunk data parts are pushed to it (de-chunking). Throws
   * BPFMESH_E_HTTP_MALFORMED on a framing error.
   */
  feed(buf: Buffer, start = 0, data?: Buffer[]): number {
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
          } else if (c === 0x3b || c === 0x20 || c === 0x09) {
            this.state = S.EXT; // ";ext" (with optional whitespace before it)
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
    private readonly dst: Socket,
    readonly framing: BodyFraming,
    contentLength: number,
    /** Write only the data of a chunked body (for an HTTP/1.0 peer). */
    dechunk = false,
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
        if (parts === undefined) this.write(used === chunk.length ? chunk : chunk.subarray(0, used));
        else if (parts.length === 1) {
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
