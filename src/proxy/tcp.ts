// Opaque TCP: connect to an upstream, then relay bytes both ways with
// backpressure, half-close and teardown on both sides, counting per peer
// (src = the accepted client, dst = the upstream), as Linkerd's TCP metrics do.
import { connect, isIPv6, type Socket } from 'node:net';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { formatAddr, type Addr, type ConnLabels, type Connector, type Peer, type ProxyMetrics } from './types.js';

/**
 * Opens a connection with Nagle off and half-open allowed. Rejects with
 * BPFMESH_E_CONNECT (errno, syscall "connect", the Node error as cause: its
 * `code`, e.g. ECONNREFUSED, is also in the message) or
 * BPFMESH_E_CONNECT_TIMEOUT. timeoutMs <= 0 or not finite: no timeout.
 * The resolved socket has no 'error' listener: attach one before yielding.
 */
export function connectTo(to: Addr, timeoutMs: number, sockets?: SocketSource): Promise<Socket> {
  return new Promise((resolve, reject) => {
    let sock: Socket;
    if (sockets === undefined) sock = connect({ host: to.host, port: to.port, allowHalfOpen: true, noDelay: true });
    else {
      // An unconnected socket made elsewhere (a pod's netns): connect it in this tick, before Node reads from it.
      sock = sockets.socket(isIPv6(to.host) ? 6 : 4);
      sock.setNoDelay(true);
      sock.connect({ host: to.host, port: to.port });
    }
    let timer: NodeJS.Timeout | undefined;
    const fail = (err: BpfmeshError): void => {
      clearTimeout(timer);
      sock.off('error', onError);
      sock.destroy();
      // A late error from the destroyed socket must not become an uncaught one.
      sock.on('error', () => {});
      reject(err);
    };
    const onError = (err: NodeJS.ErrnoException): void =>
      fail(
        new BpfmeshError(ErrorCodes.CONNECT, `connect to ${formatAddr(to)}: ${err.code ?? err.message}`, {
          errno: typeof err.errno === 'number' ? Math.abs(err.errno) : 0,
          syscall: 'connect',
          cause: err,
        }),
      );
    sock.once('error', onError);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.off('error', onError);
      resolve(sock);
    });
    if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
      timer = setTimeout(
        () => fail(new BpfmeshError(ErrorCodes.CONNECT_TIMEOUT, `connect to ${formatAddr(to)}: no answer within ${timeoutMs} ms`, { syscall: 'connect' })),
        timeoutMs,
      );
    }
  });
}

/** A Connector (types.ts) with a fixed timeout, e.g. the inbound or outbound connect timeout. */
export const connector =
  (timeoutMs: number, sockets?: SocketSource): Connector =>
  (to) =>
    connectTo(to, timeoutMs, sockets);

/** Makes the unconnected socket an upstream connection starts from (the node proxy: inside the pod's netns). */
export interface SocketSource {
  socket(family: 4 | 6): Socket;
}

/**
 * The errno name for the tcp_close_total label: a Node error's code
 * (ECONNRESET), the cause's for a BPFMESH_E_CONNECT (ECONNREFUSED),
 * ETIMEDOUT for BPFMESH_E_CONNECT_TIMEOUT; UNKNOWN otherwise.
 */
export function errnoOf(err: unknown): string {
  const codeOf = (e: unknown): unknown => (typeof e === 'object' && e !== null && 'code' in e ? e.code : undefined);
  const code = codeOf(err);
  if (code === ErrorCodes.CONNECT_TIMEOUT) return 'ETIMEDOUT';
  if (code === ErrorCodes.CONNECT) return errnoOf((err as Error).cause);
  return typeof code === 'string' && code !== '' ? code : 'UNKNOWN';
}

/** Tell the peer the stream broke (RST) rather than ended (FIN). */
function abort(s: Socket): void {
  if (s.destroyed) return;
  // resetAndDestroy throws when the socket has no TCP handle (e.g. not connected).
  try {
    s.resetAndDestroy();
  } catch {
    s.destroy();
  }
}

