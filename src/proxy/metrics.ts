// The proxy's metrics under Linkerd's names and labels, on an injected
// prom-client Registry (never the global one).
//
// Hot-path counts (bytes per chunk, opens, requests) go into plain number
// cells cached per ConnLabels object and are read by the registry at scrape
// time: a prom-client inc() hashes its labels on every call (about 1 µs), a
// cell is an addition. The families are small metric objects of our own
// registered on the registry (it only asks them for get()), because
// prom-client's classes fix their label names up front and the dst_* labels
// of Linkerd's endpoints are only known from the control plane.
//
// Label sets: the base labels are fixed (a label with no value is written
// as "", which Prometheus treats as absent); after them come the TLS detail
// (client_id / server_id / no_tls_reason / sni) and the endpoint's dst_*
// labels, only when present.
//
// Cardinality bound: those extra labels come from peers and the control
// plane, so they are bounded twice. Per endpoint, dstLabels() keeps at most
// DST_LABEL_LIMITS.keys labels (by name order), names of at most
// DST_LABEL_LIMITS.nameLength characters, values cut to valueLength. Per
// proxy, at most maxLabelSets (default 1000) distinct extra label sets are
// ever used; connections past that are counted in the base series without
// extras and in bpfmesh_metric_label_sets_dropped_total. A family's series
// are then at most (its base label combinations) × (maxLabelSets + 1).
import { Counter, collectDefaultMetrics, type Registry } from 'prom-client';
import { cell, CellFamily, Family, type Cell, type Labels } from '../util/metric-cells.js';
import { COUNTER_NAMES } from '../bpf/codecs.js';
import type { Classification, ConnLabels, OrigProtoEvent, Peer, ProxyMetrics } from './types.js';

export const RESPONSE_LATENCY_BUCKETS = [
  1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000,
];

/** Bounds of one endpoint's dst_* labels. */
export const DST_LABEL_LIMITS = { keys: 16, nameLength: 64, valueLength: 128 } as const;
export const DEFAULT_MAX_LABEL_SETS = 1000;

const dstCache = new WeakMap<Record<string, string>, Readonly<Labels> | undefined>();

/**
 * An endpoint's metric_labels as Linkerd's dst_* labels: names made valid
 * Prometheus label names ([a-zA-Z0-9_], "dst_" prefix), bounded per
 * DST_LABEL_LIMITS; undefined when there are none. Cached per labels object
 * (an endpoint keeps its object until the control plane replaces it).
 */
export function dstLabels(labels: Record<string, string>): Readonly<Labels> | undefined {
  if (dstCache.has(labels)) return dstCache.get(labels);
  const out: Labels = {};
  let n = 0;
  for (const k of Object.keys(labels).sort()) {
    if (n >= DST_LABEL_LIMITS.keys) break;
    const name = k.replace(/[^a-zA-Z0-9_]/g, '_').slice(0, DST_LABEL_LIMITS.nameLength);
    if (name === '' || `dst_${name}` in out) continue;
    out[`dst_${name}`] = String(labels[k]).slice(0, DST_LABEL_LIMITS.valueLength);
    n++;
  }
  const r = n === 0 ? undefined : Object.freeze(out);
  dstCache.set(labels, r);
  return r;
}

/** When an authority value was last used; `dead` once evicted (holders look it up again). */
interface AuthorityUse {
  t: number;
  dead: boolean;
}

interface HistSeries {
  dead?: boolean;
  labels: Labels;
  counts: number[];
  sum: number;
  count: number;
}

