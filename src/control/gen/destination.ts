import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { AddrSet as _io_linkerd_proxy_destination_AddrSet, AddrSet__Output as _io_linkerd_proxy_destination_AddrSet__Output } from './io/linkerd/proxy/destination/AddrSet';
import type { AuthorityOverride as _io_linkerd_proxy_destination_AuthorityOverride, AuthorityOverride__Output as _io_linkerd_proxy_destination_AuthorityOverride__Output } from './io/linkerd/proxy/destination/AuthorityOverride';
import type { DestinationClient as _io_linkerd_proxy_destination_DestinationClient, DestinationDefinition as _io_linkerd_proxy_destination_DestinationDefinition } from './io/linkerd/proxy/destination/Destination';
import type { DestinationProfile as _io_linkerd_proxy_destination_DestinationProfile, DestinationProfile__Output as _io_linkerd_proxy_destination_DestinationProfile__Output } from './io/linkerd/proxy/destination/DestinationProfile';
import type { GetDestination as _io_linkerd_proxy_destination_GetDestination, GetDestination__Output as _io_linkerd_proxy_destination_GetDestination__Output } from './io/linkerd/proxy/destination/GetDestination';
import type { Http2ClientParams as _io_linkerd_proxy_destination_Http2ClientParams, Http2ClientParams__Output as _io_linkerd_proxy_destination_Http2ClientParams__Output } from './io/linkerd/proxy/destination/Http2ClientParams';
import type { NoEndpoints as _io_linkerd_proxy_destination_NoEndpoints, NoEndpoints__Output as _io_linkerd_proxy_destination_NoEndpoints__Output } from './io/linkerd/proxy/destination/NoEndpoints';
import type { ProtocolHint as _io_linkerd_proxy_destination_ProtocolHint, ProtocolHint__Output as _io_linkerd_proxy_destination_ProtocolHint__Output } from './io/linkerd/proxy/destination/ProtocolHint';
import type { ResourceRef as _io_linkerd_proxy_destination_ResourceRef, ResourceRef__Output as _io_linkerd_proxy_destination_ResourceRef__Output } from './io/linkerd/proxy/destination/ResourceRef';
import type { RetryBudget as _io_linkerd_proxy_destination_RetryBudget, RetryBudget__Output as _io_linkerd_proxy_destination_RetryBudget__Output } from './io/linkerd/proxy/destination/RetryBudget';
import type { Route as _io_linkerd_proxy_destination_Route, Route__Output as _io_linkerd_proxy_destination_Route__Output } from './io/linkerd/proxy/destination/Route';
import type { TlsIdentity as _io_linkerd_proxy_destination_TlsIdentity, TlsIdentity__Output as _io_linkerd_proxy_destination_TlsIdentity__Output } from './io/linkerd/proxy/destination/TlsIdentity';
import type { Update as _io_linkerd_proxy_destination_Update, Update__Output as _io_linkerd_proxy_destination_Update__Output } from './io/linkerd/proxy/destination/Update';
import type { WeightedAddr as _io_linkerd_proxy_destination_WeightedAddr, WeightedAddr__Output as _io_linkerd_proxy_destination_WeightedAddr__Output } from './io/linkerd/proxy/destination/WeightedAddr';
import type { WeightedAddrSet as _io_linkerd_proxy_destination_WeightedAddrSet, WeightedAddrSet__Output as _io_linkerd_proxy_destination_WeightedAddrSet__Output } from './io/linkerd/proxy/destination/WeightedAddrSet';
import type { WeightedDst as _io_linkerd_proxy_destination_WeightedDst, WeightedDst__Output as _io_linkerd_proxy_destination_WeightedDst__Output } from './io/linkerd/proxy/destination/WeightedDst';
import type { IPAddress as _io_linkerd_proxy_net_IPAddress, IPAddress__Output as _io_linkerd_proxy_net_IPAddress__Output } from './io/linkerd/proxy/net/IPAddress';
import type { IPNetwork as _io_linkerd_proxy_net_IPNetwork, IPNetwork__Output as _io_linkerd_proxy_net_IPNetwork__Output } from './io/linkerd/proxy/net/IPNetwork';
import type { IPv6 as _io_linkerd_proxy_net_IPv6, IPv6__Output as _io_linkerd_proxy_net_IPv6__Output } from './io/linkerd/proxy/net/IPv6';
import type { TcpAddress as _io_linkerd_proxy_net_TcpAddress, TcpAddress__Output as _io_linkerd_proxy_net_TcpAddress__Output } from './io/linkerd/proxy/net/TcpAddress';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  io: {
    linkerd: {
      proxy: {
        destination: {
          AddrSet: MessageTypeDefinition<_io_linkerd_proxy_destination_AddrSet, _io_linkerd_proxy_destination_AddrSet__Output>
          AuthorityOverride: MessageTypeDefinition<_io_linkerd_proxy_destination_AuthorityOverride, _io_linkerd_proxy_destination_AuthorityOverride__Output>
          Destination: SubtypeConstructor<typeof grpc.Client, _io_linkerd_proxy_destination_DestinationClient> & { service: _io_linkerd_proxy_destination_DestinationDefinition }
          DestinationProfile: MessageTypeDefinition<_io_linkerd_proxy_destination_DestinationProfile, _io_linkerd_proxy_destination_DestinationProfile__Output>
          GetDestination: MessageTypeDefinition<_io_linkerd_proxy_destination_GetDestination, _io_linkerd_proxy_destination_GetDestination__Output>
          Http2ClientParams: MessageTypeDefinition<_io_linkerd_proxy_destination_Http2ClientParams, _io_linkerd_proxy_destination_Http2ClientParams__Output>
          NoEndpoints: MessageTypeDefinition<_io_linkerd_proxy_destination_NoEndpoints, _io_linkerd_proxy_destination_NoEndpoints__Output>
          ProtocolHint: MessageTypeDefinition<_io_linkerd_proxy_destination_ProtocolHint, _io_linkerd_proxy_destination_ProtocolHint__Output>
          ResourceRef: MessageTypeDefinition<_io_linkerd_proxy_destination_ResourceRef, _io_linkerd_proxy_destination_ResourceRef__Output>
          RetryBudget: MessageTypeDefinition<_io_linkerd_proxy_destination_RetryBudget, _io_linkerd_proxy_destination_RetryBudget__Output>
          Route: MessageTypeDefinition<_io_linkerd_proxy_destination_Route, _io_linkerd_proxy_destination_Route__Output>
          TlsIdentity: MessageTypeDefinition<_io_linkerd_proxy_destination_TlsIdentity, _io_linkerd_proxy_destination_TlsIdentity__Output>
          Update: MessageTypeDefinition<_io_linkerd_proxy_destination_Update, _io_linkerd_proxy_destination_Update__Output>
          WeightedAddr: MessageTypeDefinition<_io_linkerd_proxy_destination_WeightedAddr, _io_linkerd_proxy_destination_WeightedAddr__Output>
          WeightedAddrSet: MessageTypeDefinition<_io_linkerd_proxy_destination_WeightedAddrSet, _io_linkerd_proxy_destination_WeightedAddrSet__Output>
          WeightedDst: MessageTypeDefinition<_io_linkerd_proxy_destination_WeightedDst, _io_linkerd_proxy_destination_WeightedDst__Output>
        }
        net: {
          IPAddress: MessageTypeDefinition<_io_linkerd_proxy_net_IPAddress, _io_linkerd_proxy_net_IPAddress__Output>
          IPNetwork: MessageTypeDefinition<_io_linkerd_proxy_net_IPNetwork, _io_linkerd_proxy_net_IPNetwork__Output>
          IPv6: MessageTypeDefinition<_io_linkerd_proxy_net_IPv6, _io_linkerd_proxy_net_IPv6__Output>
          TcpAddress: MessageTypeDefinition<_io_linkerd_proxy_net_TcpAddress, _io_linkerd_proxy_net_TcpAddress__Output>
        }
      }
    }
  }
}