/**
 * Relays `client` <-> `upstream` until both are closed. `replay` (the bytes
 * protocol detection already read from the client) goes upstream first and
 * counts as read from src. Owns the connection metrics of both sockets from
 * here on: tcpOpen/tcpClose for src and dst, bytes read and written per peer.
 * A FIN from one side ends the other's write side and the other direction
 * keeps flowing. An error on one side (counted with its errno) resets the
 * other. Never rejects.
 */
export function forwardOpaque(
  client: Socket,
  replay: Buffer,
  upstream: Socket,
  labels: ConnLabels,
  metrics: ProxyMetrics,
  /** The upstream's labels (the endpoint's: server_id, dst_*); default `labels`. */
  dstLabels: ConnLabels = labels,
  /** No byte either way for this long closes both sides (counted as ETIMEDOUT); 0: never. */
  idleMs = 0,
): Promise<void> {
  const of = (peer: Peer): ConnLabels => (peer === 'src' ? labels : dstLabels);
  return new Promise((resolve) => {
    const errnos = new Map<Socket, string>();
    let closed = 0;
    let failed = false;

    const fail = (sock: Socket, err: unknown): void => {
      if (!errnos.has(sock)) errnos.set(sock, errnoOf(err));
      if (failed) return;
      failed = true;
      abort(sock === client ? upstream : client);
      sock.destroy();
    };

    const watch = (sock: Socket, other: Socket, peer: Peer): void => {
      sock.allowHalfOpen = true; // a FIN from the peer must not end our write side
      sock.setNoDelay(true);
      sock.on('error', (err) => fail(sock, err));
      let done = false;
      const onClose = (): void => {
        if (done) return;
        done = true;
        metrics.tcpClose(of(peer), peer, errnos.get(sock));
        if (!other.destroyed) {
          // Closed after both directions ended: let the other side flush and
          // close on its own. Closed any other way (destroyed by its owner):
          // the relay is broken, so break the other side too.
          if (sock.readableEnded && sock.writableFinished) {
            if (!other.writableEnded) other.end();
          } else {
            abort(other);
          }
        }
        if (++closed === 2) resolve();
      };
      sock.on('close', onClose);
      metrics.tcpOpen(of(peer), peer);
      if (sock.closed) queueMicrotask(onClose);
    };

    /** from -> to, pausing `from` while `to` is over its high-water mark. */
    const pump = (from: Socket, to: Socket, fromPeer: Peer, toPeer: Peer): void => {
      from.on('data', (chunk: Buffer) => {
        metrics.tcpRead(of(fromPeer), fromPeer, chunk.length);
        if (to.destroyed) return;
        metrics.tcpWrite(of(toPeer), toPeer, chunk.length);
        if (!to.write(chunk)) from.pause();
      });
      to.on('drain', () => from.resume());
      const ended = (): void => {
        if (!to.destroyed && !to.writableEnded) to.end();
      };
      // Detection may have consumed the client's FIN already (it closed before sending a byte, or right after its first ones).
      if (from.readableEnded) ended();
      else from.on('end', ended);
    };

    watch(client, upstream, 'src');
    watch(upstream, client, 'dst');
    if (idleMs > 0 && Number.isFinite(idleMs)) {
      // Each socket's timer is refreshed by its reads and writes, and a relay
      // reads on one side what it writes on the other: either one idle means
      // no byte moved either way.
      const idle = (): void => fail(client, Object.assign(new Error(`opaque connection idle for ${idleMs} ms`), { code: 'ETIMEDOUT' }));
      client.setTimeout(idleMs, idle);
      upstream.setTimeout(idleMs, idle);
    }
    if (client.destroyed || upstream.destroyed) {
      abort(client);
      abort(upstream);
      return;
    }

    let replayBlocked = false;
    if (replay.length > 0) {
      metrics.tcpRead(labels, 'src', replay.length);
      metrics.tcpWrite(dstLabels, 'dst', replay.length);
      replayBlocked = !upstream.write(replay);
    }
    pump(client, upstream, 'src', 'dst');
    pump(upstream, client, 'dst', 'src');
    // Detection may have left the client paused; 'drain' resumes it when the replay is blocked.
    if (replayBlocked) client.pause();
    else client.resume();
    upstream.resume();
  });
}
