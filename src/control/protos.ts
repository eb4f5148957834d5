// Linkerd's proxy API (proto/*.proto), loaded once with @grpc/proto-loader,
// with TypeScript shapes for the messages bpfmesh reads and writes, and the
// codecs between net.TcpAddress and Addr.
//
// Loader options, and what they mean for the shapes below:
// - keepCase: field names as in the .proto (context_token, not contextToken),
//   so the code reads like Linkerd's API.
// - longs: String: 64-bit integers (IPv6 halves, Timestamp.seconds) decode
//   to decimal strings; Number would lose bits of an IPv6 address. Encoding
//   accepts strings as well.
// - defaults: true: absent scalars decode to their zero value, absent
//   messages to null, absent maps to {}, absent lists to [].
// - oneofs: true: a oneof decodes with a virtual field naming its set member
//   (Update.update === 'add'); members not set are absent.
// - bytes decode to Buffer.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadSync, type PackageDefinition } from '@grpc/proto-loader';
import { REPO_ROOT } from '../config/paths.js';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { Addr } from '../proxy/types.js';
import { formatIp, parseIp } from '../util/ip.js';

export const PROTO_DIR = join(REPO_ROOT, 'proto');

export const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  // google/protobuf/timestamp.proto is resolved from protobufjs's bundled
  // well-known types, so only our own directory is an include path.
  includeDirs: [PROTO_DIR],
};

// ---- io.linkerd.proxy.net -------------------------------------------------

export interface Ipv6Msg {
  /** fixed64 as a decimal string: hextets 1-4. */
  first: string;
  /** fixed64 as a decimal string: hextets 5-8. */
  last: string;
}

export interface IpAddressMsg {
  ip?: 'ipv4' | 'ipv6';
  /** Big-endian value: the first octet is the most significant byte. */
  ipv4?: number;
  ipv6?: Ipv6Msg;
}

export interface TcpAddressMsg {
  ip: IpAddressMsg | null;
  port: number;
}

// ---- io.linkerd.proxy.destination -----------------------------------------

export interface GetDestinationMsg {
  scheme: string;
  path: string;
  context_token: string;
}

export interface DnsLikeIdentityMsg {
  name: string;
}

export interface TlsIdentityMsg {
  strategy?: 'dns_like_identity' | 'uri_like_identity';
  dns_like_identity?: DnsLikeIdentityMsg;
  uri_like_identity?: { uri: string };
  server_name?: DnsLikeIdentityMsg | null;
}

export interface ProtocolHintMsg {
  protocol?: 'h2' | 'opaque';
  h2?: Record<string, never>;
  opaque?: Record<string, never>;
  opaque_transport?: { inbound_port: number } | null;
}

export interface WeightedAddrMsg {
  addr: TcpAddressMsg | null;
  weight: number;
  metric_labels: Record<string, string>;
  tls_identity?: TlsIdentityMsg | null;
  protocol_hint?: ProtocolHintMsg | null;
}

export interface WeightedAddrSetMsg {
  addrs: WeightedAddrMsg[];
  metric_labels: Record<string, string>;
}

export interface AddrSetMsg {
  addrs: TcpAddressMsg[];
}

export interface NoEndpointsMsg {
  exists: boolean;
}

export interface UpdateMsg {
  update?: 'add' | 'remove' | 'no_endpoints';
  add?: WeightedAddrSetMsg;
  remove?: AddrSetMsg;
  no_endpoints?: NoEndpointsMsg;
}

/** Only the fields bpfmesh fills in; routes, budgets and overrides stay empty. */
export interface DestinationProfileMsg {
  opaque_protocol: boolean;
  fully_qualified_name: string;
  endpoint?: WeightedAddrMsg | null;
}

// ---- io.linkerd.proxy.identity --------------------------------------------

export interface TimestampMsg {
  /** int64 as a decimal string. */
  seconds: string;
  nanos: number;
}

export interface CertifyRequestMsg {
  identity: string;
  token: Buffer;
  certificate_signing_request: Buffer;
}

export interface CertifyResponseMsg {
  leaf_certificate: Buffer;
  intermediate_certificates: Buffer[];
  valid_until: TimestampMsg | null;
}

// ---- clients and services -------------------------------------------------

