// What discovery produces and the proxy consumes: endpoints (address, weight,
// identity, protocol hint, labels), live sets of them, what a target resolves
// to, and how a connection to one is opened. Below the proxy, the control
// clients (src/control) and mTLS (src/tls), which all speak in these terms.
import type { Socket } from 'node:net';
import type { Addr } from './addr.js';

/** One endpoint a balancer may pick. */
export interface Endpoint {
  addr: Addr;
  /** Relative weight (Linkerd's controller uses 10000). */
  weight: number;
  /** TLS identity the endpoint must present, when meshed. */
  identity?: string;
  /** SNI to send when originating mTLS (Linkerd's server_name; equal to `identity` for meshed endpoints). */
  serverName?: string;
  /** Become dst_* metric labels. */
  labels: Record<string, string>;
  protocolHint?: 'h2' | 'opaque';
}

/** A live set of endpoints; the resolver replaces `endpoints` and calls listeners. */
export interface EndpointSet {
  readonly endpoints: readonly Endpoint[];
  onChange(listener: () => void): () => void;
}

/** Discovery: what a logical target resolves to. */
export type Resolution =
  | { kind: 'endpoints'; set: EndpointSet }
  | { kind: 'fallback' } // use the original destination as the only endpoint
  | { kind: 'fail'; reason: string }; // NoEndpoints(exists=true): fail fast with 503

export interface Resolver {
  resolve(target: Addr, authority: string | undefined): Resolution;
}

/**
 * Opens a connection to an upstream; rejects with code BPFMESH_E_CONNECT /
 * BPFMESH_E_CONNECT_TIMEOUT. `endpoint` is the route's answer: its identity
 * (when there is one) decides mTLS, never a lookup by address.
 */
export type Connector = (to: Addr, endpoint?: Endpoint) => Promise<Socket>;
