// Keep-alive pool of upstream HTTP/1 connections, per endpoint key. A
// connection goes back to the pool only when its exchange ended cleanly
// (the owner decides: response fully read, keep-alive allowed, nothing
// extra on the wire). While idle it is kept reading, so a close or a stray
// byte from the server is seen at once and the connection is dropped.
// Idle connections expire after idleMs (Linkerd: 3 s), swept by one timer
// per pool rather than one per connection.
import type { Socket } from 'node:net';
import { errorCode } from '../../errors.js';
import { endpointKey, type ConnLabels, type Connector, type Endpoint, type ProxyMetrics } from '../types.js';

/** Who currently uses an upstream connection; its socket events go there. */
export interface UpstreamOwner {
  onUpstreamData(up: UpstreamConn, chunk: Buffer): void;
  onUpstreamEnd(up: UpstreamConn): void;
  /** The socket closed; `err` is the error that closed it, if any. */
  onUpstreamClose(up: UpstreamConn, err: Error | undefined): void;
}

/**
 * An upstream socket with permanent listeners that dispatch to the current
 * owner, so handing the connection from one exchange to the next adds and
 * removes no listeners.
 */
export class UpstreamConn {
  owner: UpstreamOwner | null = null;
  /** Exchanges completed on this connection. */
  uses = 0;
  idleSince = 0;
  /** The server half-closed or the socket failed: never reuse. */
  dead = false;
  error: Error | undefined;
  /** Bytes of this socket already reported to metrics (by whoever reports them). */
  reportedRead = 0;
  reportedWritten = 0;
  /** Called once when the socket closes (metrics). */
  onClosed: ((up: UpstreamConn) => void) | undefined;
  private pool: Http1Pool | null = null;

  constructor(
    readonly socket: Socket,
    readonly key: string,
  ) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
  }

  /** Usable for another exchange. */
  get reusable(): boolean {
    const s = this.socket;
    return !this.dead && !s.destroyed && s.writable && !s.readableEnded;
  }

  destroy(): void {
    this.dead = true;
    this.socket.destroy();
  }

  /** @internal the pool marks its idle connections. */
  setPool(pool: Http1Pool | null): void {
    this.pool = pool;
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.owner !== null) return this.owner.onUpstreamData(this, chunk);
    // A byte while idle is a protocol error (or a late response): drop it.
    this.destroy();
  };

  private readonly onEnd = (): void => {
    this.dead = true;
    if (this.owner !== null) return this.owner.onUpstreamEnd(this);
    this.destroy();
  };

  private readonly onError = (err: Error): void => {
    this.dead = true;
    this.error ??= err;
  };

  private readonly onClose = (): void => {
    this.dead = true;
    this.pool?.forget(this);
    this.pool = null;
    const owner = this.owner;
    this.owner = null;
    owner?.onUpstreamClose(this, this.error);
    this.onClosed?.(this);
  };
}

export interface PoolOptions {
  /** How long a connection may stay idle (Linkerd's HTTP/1 pool idle timeout is 3 s). */
  idleMs?: number;
  /** Idle connections kept per key; more are closed on release. */
  maxIdlePerKey?: number;
}

export class Http1Pool {
  readonly idleMs: number;
  readonly maxIdlePerKey: number;
  /** Per key, oldest first; acquire takes the most recently used (warmest). */
  private readonly idle = new Map<string, UpstreamConn[]>();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(opts: PoolOptions = {}) {
    this.idleMs = opts.idleMs ?? 3000;
    this.maxIdlePerKey = opts.maxIdlePerKey ?? 256;
  }

  /** An idle connection for `key`, now owned by `owner`, or undefined. */
  acquire(key: string, owner: UpstreamOwner): UpstreamConn | undefined {
    const list = this.idle.get(key);
    if (list === undefined) return undefined;
    let up: UpstreamConn | undefined;
    while ((up = list.pop()) !== undefined) {
      up.setPool(null);
      if (up.reusable) {
        up.owner = owner;
        break;
      }
      up.destroy();
    }
    if (list.length === 0) this.idle.delete(key);
    return up;
  }

  /** Take back a connection whose exchange ended cleanly; false when it was closed instead. */
  release(up: UpstreamConn): boolean {
    up.owner = null;
    up.uses++;
    const list = this.idle.get(up.key);
    if (this.closed || !up.reusable || (list?.length ?? 0) >= this.maxIdlePerKey) {
      up.destroy();
      return false;
    }
    up.idleSince = performance.now();
    up.setPool(this);
    if (list === undefined) this.idle.set(up.key, [up]);
    else list.push(up);
    // Keep reading so that a FIN or RST from the server is noticed now.
    up.socket.resume();
    this.timer ??= setTimeout(this.sweep, this.idleMs).unref();
    return true;
  }

  /** @internal an idle connection closed by itself. */
  forget(up: UpstreamConn): void {
    const list = this.idle.get(up.key);
    if (list === undefined) return;
    const i = list.indexOf(up);
    if (i !== -1) list.splice(i, 1);
    if (list.length === 0) this.idle.delete(up.key);
  }

  idleCount(key?: string): number {
    if (key !== undefined) return this.idle.get(key)?.length ?? 0;
    let n = 0;
    for (const l of this.idle.values()) n += l.length;
    return n;
  }

  /** Close every idle connection; later releases close theirs. */
  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    for (const list of this.idle.values()) for (const up of list) up.destroy();
    this.idle.clear();
  }

  private readonly sweep = (): void => {
    this.timer = null;
    const now = performance.now();
    let next = Infinity;
    for (const [key, list] of this.idle) {
      let k = 0;
      while (k < list.length && now - list[k]!.idleSince >= this.idleMs) k++;
      for (const up of list.splice(0, k)) {
        up.setPool(null);
        up.destroy();
      }
      if (list.length === 0) this.idle.delete(key);
      else next = Math.min(next, list[0]!.idleSince + this.idleMs - now);
    }
    if (next !== Infinity) this.timer = setTimeout(this.sweep, Math.max(1, next)).unref();
  };
}

/**
 * A new HTTP/1 connection to `ep`, counted as a dst connection under
 * `labels` (open now; bytes not yet reported and the close when it closes).
 * Shared by the HTTP/1 forwarder and the l5d-orig-proto downgrade, so both
 * open and count their upstream connections the same way.
 */
export async function dialUpstream(ep: Endpoint, connect: Connector, metrics: ProxyMetrics, labels: ConnLabels): Promise<UpstreamConn> {
  const sock = await connect(ep.addr, ep);
  const up = new UpstreamConn(sock, endpointKey(ep, 'http1'));
  sock.setNoDelay(true);
  metrics.tcpOpen(labels, 'dst');
  up.onClosed = (u): void => {
    const r = u.socket.bytesRead - u.reportedRead;
    const w = u.socket.bytesWritten - u.reportedWritten;
    u.reportedRead += r;
    u.reportedWritten += w;
    if (r > 0) metrics.tcpRead(labels, 'dst', r);
    if (w > 0) metrics.tcpWrite(labels, 'dst', w);
    metrics.tcpClose(labels, 'dst', errorCode(u.error));
  };
  return up;
}
