// The sidecar proxy: listeners for both directions, the accept path
// (original destination -> protocol detection -> HTTP/1, HTTP/2 or opaque
// TCP), routing through a resolver and a balancer, and graceful shutdown.
import { createServer, type Server, type Socket } from 'node:net';
import type { Registry } from 'prom-client';
import { native } from '../bpf/native.js';
import type { Logger } from '../log/logger.js';
import { isOpaquePort, type ProxyConfig, type ProxyDirectionConfig } from '../config/proxy-env.js';
import { classify, detectProtocol, isRequestPrefix, type DetectResult } from './detect.js';
import { ErrorCodes } from '../errors.js';
import { drainHttp1, serveHttp1, type Drainable } from './http1/proxy-http1.js';
import { Http1Pool } from './http1/pool.js';
import { drainH2, serveH2, H2UpstreamPool, type H2Connection } from './h2/index.js';
import { connector, errnoOf, forwardOpaque } from './tcp.js';
import { createProxyMetrics, type PromProxyMetrics } from './metrics.js';
import { Router, FallbackResolver } from './router.js';
import { replayDuplex } from './replay-duplex.js';
import type { Addr, ConnLabels, Connector, Direction, Endpoint, Lease, Resolver } from './types.js';
import { acceptTls, inboundTls, peekClientHello, serverTlsLabels, shouldTerminate, tlsConnector, type TlsStore } from '../tls/index.js';
import { endpointLabeler, type EndpointLabeler } from './endpoint-labels.js';
import { OrigProtoUpgrader } from './orig-proto.js';
import { formatAddr, newConnLabels } from './types.js';
import { stripMapped } from '../util/addr.js';
import type { TapHub } from './tap/hub.js';
import { admitConnection, authorizeRequestH1, authorizeRequestH2, inboundConn, type InboundAuthorizer, type InboundConn } from '../policy/index.js';

/** A resolver that can also wait for its first answer (discovery); FallbackResolver cannot. */
export type ProxyResolver = Resolver & {
  whenResolved?(target: Addr, authority: string | undefined, timeoutMs: number): Promise<unknown>;
  close?(): void;
};

export interface ProxyOptions {
  config: ProxyConfig;
  registry: Registry;
  log: Logger;
  /** Outbound discovery; without it every target is its own endpoint. */
  resolver?: ProxyResolver;
  /** mTLS: outbound to endpoints with an identity, inbound for our own SNI. */
  tls?: TlsStore;
  /** Inbound authorization policy (src/policy/); without it every inbound client is allowed. */
  authorizer?: InboundAuthorizer;
  /**
   * Where an accepted connection was going, instead of SO_ORIGINAL_DST / the
   * local address: lets proxies chain on loopback without the kernel path
   * (test/helpers/proxy-chain.ts). Null closes the connection.
   */
  originalDst?: (sock: Socket, direction: Direction) => Addr | null;
  /** Live tap: the HTTP layers report requests to it while a tapper is connected (src/proxy/tap/). */
  tapHub?: TapHub;
  /** Where listeners and upstream sockets are made; default: this process's netns (the sidecar). */
  sockets?: ProxySockets;
  /** process_* and nodejs_* in the registry (default true); the node proxy's pods share one process and report none. */
  processMetrics?: boolean;
}

/** The node proxy makes a pod's sockets inside the pod's netns (src/node/pod-sockets.ts). */
export interface ProxySockets {
  /** A bound, listening TCP socket's fd for addr. */
  listenFd(addr: Addr, backlog: number): number;
  /** An unconnected TCP socket, to be connected in the same tick. */
  socket(family: 4 | 6): Socket;
}

interface DirectionState {
  direction: Direction;
  config: ProxyDirectionConfig;
  servers: Server[];
  router: Router;
  http1Pool: Http1Pool;
  h2Pool: H2UpstreamPool;
  connect: Connector;
  plainConnect: Connector;
  /** Outbound: the labels of traffic to a routed endpoint (server_id, dst_*). */
  endpointLabels: EndpointLabeler | undefined;
  /** Outbound with mTLS: HTTP/1 to h2-hinted meshed endpoints goes over HTTP/2 (l5d-orig-proto). */
  origProto: OrigProtoUpgrader | undefined;
  /** Waits for discovery's first answer about a target, when there is discovery. */
  resolved: (target: Addr) => Promise<unknown>;
}

