// Inbound mTLS, linkerd2-proxy's way: read the ClientHello's SNI without
// consuming anything (the bytes are handed back for replay); terminate TLS
// only when the SNI is our own identity; pass any other TLS, and plaintext,
// on to the next layer. A client certificate is requested but not required;
// a verified one gives the client identity (its first DNS or URI SAN).
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { firstIdentity } from './certs.js';
import { parseClientHello } from './client-hello.js';
import { sameName, type TlsStore } from './tls-store.js';

export interface ClientHelloPeek {
  /** A TLS ClientHello (SNI or not). False for plaintext, a malformed hello, a timeout or an EOF. */
  isTls: boolean;
  /** The host_name of the server_name extension, when there is a valid one. */
  sni?: string;
  /** Every byte read, to be replayed (acceptTls, or sock.unshift() before protocol detection, or forwardOpaque's replay). */
  buffered: Buffer;
  /** No decision within the timeout (Linkerd fails such a connection: "TLS detection timed out"). */
  timedOut: boolean;
  /** The peer closed its side (or the socket failed) before a decision; 'end' has already been emitted. */
  eof: boolean;
}

export const DEFAULT_PEEK_MAX_BYTES = 16 * 1024;

/** OpenSSL messages carry a stack on further lines. */
const firstLine = (s: string): string => s.split('\n', 1)[0] ?? s;

/**
 * Reads from `sock` until the first bytes tell whether they are a TLS
 * ClientHello, and with which SNI: often one read, several when the hello
 * arrives in pieces; at most `maxBytes` (beyond which a hello counts as TLS
 * without SNI). Like detectProtocol, it leaves the socket paused, so what
 * arrives later stays queued in it. Never rejects.
 */
export function peekClientHello(sock: Socket, timeoutMs: number, maxBytes = DEFAULT_PEEK_MAX_BYTES): Promise<ClientHelloPeek> {
  return new Promise((resolve) => {
    let buffered: Buffer = Buffer.alloc(0);
    let settled = false;
    const finish = (r: { isTls: boolean; sni?: string | undefined; timedOut?: boolean; eof?: boolean }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.pause();
      sock.off('data', onData);
      sock.off('end', onEnd);
      sock.off('error', onEnd);
      sock.off('close', onEnd);
      resolve({ isTls: r.isTls, ...(r.sni !== undefined ? { sni: r.sni } : {}), buffered, timedOut: r.timedOut ?? false, eof: r.eof ?? false });
    };
    const onData = (chunk: Buffer): void => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const v = parseClientHello(buffered, maxBytes);
      if (v.kind === 'not_tls') return finish({ isTls: false });
      if (v.kind === 'client_hello') return finish({ isTls: true, sni: v.sni });
      // Still 'more' at the limit: the record header said handshake/ClientHello, the rest did not fit.
      if (buffered.length >= maxBytes) finish({ isTls: true });
    };
    // The socket's owner sees errors through its own listeners; here one only ends the peek.
    const onEnd = (): void => finish({ isTls: false, eof: true });
    const timer = setTimeout(() => finish({ isTls: false, timedOut: true }), timeoutMs);
    if (sock.destroyed || sock.readableEnded) return finish({ isTls: false, eof: true });
    sock.on('data', onData);
    sock.on('end', onEnd);
    sock.on('error', onEnd);
    sock.on('close', onEnd);
    sock.resume();
  });
}

/**
 * Terminate TLS here only when the SNI names us (the configured identity,
 * even before the first certificate: acceptTls then refuses it rather than
 * the app receiving TLS meant for the proxy). Any other SNI is passthrough.
 */
export function shouldTerminate(sni: string | undefined, store: TlsStore): boolean {
  const id = store.identity;
  return sni !== undefined && id !== undefined && sameName(sni, id);
}

export interface AcceptTlsOptions {
  /** Bound on the handshake; default 10 s (Linkerd's detect timeout). */
  handshakeTimeoutMs?: number;
  log?: Logger;
  /**
   * A presented client certificate that does not verify: false (default)
   * accepts the connection without a client identity; true fails the
   * handshake, as rustls' AllowAnyAnonymousOrAuthenticatedClient in
   * linkerd2-proxy does.
   */
  rejectUnverifiedClientCert?: boolean;
  /** ALPN protocols to offer (the tap server's gRPC: ["h2"]); none by default. */
  alpn?: string[];
}

export interface AcceptedTls {
  tlsSocket: TLSSocket;
  /** The client's identity: first DNS/URI SAN of a client certificate that verified against the trust anchors. */
  clientIdentity?: string;
  /** Why a presented client certificate was not accepted (OpenSSL's verify code, e.g. CERT_HAS_EXPIRED). */
  clientCertError?: string;
}

