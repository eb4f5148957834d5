// What a connection's TLS status looks like to metrics and to the app:
// Linkerd's label sets (linkerd2-proxy transport/labels.rs) and the
// l5d-client-id request header.
//
// Inbound (server side):
//   terminated here           tls="true",client_id="<id>"  (client_id="" without a client certificate)
//   TLS for another name      tls="opaque",sni="<sni>"      (passed through)
//   no TLS                    tls="no_identity",no_tls_reason="<reason>"
//   identity disabled         tls="disabled"
// Outbound (client side):
//   mTLS                      tls="true",server_id="<id>"
//   no TLS                    tls="no_identity",no_tls_reason="<reason>"
//   identity disabled         tls="disabled"
import type { OutgoingHttpHeaders } from 'node:http';
import type { ClientHelloPeek } from './server.js';

export const L5D_CLIENT_ID = 'l5d-client-id';

/** linkerd2-proxy's NoServerTls, as it prints them. */
export type NoServerTlsReason =
  | 'disabled' // identity administratively disabled
  | 'loopback' // a loopback connection (e.g. the app to its own proxy)
  | 'port_skipped' // a port configured to skip TLS detection
  | 'no_tls_from_remote'; // no ClientHello with an SNI (Linkerd's NoClientHello)

/** linkerd2-proxy's NoClientTls, as it prints them. */
export type NoClientTlsReason =
  | 'disabled'
  | 'loopback'
  | 'not_provided_by_service_discovery' // the endpoint has no identity: not meshed
  | 'ingress_without_override';

export type ServerTls =
  | { kind: 'established'; clientId?: string | undefined }
  | { kind: 'passthru'; sni: string }
  | { kind: 'none'; reason: NoServerTlsReason };

export type ClientTls = { kind: 'established'; serverId: string } | { kind: 'none'; reason: NoClientTlsReason };

/** Labels to add to a connection's metrics (next to direction, target_addr...). */
export interface TlsLabels {
  tls: 'true' | 'opaque' | 'no_identity' | 'disabled';
  client_id?: string;
  server_id?: string;
  sni?: string;
  no_tls_reason?: string;
}

export function serverTlsLabels(s: ServerTls): TlsLabels {
  switch (s.kind) {
    case 'established':
      return { tls: 'true', client_id: s.clientId ?? '' };
    case 'passthru':
      return { tls: 'opaque', sni: s.sni };
    case 'none':
      return s.reason === 'disabled' ? { tls: 'disabled' } : { tls: 'no_identity', no_tls_reason: s.reason };
  }
}

export function clientTlsLabels(c: ClientTls): TlsLabels {
  if (c.kind === 'established') return { tls: 'true', server_id: c.serverId };
  return c.reason === 'disabled' ? { tls: 'disabled' } : { tls: 'no_identity', no_tls_reason: c.reason };
}

/**
 * The inbound status from the peek (and the handshake, when terminated):
 * a ClientHello without SNI counts as no TLS, as in Linkerd, whose SNI
 * detection answers "no ClientHello" for it.
 */
export function inboundTls(peek: ClientHelloPeek, terminated?: { clientIdentity?: string | undefined }): ServerTls {
  if (terminated !== undefined) return { kind: 'established', clientId: terminated.clientIdentity };
  if (peek.isTls && peek.sni !== undefined) return { kind: 'passthru', sni: peek.sni };
  return { kind: 'none', reason: 'no_tls_from_remote' };
}

/** The l5d-client-id value an inbound request gets: the verified client identity, if any. */
export function clientIdHeaderValue(s: ServerTls): string | undefined {
  return s.kind === 'established' ? s.clientId : undefined;
}

/**
 * Sets l5d-client-id on HTTP/2-style header objects, after removing any the
 * client sent (under any case): only the proxy may vouch for an identity.
 */
export function setClientIdHeader(headers: OutgoingHttpHeaders, clientId: string | undefined): OutgoingHttpHeaders {
  for (const k of Object.keys(headers)) if (k.toLowerCase() === L5D_CLIENT_ID) delete headers[k];
  if (clientId !== undefined) headers[L5D_CLIENT_ID] = clientId;
  return headers;
}

/** For HTTP/1 heads rewritten as text: the header line to append ("" without identity). Drop the client's own l5d-client-id lines too. */
export function clientIdHeaderLine(clientId: string | undefined): string {
  return clientId === undefined ? '' : `${L5D_CLIENT_ID}: ${clientId}\r\n`;
}
