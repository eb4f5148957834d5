// Exponential backoff with jitter for control-plane streams and calls.
//
// Attempt n (from 0) waits a delay drawn uniformly from
// [base·(1 − jitter), base] with base = min(maxMs, minMs·2ⁿ). Linkerd's
// control-plane defaults are min 100 ms, max 10 s; we draw the jitter
// *below* the schedule so the delay never exceeds maxMs, and a ratio of 0.5
// ("equal jitter") keeps every retry at least half the schedule away, so a
// failing control plane is never hit in a tight loop, while proxies that lost
// it at the same moment still spread out. jitter 1 is AWS's "full jitter".
// Call reset() once a stream has delivered a message (not merely opened), so
// a server that accepts and immediately fails keeps being backed off.

export interface BackoffOptions {
  /** First delay (before jitter); default 100 ms. */
  minMs?: number;
  /** Cap of the schedule; default 10 s. */
  maxMs?: number;
  /** Ratio in [0, 1] of the delay that is randomised; default 0.5. */
  jitter?: number;
  /** Uniform in [0, 1); injectable for tests. */
  random?: () => number;
}

export const DEFAULT_BACKOFF = { minMs: 100, maxMs: 10_000, jitter: 0.5 } as const;

export class Backoff {
  readonly minMs: number;
  readonly maxMs: number;
  readonly jitter: number;
  readonly #random: () => number;
  #attempt = 0;

  constructor(opts: BackoffOptions = {}) {
    this.minMs = opts.minMs ?? DEFAULT_BACKOFF.minMs;
    this.maxMs = Math.max(opts.maxMs ?? DEFAULT_BACKOFF.maxMs, this.minMs);
    this.jitter = Math.min(Math.max(opts.jitter ?? DEFAULT_BACKOFF.jitter, 0), 1);
    this.#random = opts.random ?? Math.random;
  }

  /** Delays handed out since the last reset. */
  get attempt(): number {
    return this.#attempt;
  }

  /** The next delay, in ms; advances the schedule. */
  next(): number {
    // 2^n overflows nothing before the cap matters: stop doubling at 2^30.
    const base = Math.min(this.maxMs, this.minMs * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    return this.#jittered(base);
  }

  /** A delay at the cap, for errors a quick retry will not fix (InvalidArgument...). */
  slow(): number {
    return this.#jittered(this.maxMs);
  }

  reset(): void {
    this.#attempt = 0;
  }

  #jittered(base: number): number {
    return Math.round(base * (1 - this.jitter * this.#random()));
  }
}
