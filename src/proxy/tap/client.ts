// A tap client (what `bpfmesh tap` runs): Observe on a proxy's control
// port over mTLS, presenting the tap identity's certificate and checking
// the proxy's chain against the trust anchors (and its name, when known).
import { createSecureContext } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { BpfmeshError, ErrorCodes } from '../../errors.js';
import { tapClientCtor, type ObserveRequestIn, type TapEventMsg } from '../../control/protos.js';
import { nameMatches, parseSubjectAltName } from '../../tls/certs.js';
import { formatAddr, type Addr } from '../types.js';

export interface ObserveOptions {
  addr: Addr;
  /** The proxy's identity: sent as SNI and checked against its certificate; without it only the chain is checked. */
  serverId?: string | undefined;
  certPem: string;
  keyPem: string;
  trustAnchorsPem: string;
  request: ObserveRequestIn;
  onEvent(ev: TapEventMsg): void;
  /** Aborts the stream (Ctrl-C): resolves instead of failing. */
  signal?: AbortSignal;
}

/** Streams events until the proxy ends the stream (limit reached and done) or `signal` aborts; rejects with a coded error. */
export function observe(o: ObserveOptions): Promise<void> {
  const target = formatAddr(o.addr);
  let context: ReturnType<typeof createSecureContext>;
  try {
    context = createSecureContext({ ca: o.trustAnchorsPem, cert: o.certPem, key: o.keyPem, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' });
  } catch (err) {
    return Promise.reject(new BpfmeshError(ErrorCodes.BAD_FLAG, `the tap identity's certificate, key or trust anchors cannot be used (PEM; the key must be the certificate's): ${(err as Error).message}`));
  }
  const serverId = o.serverId;
  const creds = grpc.credentials.createFromSecureContext(context, {
    checkServerIdentity: (_host, cert) => {
      if (serverId === undefined) return undefined;
      const ok = parseSubjectAltName(cert.subjectaltname).some((e) => (e.type === 'DNS' || e.type === 'URI') && nameMatches(e, serverId));
      return ok ? undefined : new Error(`the proxy at ${target} presents ${cert.subjectaltname ?? 'no SAN'}, not ${serverId}`);
    },
  });
  const Client = tapClientCtor();
  const client = new Client(target, creds, serverId === undefined ? {} : { 'grpc.ssl_target_name_override': serverId });
  return new Promise<void>((resolve, reject) => {
    const call = client.Observe(o.request);
    let aborted = false;
    const onAbort = (): void => {
      aborted = true;
      call.cancel();
    };
    o.signal?.addEventListener('abort', onAbort, { once: true });
    call.on('data', (ev: TapEventMsg) => o.onEvent(ev));
    call.on('error', (err: grpc.ServiceError) => {
      if (aborted && err.code === grpc.status.CANCELLED) return;
      reject(statusError(err, target));
    });
    call.on('end', () => {
      o.signal?.removeEventListener('abort', onAbort);
      client.close();
      resolve();
    });
  }).finally(() => client.close());
}

function statusError(err: grpc.ServiceError, target: string): BpfmeshError {
  const why = err.details || err.message;
  switch (err.code) {
    case grpc.status.UNAUTHENTICATED:
    case grpc.status.PERMISSION_DENIED:
      return new BpfmeshError(ErrorCodes.TAP_DENIED, `the proxy at ${target} refused to be tapped (${grpc.status[err.code]}): ${why}; present the tap identity's certificate (LINKERD2_PROXY_TAP_SVC_NAME), issued from the mesh's trust anchors`);
    case grpc.status.INVALID_ARGUMENT:
      return new BpfmeshError(ErrorCodes.TAP_INVALID, `the proxy at ${target} refused the tap request: ${why}`);
    default:
      return new BpfmeshError(
        ErrorCodes.TAP_UNAVAILABLE,
        `tap at ${target} failed (${grpc.status[err.code] ?? err.code}): ${why}; is tap on there (LINKERD2_PROXY_TAP_SVC_NAME, identity enabled), the control port reachable, and its certificate from these trust anchors?`,
      );
  }
}
