// The proxy's metrics under Linkerd's names and labels, on an injected
// prom-client Registry (never the global one).
//
// Hot-path counts (bytes per chunk, opens, requests) go into plain number
// cells cached per ConnLabels object and are copied into the prom-client
// metrics at scrape time: a prom-client inc() hashes its labels on every call
// (about 1 µs), a cell is an addition. Every metric has a fixed label set; a
// label with no value is written as "" (Prometheus treats "" as absent).
import { Counter, Gauge, Histogram, collectDefaultMetrics, type Registry } from 'prom-client';
import { COUNTER_NAMES } from '../bpf/codecs.js';
import type { Classification, ConnLabels, Peer, ProxyMetrics } from './types.js';

export const RESPONSE_LATENCY_BUCKETS = [
  1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000,
];

const HTTP_LABELS = ['direction', 'authority', 'target_addr', 'tls'] as const;
const RESPONSE_LABELS = [...HTTP_LABELS, 'status_code', 'classification', 'grpc_status', 'error'] as const;
const LATENCY_LABELS = [...HTTP_LABELS, 'status_code'] as const;
const TCP_LABELS = ['direction', 'peer', 'target_addr', 'tls'] as const;
const TCP_CLOSE_LABELS = [...TCP_LABELS, 'errno'] as const;

type Labels = Record<string, string>;

interface Cell {
  labels: Labels;
  value: number;
}

/** Series of one metric, keyed by their label values joined with NUL. */
type Cells = Map<string, Cell>;

function cell(cells: Cells, key: string, labels: () => Labels): Cell {
  let c = cells.get(key);
  if (c === undefined) {
    c = { labels: labels(), value: 0 };
    cells.set(key, c);
  }
  return c;
}

function cellCounter(registry: Registry, name: string, help: string, labelNames: readonly string[]): Cells {
  const cells: Cells = new Map();
  new Counter({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const c of cells.values()) this.inc(c.labels, c.value);
    },
  });
  return cells;
}

function cellGauge(registry: Registry, name: string, help: string, labelNames: readonly string[]): Cells {
  const cells: Cells = new Map();
  new Gauge({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const c of cells.values()) this.set(c.labels, c.value);
    },
  });
  return cells;
}

interface PeerCells {
  opened: Cell;
  open: Cell;
  read: Cell;
  write: Cell;
  key: string;
  labels: Labels;
  /** tcp_close_total series by errno ("" = clean). */
  closed: Map<string, Cell>;
}

interface ResponseSeries {
  total: Cell;
  latencyLabels: Labels;
}

/** What is cached per ConnLabels object; the label values it was built from are checked on every use. */
interface ConnEntry {
  direction: string;
  target_addr: string;
  tls: string;
  authority: string | undefined;
  src: PeerCells | undefined;
  dst: PeerCells | undefined;
  request: Cell | undefined;
  responses: Map<string, ResponseSeries>;
}

export interface ProxyMetricsOptions {
  /** process_* and nodejs_* metrics from prom-client's default collectors; true by default. */
  processMetrics?: boolean;
}

export class PromProxyMetrics implements ProxyMetrics {
  readonly registry: Registry;
  readonly #entries = new WeakMap<ConnLabels, ConnEntry>();
  readonly #requests: Cells;
  readonly #responses: Cells;
  readonly #latency: Histogram<string>;
  readonly #tcpOpened: Cells;
  readonly #tcpOpen: Cells;
  readonly #tcpRead: Cells;
  readonly #tcpWrite: Cells;
  readonly #tcpClosed: Cells;

