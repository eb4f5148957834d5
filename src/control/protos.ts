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
import type { Addr } from '../util/addr.js';
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

// ---- message types --------------------------------------------------------
// Generated from proto/*.proto by `npm run gen:protos` (proto-loader-gen-types
// with the loader options above) into src/control/gen/; a unit test fails when
// they are not current. `…__Output` is what decoding gives (every field
// present, per the options); the plain type is what encoding accepts. The
// names below are the ones the rest of bpfmesh uses.
import type { IPv6__Output } from './gen/io/linkerd/proxy/net/IPv6';
import type { IPAddress__Output } from './gen/io/linkerd/proxy/net/IPAddress';
import type { IPNetwork__Output } from './gen/io/linkerd/proxy/net/IPNetwork';
import type { TcpAddress__Output } from './gen/io/linkerd/proxy/net/TcpAddress';
import type { GetDestination__Output } from './gen/io/linkerd/proxy/destination/GetDestination';
import type { TlsIdentity__Output } from './gen/io/linkerd/proxy/destination/TlsIdentity';
import type { _io_linkerd_proxy_destination_TlsIdentity_DnsLikeIdentity__Output as DnsLikeIdentity__Output } from './gen/io/linkerd/proxy/destination/TlsIdentity';
import type { ProtocolHint__Output } from './gen/io/linkerd/proxy/destination/ProtocolHint';
import type { WeightedAddr__Output } from './gen/io/linkerd/proxy/destination/WeightedAddr';
import type { WeightedAddrSet__Output } from './gen/io/linkerd/proxy/destination/WeightedAddrSet';
import type { AddrSet__Output } from './gen/io/linkerd/proxy/destination/AddrSet';
import type { NoEndpoints__Output } from './gen/io/linkerd/proxy/destination/NoEndpoints';
import type { Update__Output } from './gen/io/linkerd/proxy/destination/Update';
import type { DestinationProfile__Output } from './gen/io/linkerd/proxy/destination/DestinationProfile';
import type { Timestamp__Output } from './gen/google/protobuf/Timestamp';
import type { CertifyRequest__Output } from './gen/io/linkerd/proxy/identity/CertifyRequest';
import type { CertifyResponse__Output } from './gen/io/linkerd/proxy/identity/CertifyResponse';
import type { DestinationClient as GenDestinationClient, DestinationHandlers as GenDestinationHandlers } from './gen/io/linkerd/proxy/destination/Destination';
import type { IdentityClient as GenIdentityClient, IdentityHandlers as GenIdentityHandlers } from './gen/io/linkerd/proxy/identity/Identity';
import type {
  InboundServerPoliciesClient as GenInboundClient,
  InboundServerPoliciesHandlers as GenInboundHandlers,
} from './gen/io/linkerd/proxy/inbound/InboundServerPolicies';
import type { TapClient as GenTapClient, TapHandlers as GenTapHandlers } from './gen/io/linkerd/proxy/tap/Tap';

/** Fields a writer may leave out although the decoder always fills them in. */
type Loose<T, K extends keyof T> = Omit<T, K> & Partial<Pick<T, K>>;

export type Ipv6Msg = IPv6__Output;
export type IpAddressMsg = IPAddress__Output;
export type IpNetworkMsg = IPNetwork__Output;
export type TcpAddressMsg = TcpAddress__Output;
export type GetDestinationMsg = GetDestination__Output;
export type DnsLikeIdentityMsg = DnsLikeIdentity__Output;
export type TlsIdentityMsg = Loose<TlsIdentity__Output, 'server_name'>;
export type ProtocolHintMsg = Loose<ProtocolHint__Output, 'opaque_transport'>;
export type WeightedAddrMsg = Omit<WeightedAddr__Output, 'tls_identity' | 'protocol_hint' | 'authority_override' | 'http2' | 'resource_ref'> & {
  tls_identity?: TlsIdentityMsg | null;
  protocol_hint?: ProtocolHintMsg | null;
} & Partial<Pick<WeightedAddr__Output, 'authority_override' | 'http2' | 'resource_ref'>>;
export type WeightedAddrSetMsg = Omit<WeightedAddrSet__Output, 'addrs'> & { addrs: WeightedAddrMsg[] };
export type AddrSetMsg = AddrSet__Output;
export type NoEndpointsMsg = NoEndpoints__Output;
/** A oneof member that is not set is absent (oneofs: true), never null. */
export type UpdateMsg = Omit<Update__Output, 'add' | 'remove' | 'no_endpoints'> & {
  add?: WeightedAddrSetMsg;
  remove?: AddrSetMsg;
  no_endpoints?: NoEndpointsMsg;
};
/** Routes, budgets and overrides stay empty in what bpfmesh writes. */
export type DestinationProfileMsg = Omit<DestinationProfile__Output, 'routes' | 'retry_budget' | 'dst_overrides' | 'endpoint'> & {
  endpoint?: WeightedAddrMsg | null;
} & Partial<Pick<DestinationProfile__Output, 'routes' | 'retry_budget' | 'dst_overrides'>>;
export type TimestampMsg = Timestamp__Output;
export type CertifyRequestMsg = CertifyRequest__Output;
export type CertifyResponseMsg = CertifyResponse__Output;

