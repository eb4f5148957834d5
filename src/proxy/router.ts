// Routing a target to one endpoint: the resolver says what the target is
// (endpoints, fall back to the original destination, or fail fast), and a
// P2C peak-EWMA balancer per endpoint set picks among the endpoints.
// Balancers of sets unused for a while (and without work in flight) are
// dropped, so the cache is bounded. The layers that carry a routed request or
// connection report back through track(): pending work and latency samples.
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { createP2cBalancer, type EndpointStats, type P2cBalancer } from './balance/p2c.js';
import type { Addr, Endpoint, EndpointSet, Lease, Resolution, Resolver } from './types.js';

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
  /** The balancer that picked an endpoint object, for track(). */
  readonly #pickedBy = new WeakMap<Endpoint, P2cBalancer>();

  constructor(resolver: Resolver, idleMs = 5000) {
    this.#resolver = resolver;
    this.#idleMs = idleMs;
  }

  /**
   * The endpoint for one request or connection: address, identity, protocol
   * hint and metric labels travel together from here to the connector and
   * the metrics. A fallback is the original destination as an endpoint
   * without identity or labels.
   */
  route(target: Addr, authority: string | undefined): Endpoint {
    const r = this.#resolver.resolve(target, authority);
    if (r.kind === 'fallback') return { addr: target, weight: 1, labels: {} };
    if (r.kind === 'fail') throw new BpfmeshError(ErrorCodes.UNAVAILABLE, r.reason);
    const now = Date.now();
    let entry = this.#balancers.get(r.set);
    if (entry === undefined) {
      this.#evictIdle(now);
      entry = { balancer: createP2cBalancer(r.set), lastUsed: now };
      this.#balancers.set(r.set, entry);
    }
    entry.lastUsed = now;
    const ep = entry.balancer.pick();
    if (ep === null) throw new BpfmeshError(ErrorCodes.UNAVAILABLE, `no endpoints for ${target.host}:${target.port}`);
    this.#pickedBy.set(ep, entry.balancer);
    return ep;
  }

  /**
   * As route(), but an endpoint set that is empty for now is waited on for
   * up to `timeoutMs` (then the 503 of route()), as Linkerd's balancer holds
   * requests until an endpoint is ready or failfast. A destination that
   * moves from one endpoint to another gets a Remove and then an Add: a
   * request routed between the two must not fail. A 'fail' or 'fallback'
   * answer is taken at once.
   */
  async routeWhenReady(target: Addr, authority: string | undefined, timeoutMs: number): Promise<Endpoint> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const r = this.#resolver.resolve(target, authority);
      const left = deadline - performance.now();
      if (r.kind !== 'endpoints' || r.set.endpoints.length > 0 || left <= 0) return this.route(target, authority);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        const unsubscribe = r.set.onChange(done);
        function done(): void {
          clearTimeout(timer);
          unsubscribe();
          resolve();
        }
      });
    }
  }

  /**
   * Starts the feedback for an endpoint route() answered: pending until the
   * lease ends, plus one latency sample. Undefined for a fallback endpoint
   * (no balancer picked it).
   */
  track(ep: Endpoint): Lease | undefined {
    return this.#pickedBy.get(ep)?.lease(ep);
  }

  /** The balancer's view of the endpoints a target resolves to (pending work, estimates); undefined before its first route. */
  stats(target: Addr, authority: string | undefined): EndpointStats[] | undefined {
    const r = this.#resolver.resolve(target, authority);
    return r.kind === 'endpoints' ? this.#balancers.get(r.set)?.balancer.stats() : undefined;
  }

  #evictIdle(now: number): void {
    for (const [set, e] of this.#balancers) {
      if (now - e.lastUsed <= this.#idleMs || e.balancer.pending > 0) continue;
      e.balancer.close();
      this.#balancers.delete(set);
    }
  }
}
