// Outbound mTLS, Linkerd's rules: SNI = the endpoint's server_name; the
// server's chain must verify against the trust anchors (no hostname check:
// identities are not hostnames); then the leaf's DNS (or URI) SANs must
// contain the identity discovery gave for the endpoint. Our certificate goes
// along as the client certificate. TLS 1.3 only, no session resumption
// (the store's context; no `session` is ever offered).
import type { Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { formatAddr, type Addr } from '../util/addr.js';
import type { Connector } from '../util/endpoint.js';
import { identityNames, nameMatches } from './certs.js';
import type { TlsStore } from './tls-store.js';

export interface ExpectedServer {
  /** The identity the server's certificate must carry (Endpoint.identity). */
  identity: string;
  /** SNI to send (Linkerd's server_name; equal to the identity for meshed endpoints). */
  serverName: string;
}

export type TlsConnector = (to: Addr, expected: ExpectedServer) => Promise<TLSSocket>;

export interface TlsConnectorOptions {
  /** Bound on the handshake after the TCP connect; default 10 s. */
  handshakeTimeoutMs?: number;
}

/**
 * A client TLSSocket that has sent its ClientHello. tls.connect()'s own host
 * check is off (identities are not host names; the SAN check below replaces
 * it) and so is rejectUnauthorized: OpenSSL still verifies the chain against
 * the anchors, and its verdict is read on 'secure' (chainVerifyError), so
 * every failure takes the same path. (Starting a bare TLSSocket would save
 * the ~0.5 ms tls.connect spends turning the peer chain into JS objects, but
 * needs internal methods, and http2 then waits forever for a
 * 'secureConnect' that only tls.connect emits.)
 */
function startClient(tcp: Socket, serverName: string, secureContext: TlsStore['clientContext']): TLSSocket {
  return tlsConnect({ socket: tcp, servername: serverName, secureContext, rejectUnauthorized: false, checkServerIdentity: () => undefined });
}

// OpenSSL's X509 verify results as Node names them (the `code` of the
// error tls.connect raises when rejectUnauthorized is set): the chain did
// not verify, as opposed to the handshake itself failing.
const VERIFY_CODES = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID',
  'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
]);

/** Whether a tls.connect error is a failed chain verification (BPFMESH_E_TLS_VERIFY). */
const firstLine = (s: string): string => s.split('\n', 1)[0] ?? s;

export const isVerifyError = (err: unknown): boolean =>
  typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' && VERIFY_CODES.has(err.code);

/**
 * Wraps a TCP Connector into one that originates mTLS. Rejects with the
 * base connector's errors (BPFMESH_E_CONNECT, BPFMESH_E_CONNECT_TIMEOUT),
 * BPFMESH_E_TLS_NOT_READY (no certificate yet; nothing is connected),
 * BPFMESH_E_TLS_VERIFY (untrusted, expired...: OpenSSL's reason and code),
 * BPFMESH_E_IDENTITY_MISMATCH (a trusted certificate for someone else),
 * BPFMESH_E_TLS_HANDSHAKE or BPFMESH_E_TLS_TIMEOUT; the sockets are
 * destroyed then. The resolved socket has no 'error' listener: attach one
 * before yielding.
 */
export function tlsConnector(base: Connector, store: TlsStore, opts: TlsConnectorOptions = {}): TlsConnector {
  const timeoutMs = opts.handshakeTimeoutMs ?? 10_000;
  return async (to, expected) => {
    // The context current when the connection starts; a rotation meanwhile applies to the next one.
    const secureContext = store.clientContext;
    const tcp = await base(to);
    return handshake(tcp, to, expected, secureContext, timeoutMs);
  };
}

function handshake(
  tcp: Socket,
  to: Addr,
  expected: ExpectedServer,
  secureContext: TlsStore['clientContext'],
  timeoutMs: number,
): Promise<TLSSocket> {
  const where = `${formatAddr(to)} (${expected.identity})`;
  return new Promise((resolve, reject) => {
    const tls = startClient(tcp, expected.serverName, secureContext);
    let settled = false;
    const done = (err: BpfmeshError | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      tls.off('secure', onSecure);
      tls.off('error', onError);
      tls.off('close', onClose);
      tls.off('end', onClose);
      if (err === null) return resolve(tls);
      tls.destroy();
      tcp.destroy();
      // Late errors from the destroyed sockets must not become uncaught ones.
      tls.on('error', () => {});
      tcp.on('error', () => {});
      reject(err);
    };
    const onSecure = (): void => {
      // What tls.connect does on 'secure': OpenSSL's verdict on the chain.
      const verifyError = chainVerifyError(tls);
      if (verifyError !== null) {
        const code = isVerifyError(verifyError) ? ErrorCodes.TLS_VERIFY : ErrorCodes.TLS_HANDSHAKE;
        return done(new BpfmeshError(code, `TLS to ${where}: ${verifyError.code ?? ''}${verifyError.code ? ': ' : ''}${firstLine(verifyError.message)}`, { cause: verifyError }));
      }
      tls.authorized = true;
      const cert = tls.getPeerX509Certificate();
      const names = cert === undefined ? [] : identityNames(cert);
      if (!names.some((n) => nameMatches(n, expected.identity))) {
        return done(
          new BpfmeshError(ErrorCodes.IDENTITY_MISMATCH, `TLS to ${formatAddr(to)}: expected ${expected.identity}, got [${names.map((n) => n.value).join(', ')}]`),
        );
      }
      done(null);
    };
    const onError = (err: Error & { code?: string }): void => {
      const reason = `${err.code ?? ''}${err.code ? ': ' : ''}${firstLine(err.message)}`;
      const code = isVerifyError(err) ? ErrorCodes.TLS_VERIFY : ErrorCodes.TLS_HANDSHAKE;
      done(new BpfmeshError(code, `TLS to ${where}: ${reason}`, { cause: err }));
    };
    const onClose = (): void => done(new BpfmeshError(ErrorCodes.TLS_HANDSHAKE, `TLS to ${where}: closed during the handshake`));
    const timer = setTimeout(() => done(new BpfmeshError(ErrorCodes.TLS_TIMEOUT, `TLS to ${where}: no handshake within ${timeoutMs} ms`)), timeoutMs);
    tls.once('secure', onSecure);
    tls.on('error', onError);
    tls.once('close', onClose);
    // The TCP socket is half-open capable: a server that gives up mid-handshake may only send a FIN.
    tls.once('end', onClose);
  });
}

/**
 * OpenSSL's verdict on the server's chain against the context's CA list
 * (the trust anchors), null when it verified. Fails closed if the internal
 * handle ever changes.
 */
function chainVerifyError(s: TLSSocket): (Error & { code?: string }) | null {
  const handle = (s as unknown as { _handle?: { verifyError?: () => (Error & { code?: string }) | null | undefined } })._handle;
  if (typeof handle?.verifyError !== 'function') return Object.assign(new Error('UNVERIFIABLE (no verifyError on the TLS handle)'), { code: 'CERT_UNTRUSTED' });
  return handle.verifyError() ?? null;
}
