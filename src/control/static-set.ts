// An EndpointSet whose owner replaces the whole list: the resolver keeps one
// per destination, tests build them by hand.
import type { Endpoint, EndpointSet } from '../util/endpoint.js';

export class StaticEndpointSet implements EndpointSet {
  #endpoints: readonly Endpoint[];
  readonly #listeners = new Set<() => void>();

  constructor(endpoints: readonly Endpoint[] = []) {
    this.#endpoints = Object.freeze([...endpoints]);
  }

  get endpoints(): readonly Endpoint[] {
    return this.#endpoints;
  }

  /** Swap in a new list and tell every listener, synchronously. */
  replace(endpoints: readonly Endpoint[]): void {
    this.#endpoints = Object.freeze([...endpoints]);
    // A copy, so a listener may unsubscribe (or subscribe) while we iterate.
    for (const l of [...this.#listeners]) l();
  }

  onChange(listener: () => void): () => void {
    // Wrapped so one function subscribed twice gets two independent subscriptions.
    const entry = (): void => listener();
    this.#listeners.add(entry);
    return () => void this.#listeners.delete(entry);
  }

  get listenerCount(): number {
    return this.#listeners.size;
  }
}