class HistogramFamily extends Family {
  readonly series = new Map<string, HistSeries>();
  constructor(
    registry: Registry,
    name: string,
    help: string,
    readonly buckets: readonly number[],
  ) {
    super(registry, name, help, 'histogram');
  }
  get0(key: string, labels: () => Labels): HistSeries {
    let s = this.series.get(key);
    if (s === undefined) {
      s = { labels: labels(), counts: new Array<number>(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.series.set(key, s);
    }
    return s;
  }
  observe(s: HistSeries, v: number): void {
    const b = this.buckets;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    if (i < b.length) s.counts[i]!++;
    s.sum += v;
    s.count++;
  }
  values(): Array<{ labels: Labels; value: number; metricName: string }> {
    const out: Array<{ labels: Labels; value: number; metricName: string }> = [];
    for (const s of this.series.values()) {
      let acc = 0;
      for (let i = 0; i < this.buckets.length; i++) {
        acc += s.counts[i]!;
        out.push({ metricName: `${this.name}_bucket`, labels: { le: String(this.buckets[i]), ...s.labels }, value: acc });
      }
      out.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf', ...s.labels }, value: s.count });
      out.push({ metricName: `${this.name}_sum`, labels: s.labels, value: s.sum });
      out.push({ metricName: `${this.name}_count`, labels: s.labels, value: s.count });
    }
    return out;
  }
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
  latency: HistSeries;
}

/** What is cached per ConnLabels object; the label values it was built from are checked on every use. */
interface ConnEntry {
  direction: string;
  target_addr: string;
  tls: string;
  authority: string | undefined;
  /** The authority label written: the value cut to 255 characters, or "" past maxAuthorities. */
  authorityLabel: string;
  /** The authority's use record while authorityLabel is not "" (touched per request without a Map write). */
  authorityUse: AuthorityUse | undefined;
  client_id: string | undefined;
  server_id: string | undefined;
  no_tls_reason: string | undefined;
  sni: string | undefined;
  dst: Readonly<Labels> | undefined;
  /** The TLS detail and dst_* labels (possibly none: see maxLabelSets), and their key. */
  extras: Labels;
  extrasKey: string;
  src: PeerCells | undefined;
  dst_: PeerCells | undefined;
  request: Cell | undefined;
  responses: Map<string, ResponseSeries>;
}

export interface ProxyMetricsOptions {
  /** process_* and nodejs_* metrics from prom-client's default collectors; true by default. */
  processMetrics?: boolean;
  /** Distinct TLS-detail + dst_* label sets ever used (see the top of this file). Default 1000. */
  maxLabelSets?: number;
  /** Distinct `authority` values (client-chosen: Host, :authority) in the HTTP series at once. Default 256. */
  maxAuthorities?: number;
  /** An authority without a request for this long is evicted with its series when room is needed. Default 10 min. */
  authorityIdleMs?: number;
  now?: () => number;
}

export const DEFAULT_MAX_AUTHORITIES = 256;

const EMPTY: Labels = Object.freeze({});

export class PromProxyMetrics implements ProxyMetrics {
  readonly registry: Registry;
  readonly #entries = new WeakMap<ConnLabels, ConnEntry>();
  readonly #requests: CellFamily;
  readonly #responses: CellFamily;
  readonly #latency: HistogramFamily;
  readonly #tcpOpened: CellFamily;
  readonly #tcpOpen: CellFamily;
  readonly #tcpRead: CellFamily;
  readonly #tcpWrite: CellFamily;
  readonly #tcpClosed: CellFamily;
  readonly #labelSets = new Map<string, Labels>();
  readonly #maxLabelSets: number;
  readonly #dropped: Counter;
  /** authority -> when a request last used it. */
  readonly #authorities = new Map<string, AuthorityUse>();
  readonly #maxAuthorities: number;
  readonly #authorityIdleMs: number;
  readonly #now: () => number;
  readonly #labelValuesDropped: Counter<'label'>;
  readonly #evicted: Counter<'label'>;
  readonly #origProto: Counter<'event'>;
  readonly #refused: Counter<'direction' | 'reason'>;
  readonly #detected: CellFamily;

  constructor(registry: Registry, opts: ProxyMetricsOptions = {}) {
    this.registry = registry;
    this.#maxLabelSets = opts.maxLabelSets ?? DEFAULT_MAX_LABEL_SETS;
    this.#maxAuthorities = opts.maxAuthorities ?? DEFAULT_MAX_AUTHORITIES;
    this.#authorityIdleMs = opts.authorityIdleMs ?? 600_000;
    this.#now = opts.now ?? Date.now;
    this.#requests = new CellFamily(registry, 'request_total', 'Total count of HTTP requests.', 'counter');
    this.#responses = new CellFamily(registry, 'response_total', 'Total count of HTTP responses.', 'counter');
    this.#latency = new HistogramFamily(
      registry,
      'response_latency_ms',
      "Elapsed times between a request's headers being received and its response stream completing",
      RESPONSE_LATENCY_BUCKETS,
    );
    this.#tcpOpened = new CellFamily(registry, 'tcp_open_total', 'Total count of opened connections', 'counter');
    this.#tcpOpen = new CellFamily(registry, 'tcp_open_connections', 'Number of currently-open connections', 'gauge');
    this.#tcpRead = new CellFamily(registry, 'tcp_read_bytes_total', 'Total count of bytes read from peers', 'counter');
    this.#tcpWrite = new CellFamily(registry, 'tcp_write_bytes_total', 'Total count of bytes written to peers', 'counter');
    this.#tcpClosed = new CellFamily(registry, 'tcp_close_total', 'Total count of closed connections', 'counter');
    this.#dropped = new Counter({
      name: 'bpfmesh_metric_label_sets_dropped_total',
      help: 'Connections counted without their client_id/server_id/dst_* labels because the proxy already uses maxLabelSets distinct sets.',
      registers: [registry],
    });
    this.#origProto = new Counter({
      name: 'bpfmesh_orig_proto_requests_total',
      help: 'HTTP/1 requests carried over HTTP/2 between proxies (l5d-orig-proto): upgraded (outbound), fallback_http1 (outbound, the peer does not speak HTTP/2), downgraded (inbound).',
      labelNames: ['event'] as const,
      registers: [registry],
    });
    this.#labelValuesDropped = new Counter({
      name: 'bpfmesh_metric_label_values_dropped_total',
      help: 'Requests counted with authority="" because maxAuthorities (BPFMESH_PROXY_METRICS_MAX_AUTHORITIES) distinct values were in use.',
      labelNames: ['label'] as const,
      registers: [registry],
    });
    this.#evicted = new Counter({
      name: 'bpfmesh_metric_label_values_evicted_total',
      help: 'Authority values evicted with their series after going idle, to make room for new ones.',
      labelNames: ['label'] as const,
      registers: [registry],
    });
    this.#refused = new Counter({
      name: 'bpfmesh_proxy_connections_refused_total',
      help: 'Client connections closed at accept: reason="max_connections" when BPFMESH_PROXY_MAX_CONNECTIONS were open.',
      labelNames: ['direction', 'reason'] as const,
      registers: [registry],
    });
    // Counted once per connection: a cell, not prom-client's per-call label hashing.
    this.#detected = new CellFamily(registry, 'bpfmesh_proxy_protocol_detected_total', 'Client connections by detected protocol (http1, h2, opaque); timed_out="true" when the detection timeout decided.', 'counter');
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: registry });
  }

  /** Distinct extra label sets in use (bounded by maxLabelSets). */
  get labelSets(): number {
    return this.#labelSets.size;
  }

  detected(direction: string, protocol: string, timedOut: boolean): void {
    const timed_out = timedOut ? 'true' : 'false';
    cell(this.#detected.cells, `${direction}\0${protocol}\0${timed_out}`, () => ({ direction, protocol, timed_out })).value++;
  }

  connectionRefused(direction: string, reason: 'max_connections'): void {
    this.#refused.inc({ direction, reason });
  }

  origProto(event: OrigProtoEvent): void {
    this.#origProto.inc({ event });
  }

  #extras(l: ConnLabels): { extras: Labels; extrasKey: string } {
    let extras: Labels | undefined;
    for (const k of ['client_id', 'server_id', 'no_tls_reason', 'sni'] as const) {
      const v = l[k];
      if (v !== undefined) (extras ??= {})[k] = v.slice(0, 255);
    }
    if (l.dst !== undefined) extras = { ...extras, ...l.dst };
    if (extras === undefined) return { extras: EMPTY, extrasKey: '' };
    const key = Object.entries(extras)
      .map(([k, v]) => `${k}=${v}`)
      .join('\0');
    const known = this.#labelSets.get(key);
    if (known !== undefined) return { extras: known, extrasKey: key };
    if (this.#labelSets.size >= this.#maxLabelSets) {
      this.#dropped.inc();
      return { extras: EMPTY, extrasKey: '' };
    }
    this.#labelSets.set(key, extras);
    return { extras, extrasKey: key };
  }

  #entry(l: ConnLabels): ConnEntry {
    let e = this.#entries.get(l);
    if (
      e === undefined ||
      e.direction !== l.direction ||
      e.target_addr !== l.target_addr ||
      e.tls !== l.tls ||
      e.authority !== l.authority ||
      e.client_id !== l.client_id ||
      e.server_id !== l.server_id ||
      e.no_tls_reason !== l.no_tls_reason ||
      e.sni !== l.sni ||
      e.dst !== l.dst
    ) {
      e = {
        direction: l.direction,
        target_addr: l.target_addr,
        tls: l.tls,
        authority: l.authority,
        authorityLabel: '',
        authorityUse: undefined,
        client_id: l.client_id,
        server_id: l.server_id,
        no_tls_reason: l.no_tls_reason,
        sni: l.sni,
        dst: l.dst,
        ...this.#extras(l),
        src: undefined,
        dst_: undefined,
        request: undefined,
        responses: new Map(),
      };
      this.#setAuthority(e);
      this.#entries.set(l, e);
    }
    return e;
  }

  /**
   * The entry's authority label and use record: the value (cut to 255
   * characters) while fewer than maxAuthorities are in use (idle ones are
   * evicted for room), else "".
   */
  #setAuthority(e: ConnEntry): void {
    e.authorityLabel = '';
    e.authorityUse = undefined;
    const a = e.authority;
    if (a === undefined || a === '') return;
    const v = a.length > 255 ? a.slice(0, 255) : a;
    let use = this.#authorities.get(v);
    if (use === undefined) {
      if (this.#authorities.size >= this.#maxAuthorities) this.#evictIdleAuthorities();
      if (this.#authorities.size >= this.#maxAuthorities) {
        this.#labelValuesDropped.inc({ label: 'authority' });
        return;
      }
      use = { t: this.#now(), dead: false };
      this.#authorities.set(v, use);
    }
    e.authorityLabel = v;
    e.authorityUse = use;
  }

  /** Drops the authorities idle for authorityIdleMs, and every HTTP series that carries one. */
  #evictIdleAuthorities(): void {
    const cutoff = this.#now() - this.#authorityIdleMs;
    const gone = new Set<string>();
    for (const [a, use] of this.#authorities) if (use.t <= cutoff) gone.add(a);
    if (gone.size === 0) return;
    for (const a of gone) {
      this.#authorities.get(a)!.dead = true;
      this.#authorities.delete(a);
    }
    this.#evicted.inc({ label: 'authority' }, gone.size);
    for (const cells of [this.#requests.cells, this.#responses.cells]) {
      for (const [k, c] of cells) {
        if (gone.has(c.labels['authority'] ?? '')) {
          c.dead = true;
          cells.delete(k);
        }
      }
    }
    for (const [k, h] of this.#latency.series) {
      if (gone.has(h.labels['authority'] ?? '')) {
        h.dead = true;
        this.#latency.series.delete(k);
      }
    }
  }

  /** Distinct authority values in use (bounded by maxAuthorities). */
  get authorities(): number {
    return this.#authorities.size;
  }

  #peer(l: ConnLabels, peer: Peer): PeerCells {
    const e = this.#entry(l);
    const slot = peer === 'src' ? 'src' : 'dst_';
    const cached = e[slot];
    if (cached !== undefined) return cached;
    const key = `${e.direction}\0${peer}\0${e.target_addr}\0${e.tls}\0${e.extrasKey}`;
    const labels = (): Labels => ({ direction: e.direction, peer, target_addr: e.target_addr, tls: e.tls, ...e.extras });
    const p: PeerCells = {
      opened: cell(this.#tcpOpened.cells, key, labels),
      open: cell(this.#tcpOpen.cells, key, labels),
      read: cell(this.#tcpRead.cells, key, labels),
      write: cell(this.#tcpWrite.cells, key, labels),
      key,
      labels: labels(),
      closed: new Map(),
    };
    e[slot] = p;
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
      c = cell(this.#tcpClosed.cells, `${p.key}\0${err}`, () => ({ ...p.labels, errno: err }));
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
    return { direction: e.direction, authority: e.authorityLabel, target_addr: e.target_addr, tls: e.tls, ...e.extras };
  }

  #httpKey(e: ConnEntry): string {
    return `${e.direction}\0${e.authorityLabel}\0${e.target_addr}\0${e.tls}\0${e.extrasKey}`;
  }

  /**
   * The entry for HTTP series; one whose authority was evicted takes it (or
   * "") again. `touch`: the authority was used now (a request; its response
   * only checks, one clock read and a field write per request is enough).
   */
  #httpEntry(l: ConnLabels, touch: boolean): ConnEntry {
    const e = this.#entry(l);
    const use = e.authorityUse;
    if (use !== undefined) {
      if (!use.dead) {
        if (touch) use.t = this.#now();
      } else {
        this.#setAuthority(e);
        e.request = undefined;
        e.responses.clear();
      }
    }
    return e;
  }

  request(l: ConnLabels): void {
    const e = this.#httpEntry(l, true);
    if (e.request === undefined || e.request.dead === true) e.request = cell(this.#requests.cells, this.#httpKey(e), () => this.#httpLabels(e));
    e.request.value++;
  }

  response(
    l: ConnLabels,
    r: { statusCode: number; classification: Classification; grpcStatus?: number; error?: string; latencyMs: number },
  ): void {
    const e = this.#httpEntry(l, false);
    const grpc = r.grpcStatus === undefined ? '' : String(r.grpcStatus);
    const error = r.error ?? '';
    const rkey = `${r.statusCode}\0${r.classification}\0${grpc}\0${error}`;
    let s = e.responses.get(rkey);
    if (s === undefined || s.total.dead === true || s.latency.dead === true) {
      const http = this.#httpLabels(e);
      const status = String(r.statusCode);
      const key = this.#httpKey(e);
      s = {
        total: cell(this.#responses.cells, `${key}\0${rkey}`, () => ({ ...http, status_code: status, classification: r.classification, grpc_status: grpc, error })),
        latency: this.#latency.get0(`${key}\0${status}`, () => ({ ...http, status_code: status })),
      };
      e.responses.set(rkey, s);
    }
    s.total.value++;
    this.#latency.observe(s.latency, r.latencyMs);
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
