// Linkerd's tap API on the proxy's control port: io.linkerd.proxy.tap.Tap
// /Observe over mTLS with the workload certificate. Each accepted
// connection's TLS is terminated here (the store's current server context,
// so a rotated certificate reaches new connections), and the TLS socket is
// handed to a gRPC server. Observe answers by the client's verified
// identity:
//   no verified client certificate          UNAUTHENTICATED
//   an identity other than the tap identity  PERMISSION_DENIED
//   (linkerd2-proxy answers UNAUTHENTICATED to both; the code says which)
//   limit 0, a missing or bad match          INVALID_ARGUMENT
//   more than maxStreams streams open        RESOURCE_EXHAUSTED
// A client that does not speak TLS, or fails the handshake, is closed.
import { createServer, type Server, type Socket } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { Counter, type Registry } from 'prom-client';
import type { TapConfig } from '../../config/tap-env.js';
import { tapService, type ObserveRequestMsg, type TapEventIn } from '../../control/protos.js';
import type { Logger } from '../../log/logger.js';
import { replayDuplex } from '../replay-duplex.js';
import { acceptTls } from '../../tls/server.js';
import { sameName, type TlsStore } from '../../tls/tls-store.js';
import { BpfmeshError, ErrorCodes, errorCode } from '../../errors.js';
import { formatAddr, type Addr } from '../types.js';
import { compileMatch, TAP_INVALID, type TapPredicate } from './match.js';
import type { TapHub } from './hub.js';

export interface TapServerOptions {
  listen: Addr;
  config: TapConfig;
  store: TlsStore;
  hub: TapHub;
  log: Logger;
  registry?: Registry;
  /** Bound on a client's TLS handshake; default 5 s. */
  handshakeTimeoutMs?: number;
}

/** Control-port connections at once per stream allowed: a client needs one, a reconnecting one briefly two. */
const CONNECTIONS_PER_STREAM = 4;

export class TapServer {
  readonly #opts: TapServerOptions;
  /**
   * One gRPC server per verdict on the connection's identity: node:http2
   * hides the connection from a call (it wraps the stream we hand it), so
   * the connection goes to the server whose Observe answers for it.
   */
  readonly #servers = { tap: new grpc.Server(), other: new grpc.Server(), none: new grpc.Server() };
  readonly #injectors: Record<'tap' | 'other' | 'none', ReturnType<grpc.Server['createConnectionInjector']>>;
  readonly #sockets = new Set<Socket>();
  readonly #streams: Counter<'result'> | undefined;
  readonly #refused: Counter<'reason'> | undefined;
  #server: Server | undefined;
  readonly #log: Logger;

