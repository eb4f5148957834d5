// Where the proxy's HTTP layers report requests to tappers. Each open
// Observe stream is a sink with its match, its limit and a bounded outlet;
// a request that a sink's match selects gets an id from that sink and
// three events: request init, response init (status, latency), response
// end (bytes, gRPC status or reset, duration).
//
// Zero cost when nobody taps: the HTTP layers test `hub.active` (one
// property read) before building anything; everything else here runs only
// while a stream is open.
//
// Bounds: streams at once (the server refuses more), each stream's queue
// (the outlet drops and counts when the client reads slowly), events per
// second over all streams (a token bucket: a request that would exceed it
// is not tapped, and counted).
import { Counter, Gauge, type Registry } from 'prom-client';
import type { TapEventIn } from '../../control/protos.js';
import { encodeTcpAddress } from '../../control/protos.js';
import { stripMapped } from '../../util/addr.js';
import { parseIp } from '../../util/ip.js';
import type { Addr, Direction } from '../types.js';
import type { TapPredicate, TapRequestView } from './match.js';

/** What the hub knows of a request when it starts. */
export interface TapRequest extends TapRequestView {
  direction: Direction;
  /** "tls" ("true", or why not) and client_id: the connection from the client. */
  sourceMeta: Record<string, string>;
  /** Outbound: the endpoint's labels, "tls" and server_id. */
  destinationMeta: Record<string, string> | undefined;
}

/** One Observe stream's side of the hub. */
export interface TapSink {
  readonly base: number;
  readonly limit: number;
  readonly match: TapPredicate;
  /** Sends one event; false when it was dropped (queue full). */
  send(ev: TapEventIn): boolean;
  /** Called once the limit is reached and every tapped request has ended. */
  done(): void;
}

interface SinkState {
  sink: TapSink;
  issued: number;
  open: number;
  closed: boolean;
}

export interface TapHubOptions {
  registry?: Registry;
  maxEventsPerSecond: number;
  now?: () => number;
}

/** Events per tapped request (init, response, end): what the rate bucket charges. */
const EVENTS_PER_REQUEST = 3;

export class TapHub {
  /** True while any Observe stream is open: the only test on the request path. */
  active = false;
  readonly #sinks: SinkState[] = [];
  readonly #rate: number;
  #tokens: number;
  #refilledAt: number;
  readonly #now: () => number;
  #nextBase = 0;
  readonly #events: Counter | undefined;
  readonly #dropped: Counter<'reason'> | undefined;
  readonly #skipped: Counter<'reason'> | undefined;
  readonly #streams: Gauge | undefined;

  constructor(opts: TapHubOptions) {
    this.#rate = opts.maxEventsPerSecond;
    this.#tokens = opts.maxEventsPerSecond;
    this.#now = opts.now ?? (() => performance.now());
    this.#refilledAt = this.#now();
    const registers = opts.registry === undefined ? [] : [opts.registry];
    if (opts.registry !== undefined) {
      this.#events = new Counter({ name: 'bpfmesh_tap_events_total', help: 'Tap events sent to tappers.', registers });
      this.#dropped = new Counter({
        name: 'bpfmesh_tap_events_dropped_total',
        help: 'Tap events dropped: reason="queue_full" when a tapper reads slower than events come (BPFMESH_PROXY_TAP_QUEUE).',
        labelNames: ['reason'] as const,
        registers,
      });
      this.#skipped = new Counter({
        name: 'bpfmesh_tap_requests_skipped_total',
        help: 'Matching requests not tapped: reason="rate" above BPFMESH_PROXY_TAP_MAX_EVENTS_PER_SECOND.',
        labelNames: ['reason'] as const,
        registers,
      });
      this.#streams = new Gauge({ name: 'bpfmesh_tap_streams', help: 'Tap (Observe) streams open.', registers });
    }
  }

  /** Open streams. */
  get streams(): number {
    return this.#sinks.length;
  }

  /** A new stream's base id: distinct per Observe call (wraps at 2^32). */
  nextBase(): number {
    const b = this.#nextBase;
    this.#nextBase = (this.#nextBase + 1) >>> 0;
    return b;
  }

  /** Adds a stream; the returned function removes it (client gone, or done). */
  add(sink: TapSink): () => void {
    const st: SinkState = { sink, issued: 0, open: 0, closed: false };
    this.#sinks.push(st);
    this.active = true;
    this.#streams?.set(this.#sinks.length);
    return () => this.#remove(st);
  }

  #remove(st: SinkState): void {
    st.closed = true;
    const i = this.#sinks.indexOf(st);
    if (i >= 0) this.#sinks.splice(i, 1);
    this.active = this.#sinks.length > 0;
    this.#streams?.set(this.#sinks.length);
  }

  #take(n: number): boolean {
    const now = this.#now();
    this.#tokens = Math.min(this.#rate, this.#tokens + ((now - this.#refilledAt) / 1000) * this.#rate);
    this.#refilledAt = now;
    if (this.#tokens < n) return false;
    this.#tokens -= n;
    return true;
  }

  /**
   * A request starts: the streams whose match selects it and that are under
   * their limit each get an id and a request-init event. Undefined when none
   * does (or the rate bound says no).
   */
  start(req: TapRequest): TapExchange | undefined {
    let picked: SinkState[] | undefined;
    for (const st of this.#sinks) {
      if (st.closed || st.issued >= st.sink.limit) continue;
      if (!st.sink.match(req)) continue;
      (picked ??= []).push(st);
    }
    if (picked === undefined) return undefined;
    if (!this.#take(EVENTS_PER_REQUEST * picked.length)) {
      this.#skipped?.inc({ reason: 'rate' });
      return undefined;
    }
    const base = baseEvent(req);
    const targets = picked.map((st) => ({ st, id: { base: st.sink.base, stream: String(st.issued++) } }));
    const x = new TapExchange(this, base, targets);
    for (const t of targets) {
      t.st.open++;
      this.send(t.st, {
        ...base,
        http: { request_init: { id: t.id, method: methodMsg(req.method), scheme: schemeMsg(req.scheme), authority: req.authority, path: req.path } },
      });
    }
    return x;
  }

  /** @internal */
  send(st: SinkState, ev: TapEventIn): void {
    if (st.closed) return;
    if (st.sink.send(ev)) this.#events?.inc();
    else this.#dropped?.inc({ reason: 'queue_full' });
  }

  /** @internal A tapped request ended for `st`: the stream is done at its limit with nothing open. */
  ended(st: SinkState): void {
    st.open--;
    if (!st.closed && st.open === 0 && st.issued >= st.sink.limit) {
      this.#remove(st);
      st.sink.done();
    }
  }
}

