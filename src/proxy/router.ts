// Routing a target to one endpoint: the resolver says what the target is
// (endpoints, fall back to the original destination, or fail fast), and a
// P2C peak-EWMA balancer per endpoint set picks among the endpoints.
// Balancers of sets unused for a while are dropped, so the cache is bounded.
import { BpfmeshError } from '../errors.js';
import { createP2cBalancer, type P2cBalancer } from './balance/p2c.js';
import type { Addr, Endpoint, EndpointSet, Resolution, Resolver } from './types.js';

export const UNAVAILABLE = 'BPFMESH_E_UNAVAILABLE';

/** Until discovery exists (or when it has nothing), every target is its own endpoint. */
export class FallbackResolver implements Resolver {
  resolve(): Resolution {
    return { kind: 'fallback' };
  }
}

export class Router {
  readonly #resolver: Resolver;
  readonly #balancers = new Map<EndpointSet, { balancer: P2cBalancer; lastUsed: number }>();
  readonly #idleMs: number;

  constructor(resolver: Resolver, idleMs = 5000) {
    this.#resolver = resolver;
    this.#idleMs = idleMs;
  }

  route(target: Addr, authority: string | undefined): Addr {
    const r = this.#resolver.resolve(target, authority);
    if (r.kind === 'fallback') return target;
    if (r.kind === 'fail') throw new BpfmeshError(UNAVAILABLE, r.reason);
    const now = Date.now();
    let entry = this.#balancers.get(r.set);
    if (entry === undefined) {
      this.#evictIdle(now);
      entry = { balancer: createP2cBalancer(r.set), lastUsed: now };
      this.#balancers.set(r.set, entry);
    }
    entry.lastUsed = now;
    const ep = entry.balancer.pick();
    if (ep === null) throw new BpfmeshError(UNAVAILABLE, `no endpoints for ${target.host}:${target.port}`);
    return ep.addr;
  }

  /** The identity the target's endpoints present (the first one's), when discovery gave them one. */
  identityOf(target: Addr): string | undefined {
    const r = this.#resolver.resolve(target, undefined);
    return r.kind === 'endpoints' ? r.set.endpoints[0]?.identity : undefined;
  }

  /** The endpoint behind an address this router hands out (for its identity), if discovery gave one. */
  endpointFor(addr: Addr): Endpoint | undefined {
    for (const set of this.#balancers.keys()) {
      const ep = set.endpoints.find((e) => e.addr.port === addr.port && e.addr.host === addr.host);
      if (ep !== undefined) return ep;
    }
    return undefined;
  }

  #evictIdle(now: number): void {
    for (const [set, e] of this.#balancers) if (now - e.lastUsed > this.#idleMs) this.#balancers.delete(set);
  }
}
