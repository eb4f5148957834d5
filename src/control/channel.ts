// How a control-plane client reaches its server, as Linkerd decides it:
// plaintext on loopback; otherwise TLS that expects the server's identity
// (…_SVC_NAME). bpfmesh's TLS contexts live in src/tls/, so off loopback the
// caller passes the channel credentials they build; without them we refuse
// rather than talk plaintext to a remote control plane.
import * as grpc from '@grpc/grpc-js';
import type { ControlAddr } from '../config/proxy-env.js';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { formatAddr } from '../proxy/types.js';
import type { Backoff } from './backoff.js';

export interface Channel {
  target: string;
  credentials: grpc.ChannelCredentials;
  options: grpc.ChannelOptions;
}

export function controlChannel(svc: ControlAddr, what: string, credentials: grpc.ChannelCredentials | undefined, backoff: Backoff): Channel {
  const options: grpc.ChannelOptions = {
    // The channel's own reconnect schedule matches ours, so a returning
    // control plane is reached as soon as our backoff retries.
    'grpc.initial_reconnect_backoff_ms': backoff.minMs,
    'grpc.max_reconnect_backoff_ms': backoff.maxMs,
  };
  const target = formatAddr(svc.addr);
  if (svc.loopback) return { target, credentials: grpc.credentials.createInsecure(), options };
  if (credentials === undefined) {
    throw new BpfmeshError(
      ErrorCodes.CONTROL_TLS_UNSUPPORTED,
      `the ${what} service at ${target} is not on loopback: it needs TLS expecting ${svc.name ?? '(no name)'}, and no TLS credentials were given`,
    );
  }
  // SNI and the name checked in the server's certificate: its identity, not the DNS name we dial.
  if (svc.name !== undefined) options['grpc.ssl_target_name_override'] = svc.name;
  return { target, credentials, options };
}

/** A gRPC status name for logs and metric labels ("UNAVAILABLE"). */
export function statusName(code: number): string {
  return grpc.status[code] ?? String(code);
}
