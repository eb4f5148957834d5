// A connection's labels with the request's authority. Every request derives
// from at most two bases (the connection's labels at routing, the
// endpoint's after), so two slots, one per base, hold every derived object
// for the connection's life: keep-alive requests reuse them and hit the
// metrics' per-object cache, with no map per connection.
import type { ConnLabels } from '../types.js';

export class AuthorityLabels {
  private base0: ConnLabels | null = null;
  private authority0 = '';
  private labels0: ConnLabels | null = null;
  private base1: ConnLabels | null = null;
  private authority1 = '';
  private labels1: ConnLabels | null = null;

  /** `base` with `authority` set: the same object for the same pair while it holds a slot. */
  get(base: ConnLabels, authority: string): ConnLabels {
    if (base === this.base0 && authority === this.authority0) return this.labels0!;
    if (base === this.base1 && authority === this.authority1) return this.labels1!;
    const labels: ConnLabels = { ...base, authority };
    // Slot 1 only for a second base; a new authority on a known base replaces its slot.
    if (this.base0 === null || base === this.base0 || (this.base1 !== null && base !== this.base1)) {
      this.base0 = base;
      this.authority0 = authority;
      this.labels0 = labels;
    } else {
      this.base1 = base;
      this.authority1 = authority;
      this.labels1 = labels;
    }
    return labels;
  }
}