  constructor(registry: Registry, opts: ProxyMetricsOptions = {}) {
    this.registry = registry;
    this.#requests = cellCounter(registry, 'request_total', 'Total count of HTTP requests.', HTTP_LABELS);
    this.#responses = cellCounter(registry, 'response_total', 'Total count of HTTP responses.', RESPONSE_LABELS);
    this.#latency = new Histogram({
      name: 'response_latency_ms',
      help: 'Elapsed times between a request\'s headers being received and its response stream completing',
      labelNames: LATENCY_LABELS,
      buckets: RESPONSE_LATENCY_BUCKETS,
      registers: [registry],
    });
    this.#tcpOpened = cellCounter(registry, 'tcp_open_total', 'Total count of opened connections', TCP_LABELS);
    this.#tcpOpen = cellGauge(registry, 'tcp_open_connections', 'Number of currently-open connections', TCP_LABELS);
    this.#tcpRead = cellCounter(registry, 'tcp_read_bytes_total', 'Total count of bytes read from peers', TCP_LABELS);
    this.#tcpWrite = cellCounter(registry, 'tcp_write_bytes_total', 'Total count of bytes written to peers', TCP_LABELS);
    this.#tcpClosed = cellCounter(registry, 'tcp_close_total', 'Total count of closed connections', TCP_CLOSE_LABELS);
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: registry });
  }

  #entry(l: ConnLabels): ConnEntry {
    let e = this.#entries.get(l);
    if (e === undefined || e.direction !== l.direction || e.target_addr !== l.target_addr || e.tls !== l.tls || e.authority !== l.authority) {
      e = {
        direction: l.direction,
        target_addr: l.target_addr,
        tls: l.tls,
        authority: l.authority,
        src: undefined,
        dst: undefined,
        request: undefined,
        responses: new Map(),
      };
      this.#entries.set(l, e);
    }
    return e;
  }

  #peer(l: ConnLabels, peer: Peer): PeerCells {
    const e = this.#entry(l);
    const cached = e[peer];
    if (cached !== undefined) return cached;
    const key = `${e.direction}\0${peer}\0${e.target_addr}\0${e.tls}`;
    const labels = (): Labels => ({ direction: e.direction, peer, target_addr: e.target_addr, tls: e.tls });
    const p: PeerCells = {
      opened: cell(this.#tcpOpened, key, labels),
      open: cell(this.#tcpOpen, key, labels),
      read: cell(this.#tcpRead, key, labels),
      write: cell(this.#tcpWrite, key, labels),
      key,
      labels: labels(),
      closed: new Map(),
    };
    e[peer] = p;
    return p;
  }

  tcpOpen(l: ConnLabels, peer: Peer): void {
    const p = this.#peer(l, peer);
    p.opened.value++;
    p.open.value++;
  }

  tcpClose(l: ConnLabels, peer: Peer, errno?: string): void {
    const p = this.#peer(l, peer);
    p.open.value--;
    const err = errno ?? '';
    let c = p.closed.get(err);
    if (c === undefined) {
      c = cell(this.#tcpClosed, `${p.key}\0${err}`, () => ({ ...p.labels, errno: err }));
      p.closed.set(err, c);
    }
    c.value++;
  }

  tcpRead(l: ConnLabels, peer: Peer, bytes: number): void {
    this.#peer(l, peer).read.value += bytes;
  }

  tcpWrite(l: ConnLabels, peer: Peer, bytes: number): void {
    this.#peer(l, peer).write.value += bytes;
  }

  #httpLabels(e: ConnEntry): Labels {
    return { direction: e.direction, authority: e.authority ?? '', target_addr: e.target_addr, tls: e.tls };
  }

  request(l: ConnLabels): void {
    const e = this.#entry(l);
    e.request ??= cell(this.#requests, `${e.direction}\0${e.authority ?? ''}\0${e.target_addr}\0${e.tls}`, () => this.#httpLabels(e));
    e.request.value++;
  }

  response(
    l: ConnLabels,
    r: { statusCode: number; classification: Classification; grpcStatus?: number; error?: string; latencyMs: number },
  ): void {
    const e = this.#entry(l);
    const grpc = r.grpcStatus === undefined ? '' : String(r.grpcStatus);
    const error = r.error ?? '';
    const rkey = `${r.statusCode}\0${r.classification}\0${grpc}\0${error}`;
    let s = e.responses.get(rkey);
    if (s === undefined) {
      const http = this.#httpLabels(e);
      const status = String(r.statusCode);
      const key = `${e.direction}\0${http['authority']}\0${e.target_addr}\0${e.tls}\0${rkey}`;
      s = {
        total: cell(this.#responses, key, () => ({ ...http, status_code: status, classification: r.classification, grpc_status: grpc, error })),
        latencyLabels: { ...http, status_code: status },
      };
      e.responses.set(rkey, s);
    }
    s.total.value++;
    this.#latency.observe(s.latencyLabels, r.latencyMs);
  }
}

export function createProxyMetrics(registry: Registry, opts: ProxyMetricsOptions = {}): PromProxyMetrics {
  return new PromProxyMetrics(registry, opts);
}

/**
 * The BPF data path's counters as `bpfmesh_<name>_total`, read at scrape time.
 * `read` is called once per scrape; null (or a throw: the pins may be gone)
 * means no samples. Names `read` returns that are not in `names` are ignored:
 * prom-client needs every metric registered before the first scrape.
 */
export function registerKernelCounters(
  registry: Registry,
  read: () => Record<string, bigint> | null,
  names: readonly string[] = COUNTER_NAMES,
): void {
  let snapshot: { values: Record<string, bigint> | null } | undefined;
  const current = (): Record<string, bigint> | null => {
    if (snapshot === undefined) {
      let values: Record<string, bigint> | null;
      try {
        values = read();
      } catch {
        values = null;
      }
      snapshot = { values };
      // A scrape runs every collect() in one synchronous pass: read once per scrape.
      queueMicrotask(() => (snapshot = undefined));
    }
    return snapshot.values;
  };
  for (const name of names) {
    new Counter({
      name: `bpfmesh_${name}_total`,
      help: `BPF data path counter ${name}`,
      registers: [registry],
      collect() {
        const v = current()?.[name];
        this.reset();
        if (v === undefined) this.remove();
        else this.inc(Number(v));
      },
    });
  }
}