export interface DestinationClient extends grpc.Client {
  Get(request: GetDestinationMsg, metadata?: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<UpdateMsg>;
  GetProfile(
    request: GetDestinationMsg,
    metadata?: grpc.Metadata,
    options?: grpc.CallOptions,
  ): grpc.ClientReadableStream<DestinationProfileMsg>;
}

export interface IdentityClientStub extends grpc.Client {
  Certify(
    request: CertifyRequestMsg,
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: grpc.requestCallback<CertifyResponseMsg>,
  ): grpc.ClientUnaryCall;
}

export interface DestinationHandlers extends grpc.UntypedServiceImplementation {
  Get: grpc.handleServerStreamingCall<GetDestinationMsg, UpdateMsg>;
  GetProfile: grpc.handleServerStreamingCall<GetDestinationMsg, DestinationProfileMsg>;
}

export interface IdentityHandlers extends grpc.UntypedServiceImplementation {
  Certify: grpc.handleUnaryCall<CertifyRequestMsg, CertifyResponseMsg>;
}

type ClientCtor<C> = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => C;

interface Loaded {
  destination: grpc.ServiceClientConstructor;
  identity: grpc.ServiceClientConstructor;
}

let loaded: Loaded | undefined;

function load(): Loaded {
  if (loaded !== undefined) return loaded;
  let def: PackageDefinition;
  try {
    def = loadSync(['destination.proto', 'identity.proto'], LOADER_OPTIONS);
  } catch (err) {
    throw new BpfmeshError(ErrorCodes.NOT_FOUND, `cannot load the proxy API from ${PROTO_DIR}: ${(err as Error).message}`, { cause: err });
  }
  const ns = grpc.loadPackageDefinition(def) as unknown as {
    io: { linkerd: { proxy: { destination: { Destination: grpc.ServiceClientConstructor }; identity: { Identity: grpc.ServiceClientConstructor } } } };
  };
  loaded = { destination: ns.io.linkerd.proxy.destination.Destination, identity: ns.io.linkerd.proxy.identity.Identity };
  return loaded;
}

export function destinationClientCtor(): ClientCtor<DestinationClient> {
  return load().destination as unknown as ClientCtor<DestinationClient>;
}

export function identityClientCtor(): ClientCtor<IdentityClientStub> {
  return load().identity as unknown as ClientCtor<IdentityClientStub>;
}

export function destinationService(): grpc.ServiceDefinition<DestinationHandlers> {
  return load().destination.service as grpc.ServiceDefinition<DestinationHandlers>;
}

export function identityService(): grpc.ServiceDefinition<IdentityHandlers> {
  return load().identity.service as grpc.ServiceDefinition<IdentityHandlers>;
}

// ---- codecs ----------------------------------------------------------------

/** An IP address and port as net.TcpAddress; throws BPFMESH_E_BAD_ARGUMENT for a name. */
export function encodeTcpAddress(a: Addr): TcpAddressMsg {
  const ip = parseIp(a.host);
  if (ip === null) throw new BpfmeshError(ErrorCodes.BAD_ARGUMENT, `"${a.host}" is not an IP address`);
  if (ip.family === 4) return { ip: { ipv4: ip.bytes.readUInt32BE(0) }, port: a.port };
  return {
    ip: { ipv6: { first: ip.bytes.readBigUInt64BE(0).toString(), last: ip.bytes.readBigUInt64BE(8).toString() } },
    port: a.port,
  };
}

/** net.TcpAddress as an Addr; null when the message has no IP (a malformed update). */
export function decodeTcpAddress(m: TcpAddressMsg | null | undefined): Addr | null {
  const ip = m?.ip;
  if (m === null || m === undefined || ip === null || ip === undefined) return null;
  if (ip.ipv4 !== undefined) {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(ip.ipv4 >>> 0, 0);
    return { host: formatIp(b, 4), port: m.port };
  }
  if (ip.ipv6 !== undefined) {
    const b = Buffer.alloc(16);
    // A Long or number would also be accepted by the encoder; strings are what the decoder gives.
    b.writeBigUInt64BE(BigInt.asUintN(64, BigInt(String(ip.ipv6.first))), 0);
    b.writeBigUInt64BE(BigInt.asUintN(64, BigInt(String(ip.ipv6.last))), 8);
    return { host: formatIp(b, 6), port: m.port };
  }
  return null;
}

/** google.protobuf.Timestamp as milliseconds since the epoch. */
export function timestampToMs(t: TimestampMsg | null | undefined): number | undefined {
  if (t === null || t === undefined) return undefined;
  return Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6);
}

export function msToTimestamp(ms: number): TimestampMsg {
  const seconds = Math.floor(ms / 1000);
  return { seconds: String(seconds), nanos: Math.round(ms - seconds * 1000) * 1e6 };
}
