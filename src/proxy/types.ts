// Types shared by the proxy's layers: what is known about a connection at
// each stage, endpoints and their discovery, and the metrics sink. Each
// layer takes these, so the pieces (detection, HTTP/1, HTTP/2, opaque TCP,
// balancer, metrics) can be built and tested on their own. Addresses and
// endpoints live in src/util (the control clients and mTLS use them too).

import { formatAddr, type Addr } from '../util/addr.js';
import type { Endpoint } from '../util/endpoint.js';

export { formatAddr, type Addr } from '../util/addr.js';
export type { Connector, Endpoint, EndpointSet, Resolution, Resolver } from '../util/endpoint.js';

export type Direction = 'inbound' | 'outbound';
export type Protocol = 'http1' | 'h2' | 'opaque';

/** An accepted connection before detection: where it was meant to go. */
export interface Accepted {
  direction: Direction;
  /** Outbound: SO_ORIGINAL_DST; inbound: the accepted socket's local address. */
  target: Addr;
  peer: Addr;
}

/** What a route answers: the chosen endpoint, or (tests, simple callers) just an address. */
export type RouteTarget = Addr | Endpoint;

/** The endpoint behind a route answer; a bare address is an endpoint without identity, hint or labels. */
export function asEndpoint(r: RouteTarget): Endpoint {
  return 'addr' in r ? r : { addr: r, weight: 1, labels: {} };
}

export type UpstreamProtocol = 'http1' | 'h2';

/**
 * The key of pooled upstream connections: address, expected identity and
 * protocol. One address reachable under two identities (a pod IP reused, a
 * misconfigured control plane) never shares a connection that was verified
 * for the other.
 */
export function endpointKey(ep: Endpoint, protocol: UpstreamProtocol): string {
  return `${formatAddr(ep.addr)} ${ep.identity ?? '-'} ${protocol}`;
}

/** Labels common to a connection's metrics, Linkerd's names. */
export interface ConnLabels {
  direction: Direction;
  /** "host:port" of the original destination. */
  target_addr: string;
  tls: string;
  authority?: string;
  /** TLS detail, Linkerd's names (see src/tls/labels.ts): inbound client_id, outbound server_id, or why not TLS. */
  client_id?: string;
  server_id?: string;
  no_tls_reason?: string;
  sni?: string;
  /** The endpoint's metric_labels as dst_* labels, already bounded (metrics.ts dstLabels()); outbound only. */
  dst?: Readonly<Record<string, string>>;
}

/**
 * A connection's labels with every field present (unset ones undefined), in
 * one order: every ConnLabels object then shares one hidden class, so the
 * metrics' per-request reads of them stay monomorphic. Derive others by
 * spreading one of these and assigning (never `delete`, which drops the
 * object into dictionary mode).
 */
export function newConnLabels(direction: Direction, target_addr: string, tls: string): ConnLabels {
  return { direction, target_addr, tls, authority: undefined, client_id: undefined, server_id: undefined, no_tls_reason: undefined, sni: undefined, dst: undefined };
}

export type Peer = 'src' | 'dst';
export type Classification = 'success' | 'failure';

/** Where the proxy's layers report; implemented on a prom-client Registry (src/proxy/metrics.ts). */
export interface ProxyMetrics {
  tcpOpen(l: ConnLabels, peer: Peer): void;
  /** errno: e.g. "ECONNRESET"; undefined for a clean close. */
  tcpClose(l: ConnLabels, peer: Peer, errno?: string): void;
  tcpRead(l: ConnLabels, peer: Peer, bytes: number): void;
  tcpWrite(l: ConnLabels, peer: Peer, bytes: number): void;
  request(l: ConnLabels): void;
  response(
    l: ConnLabels,
    r: { statusCode: number; classification: Classification; grpcStatus?: number; error?: string; latencyMs: number },
  ): void;
  /** HTTP/1 carried over HTTP/2 between proxies (l5d-orig-proto): outbound upgrades and fallbacks, inbound downgrades. */
  origProto?(event: OrigProtoEvent): void;
}

export type OrigProtoEvent = 'upgraded' | 'fallback_http1' | 'downgraded';

/** Picks an endpoint for one request/connection; reports its latency back (peak-EWMA). */
export interface Balancer {
  /** null when the set is empty. */
  pick(): Endpoint | null;
  /** Call when a request/connection to `ep` completes, with its latency. */
  observe(ep: Endpoint, latencyMs: number): void;
  /** Pending work per endpoint (for P2C load): call at start and end. */
  start(ep: Endpoint): void;
  end(ep: Endpoint): void;
}

/**
 * The balancer's feedback for one routed request or connection, taken right
 * after routing (it counts as pending work from then on). `observe` reports
 * the latency sample once (later calls are ignored); `failed` marks an error
 * the proxy saw (connect error, reset, timeout), which costs the endpoint at
 * least a penalty so a fast-failing endpoint does not look attractive.
 * `end` ends the pending count; only the first call counts. Both are safe to
 * call on a lease whose endpoint left the set.
 */
export interface Lease {
  observe(latencyMs: number, failed?: boolean): void;
  end(): void;
}

/** Starts the feedback of a routed endpoint; undefined when no balancer picked it (fallback, inbound). */
export type Track = (ep: Endpoint) => Lease | undefined;