  constructor(opts: TapServerOptions) {
    this.#opts = opts;
    this.#log = opts.log.child({ component: 'tap' });
    const registers = opts.registry === undefined ? [] : [opts.registry];
    if (opts.registry !== undefined) {
      this.#streams = new Counter({
        name: 'bpfmesh_tap_streams_total',
        help: 'Observe calls by result: served, unauthenticated, permission_denied, invalid, max_streams.',
        labelNames: ['result'] as const,
        registers,
      });
      this.#refused = new Counter({
        name: 'bpfmesh_tap_connections_refused_total',
        help: 'Control-port connections closed: reason="tls" (no TLS, a failed or slow handshake, no certificate yet), "max_connections".',
        labelNames: ['reason'] as const,
        registers,
      });
    }
    type Call = grpc.ServerWritableStream<ObserveRequestMsg, TapEventIn>;
    const { svcName } = opts.config;
    this.#servers.tap.addService(tapService(), { Observe: (call: Call) => this.#observe(call) });
    this.#servers.other.addService(tapService(), {
      Observe: (call: Call) =>
        this.#fail(call, grpc.status.PERMISSION_DENIED, 'permission_denied', `Unauthorized peer: the client's identity is not ${svcName}; only ${svcName} (LINKERD2_PROXY_TAP_SVC_NAME) may tap`),
    });
    this.#servers.none.addService(tapService(), {
      Observe: (call: Call) =>
        this.#fail(call, grpc.status.UNAUTHENTICATED, 'unauthenticated', `tap needs mTLS with the identity ${svcName}; the client presented no certificate that verifies against the trust anchors`),
    });
    const insecure = grpc.ServerCredentials.createInsecure();
    this.#injectors = {
      tap: this.#servers.tap.createConnectionInjector(insecure),
      other: this.#servers.other.createConnectionInjector(insecure),
      none: this.#servers.none.createConnectionInjector(insecure),
    };
  }

  /** Listens; resolves with the address bound (a configured port 0 picks one). */
  start(): Promise<Addr> {
    const { listen } = this.#opts;
    return new Promise((resolve, reject) => {
      const server = createServer({ noDelay: true }, (s) => this.#accept(s));
      server.once('error', (err: Error) =>
        reject(new BpfmeshError(ErrorCodes.LISTEN, `tap server: cannot listen on ${formatAddr(listen)} (LINKERD2_PROXY_CONTROL_LISTEN_ADDR): ${err.message}`, { cause: err })),
      );
      server.listen({ host: listen.host, port: listen.port, ipv6Only: listen.host.includes(':') }, () => {
        server.removeAllListeners('error');
        server.on('error', (err) => this.#log.warn({ err: err.message }, 'tap server error'));
        this.#server = server;
        const a = server.address();
        resolve(typeof a === 'object' && a !== null ? { host: listen.host, port: a.port } : listen);
      });
    });
  }

  #accept(sock: Socket): void {
    sock.on('error', () => {});
    if (this.#sockets.size >= this.#opts.config.maxStreams * CONNECTIONS_PER_STREAM) {
      this.#refused?.inc({ reason: 'max_connections' });
      return void sock.destroy();
    }
    this.#sockets.add(sock);
    sock.once('close', () => this.#sockets.delete(sock));
    acceptTls(sock, Buffer.alloc(0), this.#opts.store, { handshakeTimeoutMs: this.#opts.handshakeTimeoutMs ?? 5000, alpn: ['h2'] }).then(
      ({ tlsSocket, clientIdentity }) => {
        tlsSocket.on('error', (err: Error) => this.#log.debug({ err: err.message }, 'tap connection error'));
        // node:http2 does not serve a TLS socket handed to it after the handshake; a plain Duplex over it, it does.
        const verdict = clientIdentity === undefined ? 'none' : sameName(clientIdentity, this.#opts.config.svcName) ? 'tap' : 'other';
        if (verdict !== 'tap') this.#log.info({ peer: `${tlsSocket.remoteAddress}:${tlsSocket.remotePort}`, clientIdentity }, 'tap connection from a client that may not tap');
        this.#injectors[verdict].injectConnection(replayDuplex(tlsSocket, Buffer.alloc(0)));
      },
      (err: unknown) => {
        this.#refused?.inc({ reason: 'tls' });
        this.#log.debug({ code: errorCode(err), err: (err as Error).message }, 'tap connection refused');
        sock.destroy();
      },
    );
  }

  #fail(call: grpc.ServerWritableStream<ObserveRequestMsg, TapEventIn>, code: grpc.status, result: string, details: string): void {
    this.#streams?.inc({ result });
    this.#log.info({ result }, `tap refused: ${details}`);
    call.emit('error', { code, details });
  }

  /** Observe for a client whose verified identity is the tap identity. */
  #observe(call: grpc.ServerWritableStream<ObserveRequestMsg, TapEventIn>): void {
    const { config, hub } = this.#opts;
    const fail = (code: grpc.status, result: string, details: string): void => this.#fail(call, code, result, details);
    const req = call.request;
    if (req.limit === 0) return fail(grpc.status.INVALID_ARGUMENT, 'invalid', 'limit must be positive');
    let match: TapPredicate;
    try {
      match = compileMatch(req.match);
    } catch (err) {
      if (errorCode(err) !== TAP_INVALID) throw err;
      return fail(grpc.status.INVALID_ARGUMENT, 'invalid', (err as Error).message);
    }
    if (hub.streams >= config.maxStreams) {
      return fail(grpc.status.RESOURCE_EXHAUSTED, 'max_streams', `${config.maxStreams} tap streams are open (BPFMESH_PROXY_TAP_MAX_STREAMS)`);
    }
    this.#streams?.inc({ result: 'served' });
    let finished = false;
    const remove = hub.add({
      base: hub.nextBase(),
      limit: req.limit,
      match,
      // The call's own buffer is the queue: bounded, and dropped from past its bound.
      send: (ev) => {
        if (finished || call.writableLength >= config.queue) return false;
        call.write(ev);
        return true;
      },
      done: () => {
        finished = true;
        call.end();
      },
    });
    const gone = (): void => {
      finished = true;
      remove();
    };
    call.once('cancelled', gone);
    call.once('error', gone);
    call.once('close', gone);
    this.#log.info({ limit: req.limit }, 'tap stream opened');
  }

  async close(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    const closed = server === undefined ? Promise.resolve() : new Promise<void>((r) => server.close(() => r()));
    for (const g of Object.values(this.#servers)) g.forceShutdown();
    for (const s of this.#sockets) s.destroy();
    await closed;
  }

  get address(): string | undefined {
    const a = this.#server?.address();
    return typeof a === 'object' && a !== null ? formatAddr({ host: a.address, port: a.port }) : undefined;
  }
}
