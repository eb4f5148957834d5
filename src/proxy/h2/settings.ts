// Tunables of the HTTP/2 forwarder, with defaults in one place.
import type { Logger } from '../../log/logger.js';

export type H2Log = Pick<Logger, 'debug' | 'info' | 'warn'>;

export interface H2Settings {
  /**
   * Per-stream receive window, both legs. It is the bound on what the proxy
   * holds per stream and direction when the reader is slow: the peer may not
   * send more until the proxy has written it on. Default 65535 (the protocol's).
   */
  streamWindowBytes?: number;
  /** Connection receive window, both legs. node:http2 consumes it on arrival, so it does not stall other streams. Default 1 MiB. */
  connectionWindowBytes?: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients. Default 1000. */
  maxConcurrentStreams?: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE, both legs. Default 64 KiB. */
  maxHeaderListBytes?: number;
  /** Header fields per block node:http2 accepts (its default, 128, is low for gRPC metadata). Default 512. */
  maxHeaderListPairs?: number;
  /** node:http2's per-session memory cap in MB (queued frames, HPACK tables); above it new streams are refused. Default 32. */
  maxSessionMemoryMb?: number;
  /** An upstream session with no stream for this long is closed. Default 10 s. */
  upstreamIdleMs?: number;
  /** The upstream's SETTINGS must arrive within this after connecting, or its streams fail with 504. Default 10 s. */
  upstreamHandshakeMs?: number;
  /** Grace for shutdown(): in-flight streams are reset after it. Default 2 min (Linkerd's shutdown grace). */
  shutdownGraceMs?: number;
}

export type ResolvedH2Settings = Required<H2Settings>;

export const H2_DEFAULTS: ResolvedH2Settings = {
  streamWindowBytes: 65_535,
  connectionWindowBytes: 1 << 20,
  maxConcurrentStreams: 1000,
  maxHeaderListBytes: 64 * 1024,
  maxHeaderListPairs: 512,
  maxSessionMemoryMb: 32,
  upstreamIdleMs: 10_000,
  upstreamHandshakeMs: 10_000,
  shutdownGraceMs: 120_000,
};

export function resolveSettings(s: H2Settings | undefined): ResolvedH2Settings {
  const out = { ...H2_DEFAULTS };
  for (const [k, v] of Object.entries(s ?? {}) as [keyof H2Settings, number | undefined][]) if (v !== undefined) out[k] = v;
  return out;
}