/**
 * Terminates TLS on `sock`, replaying `buffered` (the peeked bytes) first.
 * TLS 1.3 with the store's current server context. Resolves after the
 * handshake with the TLS socket, paused like detectProtocol leaves sockets
 * (run detection on it next). Rejects with BPFMESH_E_TLS_NOT_READY,
 * BPFMESH_E_TLS_HANDSHAKE (the TLS socket destroyed), BPFMESH_E_TLS_TIMEOUT
 * or, with rejectUnverifiedClientCert, BPFMESH_E_TLS_VERIFY. The resolved
 * socket has no 'error' listener: attach one before yielding. Destroying
 * the TLS socket closes `sock`.
 */
export function acceptTls(sock: Socket, buffered: Buffer, store: TlsStore, opts: AcceptTlsOptions = {}): Promise<AcceptedTls> {
  if (!store.ready) return Promise.reject(new BpfmeshError(ErrorCodes.TLS_NOT_READY, `TLS for ${store.identity ?? 'us'} refused: no identity certificate yet`));
  const peer = `${sock.remoteAddress}:${sock.remotePort}`;
  if (buffered.length > 0) {
    if (sock.readableEnded) return Promise.reject(new BpfmeshError(ErrorCodes.TLS_HANDSHAKE, `TLS from ${peer}: the client closed before the handshake`));
    // TLSSocket reads what is already queued in a wrapped socket before its handle (initRead).
    sock.unshift(buffered);
  }
  const tlsSocket = new TLSSocket(sock, { isServer: true, secureContext: store.serverContext, requestCert: true, rejectUnauthorized: false, ...(opts.alpn ? { ALPNProtocols: opts.alpn } : {}) });
  const timeoutMs = opts.handshakeTimeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (err: BpfmeshError | null, ok?: AcceptedTls): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      tlsSocket.off('secure', onSecure);
      tlsSocket.off('error', onError);
      tlsSocket.off('close', onClose);
      tlsSocket.off('end', onClose);
      if (err !== null) {
        tlsSocket.destroy();
        // A late error from the destroyed socket must not become an uncaught one.
        tlsSocket.on('error', () => {});
        return reject(err);
      }
      tlsSocket.pause();
      resolve(ok!);
    };
    const onSecure = (): void => {
      const cert = tlsSocket.getPeerX509Certificate();
      if (cert === undefined) return done(null, { tlsSocket });
      const verifyError = peerVerifyError(tlsSocket);
      if (verifyError === null) {
        // What tls.Server does for its sockets; a bare TLSSocket leaves it false.
        tlsSocket.authorized = true;
        const clientIdentity = firstIdentity(cert);
        return done(null, { tlsSocket, ...(clientIdentity !== undefined ? { clientIdentity } : {}) });
      }
      opts.log?.info({ peer, reason: verifyError, subject: cert.subject, san: cert.subjectAltName }, 'client certificate does not verify; no client identity');
      if (opts.rejectUnverifiedClientCert === true) {
        return done(new BpfmeshError(ErrorCodes.TLS_VERIFY, `TLS from ${peer}: client certificate does not verify: ${verifyError}`));
      }
      done(null, { tlsSocket, clientCertError: verifyError });
    };
    const onError = (err: Error & { code?: string }): void =>
      done(new BpfmeshError(ErrorCodes.TLS_HANDSHAKE, `TLS from ${peer}: ${err.code ?? ''}${err.code ? ': ' : ''}${firstLine(err.message)}`, { cause: err }));
    // Half-open sockets (allowHalfOpen) see only 'end' when the client gives up mid-handshake.
    const onClose = (): void => done(new BpfmeshError(ErrorCodes.TLS_HANDSHAKE, `TLS from ${peer}: closed during the handshake`));
    const timer = setTimeout(() => done(new BpfmeshError(ErrorCodes.TLS_TIMEOUT, `TLS from ${peer}: no handshake within ${timeoutMs} ms`)), timeoutMs);
    tlsSocket.once('secure', onSecure);
    tlsSocket.on('error', onError);
    tlsSocket.once('close', onClose);
    tlsSocket.once('end', onClose);
  });
}

/**
 * OpenSSL's verdict on the client's chain (against the context's CA list,
 * our trust anchors), as an X509 verify code, or null when it verified.
 * tls.Server reads it this way in its own 'secure' handler; a TLSSocket
 * made with isServer outside a tls.Server never does, so `authorized`
 * stays false there. Fails closed if the internal handle ever changes.
 */
function peerVerifyError(s: TLSSocket): string | null {
  const handle = (s as unknown as { _handle?: { verifyError?: () => (Error & { code?: string }) | null } })._handle;
  if (typeof handle?.verifyError !== 'function') return 'UNVERIFIABLE (no verifyError on the TLS handle)';
  const err = handle.verifyError();
  return err === null || err === undefined ? null : (err.code ?? err.message);
}