type Target = { st: SinkState; id: { base: number; stream: string } };

/** One tapped request: report its response head and its end (once each). */
export class TapExchange {
  /** Response body bytes so far (the HTTP layer adds them). */
  bytes = 0;
  readonly #t0 = performance.now();
  #respondedAt: number | undefined;
  #ended = false;

  constructor(
    private readonly hub: TapHub,
    private readonly base: TapEventIn,
    private readonly targets: Target[],
  ) {}

  response(status: number): void {
    if (this.#respondedAt !== undefined || this.#ended) return;
    this.#respondedAt = performance.now();
    const since = duration(this.#respondedAt - this.#t0);
    for (const t of this.targets) this.hub.send(t.st, { ...this.base, http: { response_init: { id: t.id, since_request_init: since, http_status: status } } });
  }

  /** The response ended (or the exchange was cut: `reset` with an HTTP/2 code, or neither for an HTTP/1 failure). */
  end(eos: { grpcStatus?: number | undefined; reset?: number | undefined } = {}, bytes = this.bytes): void {
    if (this.#ended) return;
    this.#ended = true;
    const now = performance.now();
    const end =
      eos.grpcStatus !== undefined ? { grpc_status_code: eos.grpcStatus } : eos.reset !== undefined ? { reset_error_code: eos.reset } : {};
    for (const t of this.targets) {
      this.hub.send(t.st, {
        ...this.base,
        http: {
          response_end: {
            id: t.id,
            since_request_init: duration(now - this.#t0),
            ...(this.#respondedAt !== undefined ? { since_response_init: duration(now - this.#respondedAt) } : {}),
            response_bytes: String(bytes),
            eos: end,
          },
        },
      });
      this.hub.ended(t.st);
    }
  }
}

function duration(ms: number): { seconds: string; nanos: number } {
  const s = Math.floor(ms / 1000);
  return { seconds: String(s), nanos: Math.round((ms - s * 1000) * 1e6) };
}

function tcp(a: Addr | undefined): ReturnType<typeof encodeTcpAddress> | undefined {
  if (a === undefined) return undefined;
  const host = stripMapped(a.host);
  return parseIp(host) === null ? undefined : encodeTcpAddress({ host, port: a.port });
}

function baseEvent(req: TapRequest): TapEventIn {
  const source = tcp(req.source);
  const destination = tcp(req.destination);
  return {
    ...(source !== undefined ? { source } : {}),
    ...(destination !== undefined ? { destination } : {}),
    source_meta: { labels: req.sourceMeta },
    ...(req.destinationMeta !== undefined ? { destination_meta: { labels: req.destinationMeta } } : {}),
    proxy_direction: req.direction === 'inbound' ? 'INBOUND' : 'OUTBOUND',
  };
}

const REGISTERED = new Set(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'CONNECT', 'HEAD', 'TRACE']);

function methodMsg(m: string): { registered: 'GET' } | { unregistered: string } {
  return REGISTERED.has(m) ? ({ registered: m } as { registered: 'GET' }) : { unregistered: m };
}

function schemeMsg(s: string): { registered: 'HTTP' | 'HTTPS' } | { unregistered: string } {
  return s === 'http' ? { registered: 'HTTP' } : s === 'https' ? { registered: 'HTTPS' } : { unregistered: s };
}
