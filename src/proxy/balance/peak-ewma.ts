// Peak-EWMA latency estimate of one endpoint, as Linkerd's balancer keeps it
// (tower's PeakEwma): a slower sample replaces the estimate at once, a faster
// one is blended in with the weight of the time since the last update, and
// while no samples arrive the estimate decays toward zero, so an endpoint
// that was slow is tried again after a while.

/** Linkerd's defaults: an unknown endpoint is assumed to answer in 30 ms; 10 s decay. */
export const DEFAULT_RTT_MS = 30;
export const DEFAULT_DECAY_MS = 10_000;
/**
 * The least a failed request or connection (connect error, reset, timeout)
 * counts as: a refused connect takes microseconds, and an endpoint that
 * fails fast must not look like the fastest one.
 */
export const FAILURE_PENALTY_MS = 1_000;

export class PeakEwma {
  #estimate: number;
  #stamp: number;
  readonly #decayMs: number;

  constructor(now: number, defaultRttMs = DEFAULT_RTT_MS, decayMs = DEFAULT_DECAY_MS) {
    this.#estimate = defaultRttMs;
    this.#stamp = now;
    this.#decayMs = decayMs;
  }

  /** exp(-dt/decay): how much of the old estimate is left after dt. */
  #keep(now: number): number {
    return Math.exp(-Math.max(0, now - this.#stamp) / this.#decayMs);
  }

  /** The estimate at `now`, in ms. */
  estimate(now: number): number {
    return this.#estimate * this.#keep(now);
  }

  /** A completed request or connection that took `rttMs`. */
  observe(rttMs: number, now: number): void {
    if (!Number.isFinite(rttMs) || rttMs < 0) return;
    const keep = this.#keep(now);
    const current = this.#estimate * keep;
    this.#estimate = rttMs > current ? rttMs : current + rttMs * (1 - keep);
    this.#stamp = Math.max(now, this.#stamp);
  }
}

/**
 * P2C load: the latency estimate times the work in flight, divided by the
 * endpoint's share of weight (1 = average), so a heavier endpoint looks cheaper.
 */
export function peakEwmaCost(estimateMs: number, pending: number, relativeWeight: number): number {
  return relativeWeight > 0 ? (estimateMs * (pending + 1)) / relativeWeight : Infinity;
}