const fdOf = (sock: Socket): number => (sock as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;

/** How long a shutdown lets a connection that has not spoken yet (in protocol detection) send its first bytes before closing it. */
export const SILENT_CLIENT_GRACE_MS = 1000;

export class Proxy {
  readonly metrics: PromProxyMetrics;
  readonly #opts: ProxyOptions;
  readonly #log: Logger;
  /** One child logger per direction and protocol, not one per connection (pino serializes a child's bindings). */
  readonly #connLogs = new Map<string, Logger>();
  readonly #open = new Set<Socket>();
  /** Accepted connections whose client has not spoken yet (TLS peek, detection, waiting for who speaks first): no request in flight, so shutdown closes them after SILENT_CLIENT_GRACE_MS. */
  readonly #undetected = new Set<Socket>();
  /** This proxy's HTTP connections, for its own drain: the node proxy runs a Proxy per pod in one process. */
  readonly #http1Live = new Set<Drainable>();
  readonly #h2Live = new Set<H2Connection>();
  readonly #dirs: DirectionState[] = [];
  #draining = false;
  /** Connections refused at the cap since the last log line about it. */
  #refusedUnlogged = 0;
  #refusedLogAt = 0;

  constructor(opts: ProxyOptions) {
    this.#opts = opts;
    this.#log = opts.log.child({ component: 'proxy' });
    this.metrics = createProxyMetrics(opts.registry, { maxAuthorities: opts.config.limits.maxAuthorities, ...(opts.processMetrics === false ? { processMetrics: false } : {}) });
  }

  /** Addresses actually listened on, per direction. */
  readonly listening: Record<Direction, Addr[]> = { inbound: [], outbound: [] };

  async start(): Promise<void> {
    const { config } = this.#opts;
    const resolver = this.#opts.resolver;
    const tls = this.#opts.tls;
    for (const direction of ['outbound', 'inbound'] as const) {
      const dc = config[direction];
      const router = new Router(direction === 'outbound' && resolver !== undefined ? resolver : new FallbackResolver());
      const plainConnect = connector(dc.connectTimeoutMs, this.#opts.sockets);
      const dialTls = tls === undefined ? undefined : tlsConnector(plainConnect, tls, { handshakeTimeoutMs: dc.connectTimeoutMs });
      const waitFor = direction === 'outbound' ? resolver?.whenResolved?.bind(resolver) : undefined;
      const outbound = direction === 'outbound';
      const h2Pool = new H2UpstreamPool({ log: this.#opts.log.child({ component: `${direction}-h2` }) });
      const state: DirectionState = {
        direction,
        config: dc,
        servers: [],
        router,
        http1Pool: new Http1Pool({ idleMs: dc.http1PoolIdleTimeoutMs }),
        h2Pool,
        plainConnect,
        // The routed endpoint's identity (from discovery) means mTLS, checked against it; inbound goes to the app in plaintext.
        connect:
          outbound && dialTls !== undefined
            ? (to, ep) => (ep?.identity !== undefined ? dialTls(to, { identity: ep.identity, serverName: ep.serverName ?? ep.identity }) : plainConnect(to))
            : (to) => plainConnect(to),
        endpointLabels: outbound ? endpointLabeler({ mtls: tls !== undefined }) : undefined,
        origProto:
          outbound && tls !== undefined
            ? new OrigProtoUpgrader({ pool: h2Pool, eligible: (ep) => ep.protocolHint === 'h2' && ep.identity !== undefined })
            : undefined,
        resolved: waitFor === undefined ? () => Promise.resolve() : (target) => waitFor(target, undefined, dc.httpFailfastTimeoutMs),
      };
      this.#dirs.push(state);
      for (const addr of listenAddrs(dc.listenAddr)) {
        try {
          const server = await this.#listen(addr, (s) => this.#accept(state, s));
          state.servers.push(server);
          // The port actually bound (a configured port 0 picks one).
          const bound = server.address();
          this.listening[direction].push(typeof bound === 'object' && bound !== null ? { host: addr.host, port: bound.port } : addr);
        } catch (err) {
          // The IPv6 twin of a listener is optional: a pod may have IPv6 off.
          if (addr === dc.listenAddr) throw err;
          this.#log.info({ addr: formatAddr(addr), err: (err as Error).message }, 'IPv6 listener not available');
        }
      }
    }
    this.#log.info({ outbound: this.listening.outbound.map(formatAddr), inbound: this.listening.inbound.map(formatAddr) }, 'proxy listening');
  }

  #listen(addr: Addr, onConn: (s: Socket) => void): Promise<Server> {
    return new Promise((resolve, reject) => {
      const server = createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, onConn);
      server.once('error', reject);
      const done = (): void => {
        server.off('error', reject);
        resolve(server);
      };
      const sockets = this.#opts.sockets;
      // An adopted fd: the backlog goes positionally (the options form's is ignored and listen(511) redone).
      if (sockets !== undefined) server.listen({ fd: sockets.listenFd(addr, 1024) }, 1024, done);
      else server.listen({ host: addr.host, port: addr.port, ipv6Only: addr.host.includes(':'), backlog: 1024 }, done);
    });
  }

  #accept(state: DirectionState, sock: Socket): void {
    if (this.#draining) return void sock.destroy();
    if (this.#open.size >= this.#opts.config.limits.maxConnections) return this.#refuse(state, sock);
    this.#open.add(sock);
    this.#undetected.add(sock);
    sock.once('close', () => {
      this.#open.delete(sock);
      this.#undetected.delete(sock);
    });
    sock.on('error', (err) => this.#log.debug({ err: err.message }, 'client socket error'));
    const target = this.#targetOf(state, sock);
    if (target === null) {
      this.#log.warn({ peer: `${sock.remoteAddress}:${sock.remotePort}` }, 'no original destination (connection not redirected by bpfmesh or iptables?); closing');
      return void sock.destroy();
    }
    const labels = newConnLabels(state.direction, formatAddr(target), 'no_identity');
    // The app reaches its own outbound proxy over loopback (linkerd2-proxy's outbound accept side says the same).
    if (state.direction === 'outbound' && this.#opts.tls !== undefined) Object.assign(labels, serverTlsLabels({ kind: 'none', reason: 'loopback' }));
    void this.#serve(state, sock, target, labels).catch((err: unknown) => {
      this.#log.debug({ target: labels.target_addr, err: (err as Error).message }, 'connection failed');
      sock.destroy();
    });
  }

  #connLog(component: string): Logger {
    let log = this.#connLogs.get(component);
    if (log === undefined) this.#connLogs.set(component, (log = this.#opts.log.child({ component })));
    return log;
  }

  /** At the connection cap: close at once (RST), count it, and say so in the log at most every 10 s. */
  #refuse(state: DirectionState, sock: Socket): void {
    sock.on('error', () => {});
    try {
      sock.resetAndDestroy();
    } catch {
      sock.destroy();
    }
    this.metrics.connectionRefused(state.direction, 'max_connections');
    this.#refusedUnlogged++;
    const now = Date.now();
    if (now - this.#refusedLogAt < 10_000) return;
    this.#refusedLogAt = now;
    const max = this.#opts.config.limits.maxConnections;
    this.#log.warn(
      { code: ErrorCodes.CONN_LIMIT, direction: state.direction, refused: this.#refusedUnlogged, max },
      `${ErrorCodes.CONN_LIMIT}: ${max} client connections open (BPFMESH_PROXY_MAX_CONNECTIONS); new connections are closed at accept until some end`,
    );
    this.#refusedUnlogged = 0;
  }

  /**
   * Outbound: SO_ORIGINAL_DST (answered by bpfmesh's getsockopt program, or by
   * conntrack behind iptables). Inbound: sk_lookup rewrites nothing, so the
   * accepted socket's local address is the original destination, unless the
   * connection landed on the listener's own port: then iptables REDIRECT
   * brought it and SO_ORIGINAL_DST has the destination.
   */
  #targetOf(state: DirectionState, sock: Socket): Addr | null {
    if (this.#opts.originalDst !== undefined) return this.#opts.originalDst(sock, state.direction);
    const local = { host: stripMapped(sock.localAddress ?? ''), port: sock.localPort ?? 0 };
    if (state.direction === 'inbound' && local.port !== state.config.listenAddr.port) return local;
    const fd = fdOf(sock);
    const v6 = sock.remoteFamily === 'IPv6' && !sock.remoteAddress?.startsWith('::ffff:');
    const orig = fd < 0 ? null : native().originalDst(fd, v6 ? 6 : 4);
    return orig === null ? null : { host: orig.address, port: orig.port };
  }

  async #serve(state: DirectionState, sock: Socket, target: Addr, labels: ConnLabels): Promise<void> {
    const authz = state.direction === 'inbound' ? this.#opts.authorizer : undefined;
    // The port's policy first (bounded wait for the policy API's first answer).
    await authz?.ready(target.port);
    let conn: InboundConn | undefined;
    const opaque = isOpaquePort(this.#opts.config, target.port);
    // An empty endpoint set is waited on up to the failfast timeout (Router.routeWhenReady).
    const routeWithin =
      (failfastMs: number) =>
      async (): Promise<Endpoint> => {
        await state.resolved(target);
        return state.router.routeWhenReady(target, undefined, failfastMs);
      };
    const route = routeWithin(state.config.httpFailfastTimeoutMs);
    const routeTcp = state.direction === 'outbound' ? routeWithin(this.#opts.config.outbound.tcpFailfastTimeoutMs) : route;
    let client: Socket = sock;
    // Inbound requests carry the verified peer identity in l5d-client-id (or none, never the client's own).
    let clientId: string | null | undefined = state.direction === 'inbound' ? null : undefined;
    const tls = this.#opts.tls;
    // Inbound mTLS comes before protocol detection. Opaque ports skip it, so
    // a server-speaks-first protocol from an unmeshed client never waits.
    if (state.direction === 'inbound' && tls !== undefined && !opaque) {
      const peek = await peekClientHello(sock, state.config.detectTimeoutMs);
      if (peek.isTls && shouldTerminate(peek.sni, tls)) {
        const accepted = await acceptTls(sock, peek.buffered, tls, { log: this.#log });
        Object.assign(labels, serverTlsLabels(inboundTls(peek, accepted)));
        client = accepted.tlsSocket;
        clientId = accepted.clientIdentity ?? null;
      } else if (peek.isTls) {
        // TLS for another name is not ours to terminate: pass it through.
        Object.assign(labels, serverTlsLabels(inboundTls(peek)));
        if (authz !== undefined && !admitConnection(authz, inboundConn(sock, target, false, undefined), sock)) return;
        return this.#opaque(state, sock, peek.buffered, routeTcp, labels);
      } else if (peek.buffered.length > 0) {
        sock.unshift(peek.buffered);
      }
    }
    if (authz !== undefined) conn = inboundConn(sock, target, client !== sock, clientId ?? undefined);
    const detected: DetectResult = opaque
      ? { protocol: 'opaque', buffered: Buffer.alloc(0), timedOut: false, eof: false }
      : await detectProtocol(client, { timeoutMs: state.config.detectTimeoutMs });
    const spoke = (): void => void this.#undetected.delete(sock);
    const serve = (d: DetectResult): Promise<void> | void => {
      spoke();
      if (sock.destroyed) return; // closed while detecting (by the shutdown, or an error): nothing to route
      this.metrics.detected(state.direction, d.protocol, d.timedOut);
      const log = this.#connLog(`${state.direction}-${d.protocol}`);
      const track = (ep: Endpoint): Lease | undefined => state.router.track(ep);
      const hub = this.#opts.tapHub;
      const tap = hub === undefined ? {} : { tap: { hub, target, source: sock.remoteAddress === undefined ? undefined : { host: stripMapped(sock.remoteAddress), port: sock.remotePort ?? 0 } } };
      const common = { labels, route, track, connect: state.connect, metrics: this.metrics, log, clientId, live: this.#http1Live, ...(state.endpointLabels ? { endpointLabels: state.endpointLabels } : {}), ...tap };
      const limits = this.#opts.config.limits;
      switch (d.protocol) {
        case 'http1': {
          const h1route = authz !== undefined && conn !== undefined ? authorizeRequestH1(authz, conn, route) : route;
          return serveHttp1(
            client,
            d.buffered,
            {
              ...common,
              route: h1route,
              pool: state.http1Pool,
              headTimeoutMs: limits.requestHeadTimeoutMs,
              bodyTimeoutMs: limits.requestBodyTimeoutMs,
              responseTimeoutMs: limits.responseHeadTimeoutMs,
              clientIdleMs: limits.httpIdleTimeoutMs,
              tunnelIdleMs: limits.tcpIdleTimeoutMs,
              ...(state.origProto ? { origProto: state.origProto } : {}),
              ...(this.#draining ? { draining: true } : {}),
            },
            d.firstByteAt,
          );
        }
        case 'h2': {
          // Inbound, HTTP/1 that a peer proxy carried over HTTP/2 goes back to HTTP/1 for the app.
          const h2route = authz !== undefined && conn !== undefined ? authorizeRequestH2(authz, conn, route) : route;
          const h2ctx = { ...common, live: this.#h2Live, route: h2route, pool: state.h2Pool, idleMs: limits.httpIdleTimeoutMs, ...(state.direction === 'inbound' ? { downgrade: { pool: state.http1Pool, responseTimeoutMs: limits.responseHeadTimeoutMs } } : {}) };
          // Over mTLS: see replay-duplex.ts.
          const h2 = client !== sock ? serveH2(replayDuplex(client, d.buffered) as unknown as Socket, Buffer.alloc(0), h2ctx) : serveH2(client, d.buffered, h2ctx);
          // A client that spoke after the drain began gets its GOAWAY too (the drain only reached connections served before it).
          if (this.#draining) void h2.shutdown();
          return;
        }
        case 'opaque':
          if (authz !== undefined && conn !== undefined && !admitConnection(authz, conn, client)) return;
          return this.#opaque(state, client, d.buffered, routeTcp, labels);
      }
    };
    // Nothing came within the detection timeout: a server-speaks-first protocol, or a client that waits.
    if (detected.timedOut && detected.protocol === 'opaque' && detected.buffered.length === 0) return this.#late(state, client, routeTcp, labels, serve, spoke);
    return serve(detected);
  }

  /** Route and connect for opaque TCP; the caller owns the lease. */
  async #dial(state: DirectionState, route: () => Promise<Endpoint>, labels: ConnLabels): Promise<{ upstream: Socket; dstLabels: ConnLabels; lease: Lease | undefined }> {
    let dstLabels = labels;
    let lease: Lease | undefined;
    const upstream = await route()
      .then(async (ep) => {
        if (state.endpointLabels !== undefined) dstLabels = state.endpointLabels(ep, labels);
        lease = state.router.track(ep);
        const t0 = performance.now();
        try {
          const sock = await state.connect(ep.addr, ep);
          lease?.observe(performance.now() - t0);
          return sock;
        } catch (err) {
          lease?.observe(performance.now() - t0, true);
          lease?.end();
          throw err;
        }
      })
      .catch((err: unknown) => {
        this.metrics.tcpOpen(labels, 'src');
        this.metrics.tcpClose(labels, 'src', errnoOf(err));
        throw err;
      });
    return { upstream, dstLabels, lease };
  }

  /**
   * After a detection timeout with nothing read, Linkerd relays as opaque
   * TCP (the server may speak first). Here the upstream is connected as
   * well, but whoever speaks first decides: the server, and it is opaque
   * TCP; the client, and its bytes are detected as before, so an HTTP
   * request that comes late is still served (and filtered) as HTTP, never
   * relayed past the HTTP layer.
   */
  async #late(state: DirectionState, client: Socket, route: () => Promise<Endpoint>, labels: ConnLabels, serve: (d: DetectResult) => Promise<void> | void, spoke: () => void): Promise<void> {
    const { upstream, dstLabels, lease } = await this.#dial(state, route, labels);
    upstream.on('error', () => {});
    const limits = this.#opts.config.limits;
    let held: Buffer = Buffer.alloc(0);
    let firstByteAt: number | undefined;
    const first = await new Promise<'client' | 'server' | 'opaque' | 'closed'>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const arm = (ms: number, onTime: () => void): void => {
        clearTimeout(timer);
        if (ms > 0) timer = setTimeout(onTime, ms);
      };
      const done = (v: 'client' | 'server' | 'opaque' | 'closed'): void => {
        clearTimeout(timer);
        client.off('data', onClient);
        upstream.off('data', onServer);
        for (const s of [client, upstream]) {
          s.off('end', onClosed);
          s.off('close', onClosed);
        }
        client.pause();
        upstream.pause();
        resolve(v);
      };
      const onClient = (b: Buffer): void => {
        held = held.length === 0 ? b : Buffer.concat([held, b]);
        if (firstByteAt === undefined) {
          firstByteAt = performance.now();
          // A request start that stalls is HTTP (408 there); anything else goes on as opaque.
          arm(state.config.detectTimeoutMs, () => done(isRequestPrefix(held) ? 'client' : 'opaque'));
        }
        const v = classify(held);
        if (v !== 'more') done(v === 'opaque' ? 'opaque' : 'client');
      };
      const onServer = (b: Buffer): void => {
        done('server'); // paused and without this listener first: unshift() into a flowing stream re-emits at once
        upstream.unshift(b);
      };
      const onClosed = (): void => done('closed');
      arm(limits.tcpIdleTimeoutMs, () => done('closed'));
      client.on('data', onClient);
      upstream.on('data', onServer);
      for (const s of [client, upstream]) {
        s.once('end', onClosed);
        s.once('close', onClosed);
      }
      client.resume();
      upstream.resume();
    });
    spoke();
    if (first === 'closed' || first === 'client') {
      upstream.destroy();
      lease?.end();
      if (first === 'closed') return void client.destroy();
      const protocol = classify(held) === 'h2' ? 'h2' : 'http1';
      return serve(firstByteAt === undefined ? { protocol, buffered: held, timedOut: true, eof: false } : { protocol, buffered: held, timedOut: true, eof: false, firstByteAt });
    }
    this.metrics.detected(state.direction, 'opaque', true);
    try {
      return await forwardOpaque(client, held, upstream, labels, this.metrics, dstLabels, limits.tcpIdleTimeoutMs);
    } finally {
      lease?.end();
    }
  }

  /**
   * Opaque TCP. The balancer's feedback: the connection counts as pending
   * work for as long as it is open, and its connect time (TCP, plus the TLS
   * handshake for mTLS) is the latency sample.
   */
  async #opaque(state: DirectionState, client: Socket, replay: Buffer, route: () => Promise<Endpoint>, labels: ConnLabels): Promise<void> {
    const { upstream, dstLabels, lease } = await this.#dial(state, route, labels);
    client.resume();
    try {
      return await forwardOpaque(client, replay, upstream, labels, this.metrics, dstLabels, this.#opts.config.limits.tcpIdleTimeoutMs);
    } finally {
      lease?.end();
    }
  }

  get openConnections(): number {
    return this.#open.size;
  }

  /**
   * At once, for a pod that is gone: stops listening and destroys every
   * connection and pooled upstream of this proxy only (shutdown() drains the
   * whole process's HTTP connections), so it holds no socket of the pod.
   */
  async close(): Promise<void> {
    await this.#closeAll(this.#stopAccepting());
  }

  /** Stops accepting, closes connections whose client has not spoken within SILENT_CLIENT_GRACE_MS, sends GOAWAY to HTTP/2 clients, lets open work finish within graceMs, then closes the rest. */
  async shutdown(graceMs: number): Promise<void> {
    const closed = this.#stopAccepting();
    const deadline = Date.now() + graceMs;
    // A client that has not spoken yet may have its request on the way (a
    // connection accepted just before the signal): it gets a moment to
    // speak and is served; a silent one must not hold the shutdown for the whole grace.
    const silent = setTimeout(() => {
      for (const s of this.#undetected) s.destroy();
    }, Math.min(graceMs, SILENT_CLIENT_GRACE_MS));
    drainHttp1(this.#http1Live);
    await drainH2(this.#h2Live, graceMs);
    while (this.#open.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    clearTimeout(silent);
    await this.#closeAll(closed);
  }

  /** No new connections; resolves when every listener has closed. */
  #stopAccepting(): Promise<void[]> {
    this.#draining = true;
    return Promise.all(this.#dirs.flatMap((d) => d.servers.map((s) => new Promise<void>((r) => s.close(() => r())))));
  }

  /** Destroys every open connection and pooled upstream, stops discovery, then waits for the listeners. */
  async #closeAll(listenersClosed: Promise<void[]>): Promise<void> {
    for (const s of this.#open) s.destroy();
    for (const d of this.#dirs) {
      d.http1Pool.close();
      await d.h2Pool.close();
    }
    this.#opts.resolver?.close?.();
    await listenersClosed;
  }
}

/** The configured address, plus its IPv6 twin for loopback/any, as Linkerd's dual-stack listeners. */
function listenAddrs(addr: Addr): Addr[] {
  if (addr.host === '127.0.0.1') return [addr, { host: '::1', port: addr.port }];
  if (addr.host === '0.0.0.0') return [addr, { host: '::', port: addr.port }];
  return [addr];
}