export type { PortSpec__Output as PortSpecMsg } from './gen/io/linkerd/proxy/inbound/PortSpec';
export type { Server as ServerIn, Server__Output as ServerMsg } from './gen/io/linkerd/proxy/inbound/Server';
export type { Authz as AuthzIn, Authz__Output as AuthzMsg } from './gen/io/linkerd/proxy/inbound/Authz';
export type { HttpRoute as HttpRouteIn, HttpRoute__Output as HttpRouteMsg } from './gen/io/linkerd/proxy/inbound/HttpRoute';
export type { HttpRouteMatch__Output as HttpRouteMatchMsg } from './gen/io/linkerd/proxy/http_route/HttpRouteMatch';
export type { HostMatch__Output as HostMatchMsg } from './gen/io/linkerd/proxy/http_route/HostMatch';
export type { Metadata as MetadataIn, Metadata__Output as MetadataMsg } from './gen/io/linkerd/proxy/meta/Metadata';
export type { IPNetwork as IpNetworkIn } from './gen/io/linkerd/proxy/net/IPNetwork';

export type { ObserveRequest as ObserveRequestIn, ObserveRequest__Output as ObserveRequestMsg } from './gen/io/linkerd/proxy/tap/ObserveRequest';
export type {
  _io_linkerd_proxy_tap_ObserveRequest_Match as TapMatchIn,
  _io_linkerd_proxy_tap_ObserveRequest_Match__Output as TapMatchMsg,
} from './gen/io/linkerd/proxy/tap/ObserveRequest';
export type { TapEvent as TapEventIn, TapEvent__Output as TapEventMsg } from './gen/io/linkerd/proxy/tap/TapEvent';
export type TapClient = GenTapClient;
export type TapHandlers = GenTapHandlers;

// ---- clients and services -------------------------------------------------

/** The generated client, with the stream of Get typed as UpdateMsg (see there). */
export type DestinationClient = Omit<GenDestinationClient, 'Get'> & {
  Get(request: GetDestinationMsg, metadata?: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<UpdateMsg>;
};
export type IdentityClientStub = GenIdentityClient;
export type InboundPolicyClient = GenInboundClient;
export type DestinationHandlers = GenDestinationHandlers;
export type IdentityHandlers = GenIdentityHandlers;
export type InboundPolicyHandlers = GenInboundHandlers;

type ClientCtor<C> = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => C;

interface Loaded {
  destination: grpc.ServiceClientConstructor;
  identity: grpc.ServiceClientConstructor;
  inbound: grpc.ServiceClientConstructor;
  tap: grpc.ServiceClientConstructor;
}

let loaded: Loaded | undefined;

function load(): Loaded {
  if (loaded !== undefined) return loaded;
  let def: PackageDefinition;
  try {
    def = loadSync(['destination.proto', 'identity.proto', 'inbound.proto', 'tap.proto'], LOADER_OPTIONS);
  } catch (err) {
    throw new BpfmeshError(ErrorCodes.NOT_FOUND, `cannot load the proxy API from ${PROTO_DIR}: ${(err as Error).message}`, { cause: err });
  }
  const ns = grpc.loadPackageDefinition(def) as unknown as {
    io: {
      linkerd: {
        proxy: {
          destination: { Destination: grpc.ServiceClientConstructor };
          identity: { Identity: grpc.ServiceClientConstructor };
          inbound: { InboundServerPolicies: grpc.ServiceClientConstructor };
          tap: { Tap: grpc.ServiceClientConstructor };
        };
      };
    };
  };
  const p = ns.io.linkerd.proxy;
  loaded = { destination: p.destination.Destination, identity: p.identity.Identity, inbound: p.inbound.InboundServerPolicies, tap: p.tap.Tap };
  return loaded;
}

export function destinationClientCtor(): ClientCtor<DestinationClient> {
  return load().destination as unknown as ClientCtor<DestinationClient>;
}

export function identityClientCtor(): ClientCtor<IdentityClientStub> {
  return load().identity as unknown as ClientCtor<IdentityClientStub>;
}

export function inboundPolicyClientCtor(): ClientCtor<InboundPolicyClient> {
  return load().inbound as unknown as ClientCtor<InboundPolicyClient>;
}

export function inboundPolicyService(): grpc.ServiceDefinition<InboundPolicyHandlers> {
  return load().inbound.service as grpc.ServiceDefinition<InboundPolicyHandlers>;
}

export function tapClientCtor(): ClientCtor<TapClient> {
  return load().tap as unknown as ClientCtor<TapClient>;
}

export function tapService(): grpc.ServiceDefinition<TapHandlers> {
  return load().tap.service as grpc.ServiceDefinition<TapHandlers>;
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
  if (ip.ipv6 !== undefined && ip.ipv6 !== null) {
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
