// A pod's sockets, made by the node proxy inside the pod's network
// namespace: its listeners (so the app's redirected connects and sk_lookup
// land on them) and every upstream connection (so it leaves with the pod's
// IP). The netns is held by one fd from enrolment to close(): a kept fd
// keeps the whole namespace alive, so close() is part of withdrawal.
import { closeSync, openSync } from 'node:fs';
import { Socket } from 'node:net';
import { native } from '../bpf/native.js';
import { NODE_PROXY_MARK } from '../bpf/codecs.js';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { ProxySockets } from '../proxy/proxy.js';
import type { Addr } from '../util/addr.js';

export class PodSockets implements ProxySockets {
  readonly netnsPath: string;
  #fd: number;
  /** SO_REUSEPORT on listeners: a new node proxy listens beside the old one during a handover. */
  readonly #reusePort: boolean;

  constructor(netnsPath: string, opts: { reusePort?: boolean } = {}) {
    this.netnsPath = netnsPath;
    this.#reusePort = opts.reusePort ?? true;
    try {
      this.#fd = openSync(netnsPath, 'r');
    } catch (err) {
      throw new BpfmeshError(ErrorCodes.NO_NETNS, `node proxy: cannot open the pod's network namespace ${netnsPath}: ${(err as Error).message}`, { cause: err });
    }
  }

  #netns(): number {
    if (this.#fd < 0) throw new BpfmeshError(ErrorCodes.STATE, `node proxy: the pod's network namespace ${this.netnsPath} was released`);
    return this.#fd;
  }

  listenFd(addr: Addr, backlog: number): number {
    return native().listenInNetns(this.#netns(), addr.host, addr.port, backlog, NODE_PROXY_MARK, this.#reusePort);
  }

  socket(family: 4 | 6): Socket {
    const fd = native().socketInNetns(this.#netns(), family, NODE_PROXY_MARK);
    return new Socket({ fd, allowHalfOpen: true, readable: true, writable: true });
  }

  /**
   * net.ipv4.tcp_migrate_req=1 in the pod (Linux 5.14+): handshakes queued
   * on a closing listener move to the other SO_REUSEPORT listener, so a node
   * proxy handing over to a new one resets none. False when the kernel lacks it.
   */
  migrateRequests(): boolean {
    try {
      native().sysctlInNetns(this.#netns(), 'net.ipv4.tcp_migrate_req', '1');
      return true;
    } catch {
      return false;
    }
  }

  /** Addresses of the pod's interfaces (read inside its netns). */
  addresses(): string[] {
    return native().netnsAddresses(this.#netns());
  }

  close(): void {
    if (this.#fd < 0) return;
    closeSync(this.#fd);
    this.#fd = -1;
  }
}
