// Counters and gauges as plain number cells, read by a prom-client Registry
// at scrape time. A prom-client inc() builds and hashes its label set on
// every call (about 1 µs for a few labels, several for Linkerd's sixteen
// authorization labels); a cell found once and kept by its caller is an
// addition. A family is a small metric object registered on the registry,
// which only asks it for get().
import type { Metric, Registry } from 'prom-client';

export type Labels = Record<string, string>;

export interface Cell {
  labels: Labels;
  value: number;
  /** Evicted from its family (e.g. an idle authority): whoever holds it makes a new one. */
  dead?: boolean;
}

/** Series of one family, keyed by their label values joined with NUL. */
export type Cells = Map<string, Cell>;

/** The cell of `key`, made with `labels()` on first use. */
export function cell(cells: Cells, key: string, labels: () => Labels): Cell {
  let c = cells.get(key);
  if (c === undefined) {
    c = { labels: labels(), value: 0 };
    cells.set(key, c);
  }
  return c;
}

/** What prom-client's Registry needs of a metric: name, help, type, get(), reset(). */
export abstract class Family {
  readonly aggregator = 'sum';
  constructor(
    registry: Registry,
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge' | 'histogram',
  ) {
    registry.registerMetric(this as unknown as Metric);
  }
  abstract values(): Array<{ labels: Labels; value: number; metricName?: string }>;
  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: ReturnType<Family['values']> }> {
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.values() });
  }
  /** Registry.resetMetrics(): these are cumulative per process; nothing to reset. */
  reset(): void {}
}

export class CellFamily extends Family {
  readonly cells: Cells = new Map();
  values(): Array<{ labels: Labels; value: number }> {
    return [...this.cells.values()].map((c) => ({ labels: c.labels, value: c.value }));
  }
}
