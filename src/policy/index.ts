// The proxy's hooks into inbound authorization: small functions the accept
// path (opaque TCP) and the per-request route (HTTP/1, HTTP/2) call.
import type { IncomingHttpHeaders } from 'node:http2';
import type { Socket } from 'node:net';
import { formatAddr, stripMapped, type Addr } from '../util/addr.js';
import { requestInfoOfH1, requestInfoOfH2, type H1RequestHead } from './http-request.js';
import type { InboundAuthorizer, InboundConn } from './authorizer.js';

// Types only: a value export would load the policy client (gRPC) into every proxy.
export type { InboundAuthorizer, InboundConn } from './authorizer.js';

/** What the authorizer needs of an accepted inbound connection. `tls`: mesh TLS terminated here. */
export function inboundConn(sock: Socket, target: Addr, tls: boolean, identity: string | undefined): InboundConn {
  return {
    targetIp: target.host,
    targetPort: target.port,
    targetAddr: formatAddr(target),
    client: { ip: stripMapped(sock.remoteAddress ?? ''), tls, identity },
  };
}

/**
 * Opaque TCP: false (and the connection destroyed) when the policy denies
 * it; when allowed, it is closed later if a policy change revokes it.
 */
export function admitConnection(authz: InboundAuthorizer, conn: InboundConn, sock: Socket): boolean {
  if (authz.connection(conn) !== null) {
    sock.destroy();
    return false;
  }
  const untrack = authz.watch(conn, () => sock.destroy());
  sock.once('close', untrack);
  return true;
}

/** An HTTP/1 route that throws BPFMESH_E_FORBIDDEN (403) or BPFMESH_E_ROUTE_NOT_FOUND (404) before routing. */
export function authorizeRequestH1<T>(authz: InboundAuthorizer, conn: InboundConn, route: () => T): (head: H1RequestHead) => T {
  return (head) => {
    const denial = authz.request(conn, requestInfoOfH1(head));
    if (denial !== null) throw denial;
    return route();
  };
}

/** The same for HTTP/2 (gRPC denials become PERMISSION_DENIED in the h2 layer). */
export function authorizeRequestH2<T>(authz: InboundAuthorizer, conn: InboundConn, route: () => T): (headers: IncomingHttpHeaders) => T {
  return (headers) => {
    const denial = authz.request(conn, requestInfoOfH2(headers));
    if (denial !== null) throw denial;
    return route();
  };
}
