// Power of two choices over peak-EWMA costs, Linkerd's balancer: draw two
// distinct endpoints at random (in proportion to their weights) and take the
// cheaper. Follows a live EndpointSet; an endpoint that stays in the set keeps
// its latency estimate and its pending count across changes. An endpoint that
// joins starts from the mean estimate of the endpoints already there (the
// default RTT when there are none): a fixed default would be far worse than
// measured sub-millisecond estimates, and the newcomer would never win a draw.
import { formatAddr, type Balancer, type Endpoint, type EndpointSet, type Lease } from '../types.js';
import { DEFAULT_DECAY_MS, DEFAULT_RTT_MS, FAILURE_PENALTY_MS, PeakEwma, peakEwmaCost } from './peak-ewma.js';

export interface P2cOptions {
  /** Monotonic milliseconds; performance.now by default. */
  now?: () => number;
  /** Uniform in [0, 1); Math.random by default. */
  rng?: () => number;
  defaultRttMs?: number;
  decayMs?: number;
}

export interface EndpointStats {
  addr: string;
  weight: number;
  pending: number;
  rttMs: number;
  cost: number;
}

interface Slot {
  key: string;
  ep: Endpoint;
  /** Sampling weight: the endpoint's, or 1 each when no endpoint has a positive one. */
  weight: number;
  ewma: PeakEwma;
  pending: number;
}

const weightOf = (ep: Endpoint): number => (Number.isFinite(ep.weight) && ep.weight > 0 ? ep.weight : 0);

export class P2cBalancer implements Balancer {
  readonly #set: EndpointSet;
  readonly #now: () => number;
  readonly #rng: () => number;
  readonly #defaultRttMs: number;
  readonly #decayMs: number;
  readonly #unsubscribe: () => void;
  #slots: Slot[] = [];
  #byKey = new Map<string, Slot>();
  /** cumulative[i] = sum of weights of slots 0..i, for weighted draws by binary search. */
  #cumulative = new Float64Array(0);
  #meanWeight = 1;

  constructor(set: EndpointSet, opts: P2cOptions = {}) {
    this.#set = set;
    this.#now = opts.now ?? (() => performance.now());
    this.#rng = opts.rng ?? Math.random;
    this.#defaultRttMs = opts.defaultRttMs ?? DEFAULT_RTT_MS;
    this.#decayMs = opts.decayMs ?? DEFAULT_DECAY_MS;
    this.#unsubscribe = set.onChange(() => this.#rebuild());
    this.#rebuild();
  }

  #rebuild(): void {
    const now = this.#now();
    const slots: Slot[] = [];
    const byKey = new Map<string, Slot>();
    // A newcomer's neutral start: what the set looks like now.
    const old = this.#slots;
    const initialRttMs = old.length > 0 ? old.reduce((sum, s) => sum + s.ewma.estimate(now), 0) / old.length : this.#defaultRttMs;
    for (const ep of this.#set.endpoints) {
      const key = formatAddr(ep.addr);
      if (byKey.has(key)) continue; // the first of duplicate addresses wins
      const kept = this.#byKey.get(key);
      const slot: Slot = kept
        ? { ...kept, ep, weight: weightOf(ep) }
        : { key, ep, weight: weightOf(ep), ewma: new PeakEwma(now, initialRttMs, this.#decayMs), pending: 0 };
      slots.push(slot);
      byKey.set(key, slot);
    }
    if (slots.every((s) => s.weight === 0)) for (const s of slots) s.weight = 1;
    const cumulative = new Float64Array(slots.length);
    let total = 0;
    slots.forEach((s, i) => (cumulative[i] = total += s.weight));
    this.#slots = slots;
    this.#byKey = byKey;
    this.#cumulative = cumulative;
    this.#meanWeight = slots.length > 0 ? total / slots.length : 1;
  }

  /** Index of the slot whose weight interval holds r (first cumulative > r). */
  #find(r: number): number {
    const c = this.#cumulative;
    let lo = 0;
    let hi = c.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((c[mid] ?? 0) > r) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  #cost(s: Slot, now: number): number {
    return peakEwmaCost(s.ewma.estimate(now), s.pending, s.weight / this.#meanWeight);
  }

  pick(): Endpoint | null {
    const slots = this.#slots;
    const n = slots.length;
    if (n <= 1) return slots[0]?.ep ?? null;
    const c = this.#cumulative;
    const total = c[n - 1] ?? 0;
    const i = this.#find(this.#rng() * total);
    const a = slots[i];
    if (a === undefined) return null;
    // Second draw without replacement: draw over the total minus a's weight and
    // step over a's interval.
    const rest = total - a.weight;
    if (rest <= 0) return a.ep; // a is the only endpoint with weight
    let r = this.#rng() * rest;
    const aStart = i > 0 ? (c[i - 1] ?? 0) : 0;
    if (r >= aStart) r += a.weight;
    const j = this.#find(r);
    const b = slots[j];
    if (b === undefined || j === i || b.weight === 0) return a.ep; // float edge cases
    const now = this.#now();
    return this.#cost(b, now) < this.#cost(a, now) ? b.ep : a.ep;
  }

  observe(ep: Endpoint, latencyMs: number): void {
    this.#byKey.get(formatAddr(ep.addr))?.ewma.observe(latencyMs, this.#now());
  }

  start(ep: Endpoint): void {
    const s = this.#byKey.get(formatAddr(ep.addr));
    if (s) s.pending++;
  }

  end(ep: Endpoint): void {
    const s = this.#byKey.get(formatAddr(ep.addr));
    // An endpoint removed and added back starts again from 0: do not go below.
    if (s && s.pending > 0) s.pending--;
  }

  /**
   * Feedback for one request or connection to `ep` (see Lease in types.ts):
   * pending from now until end(); a failed one is observed as at least
   * FAILURE_PENALTY_MS.
   */
  lease(ep: Endpoint): Lease {
    this.start(ep);
    let observed = false;
    let ended = false;
    return {
      observe: (latencyMs, failed = false) => {
        if (observed) return;
        observed = true;
        this.observe(ep, failed ? Math.max(latencyMs, FAILURE_PENALTY_MS) : latencyMs);
      },
      end: () => {
        if (ended) return;
        ended = true;
        this.end(ep);
      },
    };
  }

  /** Work in flight over all endpoints (leases not ended). */
  get pending(): number {
    let n = 0;
    for (const s of this.#slots) n += s.pending;
    return n;
  }

  stats(): EndpointStats[] {
    const now = this.#now();
    return this.#slots.map((s) => ({
      addr: s.key,
      weight: s.weight,
      pending: s.pending,
      rttMs: s.ewma.estimate(now),
      cost: this.#cost(s, now),
    }));
  }

  /** Stop following the set. */
  close(): void {
    this.#unsubscribe();
  }
}

export function createP2cBalancer(set: EndpointSet, opts: P2cOptions = {}): P2cBalancer {
  return new P2cBalancer(set, opts);
}
