import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from './google/protobuf/Duration';
import type { HeaderMatch as _io_linkerd_proxy_http_route_HeaderMatch, HeaderMatch__Output as _io_linkerd_proxy_http_route_HeaderMatch__Output } from './io/linkerd/proxy/http_route/HeaderMatch';
import type { HostMatch as _io_linkerd_proxy_http_route_HostMatch, HostMatch__Output as _io_linkerd_proxy_http_route_HostMatch__Output } from './io/linkerd/proxy/http_route/HostMatch';
import type { HttpFailureInjector as _io_linkerd_proxy_http_route_HttpFailureInjector, HttpFailureInjector__Output as _io_linkerd_proxy_http_route_HttpFailureInjector__Output } from './io/linkerd/proxy/http_route/HttpFailureInjector';
import type { HttpRouteMatch as _io_linkerd_proxy_http_route_HttpRouteMatch, HttpRouteMatch__Output as _io_linkerd_proxy_http_route_HttpRouteMatch__Output } from './io/linkerd/proxy/http_route/HttpRouteMatch';
import type { PathMatch as _io_linkerd_proxy_http_route_PathMatch, PathMatch__Output as _io_linkerd_proxy_http_route_PathMatch__Output } from './io/linkerd/proxy/http_route/PathMatch';
import type { PathModifier as _io_linkerd_proxy_http_route_PathModifier, PathModifier__Output as _io_linkerd_proxy_http_route_PathModifier__Output } from './io/linkerd/proxy/http_route/PathModifier';
import type { QueryParamMatch as _io_linkerd_proxy_http_route_QueryParamMatch, QueryParamMatch__Output as _io_linkerd_proxy_http_route_QueryParamMatch__Output } from './io/linkerd/proxy/http_route/QueryParamMatch';
import type { Ratio as _io_linkerd_proxy_http_route_Ratio, Ratio__Output as _io_linkerd_proxy_http_route_Ratio__Output } from './io/linkerd/proxy/http_route/Ratio';
import type { RequestHeaderModifier as _io_linkerd_proxy_http_route_RequestHeaderModifier, RequestHeaderModifier__Output as _io_linkerd_proxy_http_route_RequestHeaderModifier__Output } from './io/linkerd/proxy/http_route/RequestHeaderModifier';
import type { RequestRedirect as _io_linkerd_proxy_http_route_RequestRedirect, RequestRedirect__Output as _io_linkerd_proxy_http_route_RequestRedirect__Output } from './io/linkerd/proxy/http_route/RequestRedirect';
import type { Headers as _io_linkerd_proxy_http_types_Headers, Headers__Output as _io_linkerd_proxy_http_types_Headers__Output } from './io/linkerd/proxy/http_types/Headers';
import type { HttpMethod as _io_linkerd_proxy_http_types_HttpMethod, HttpMethod__Output as _io_linkerd_proxy_http_types_HttpMethod__Output } from './io/linkerd/proxy/http_types/HttpMethod';
import type { Scheme as _io_linkerd_proxy_http_types_Scheme, Scheme__Output as _io_linkerd_proxy_http_types_Scheme__Output } from './io/linkerd/proxy/http_types/Scheme';
import type { Authn as _io_linkerd_proxy_inbound_Authn, Authn__Output as _io_linkerd_proxy_inbound_Authn__Output } from './io/linkerd/proxy/inbound/Authn';
import type { Authz as _io_linkerd_proxy_inbound_Authz, Authz__Output as _io_linkerd_proxy_inbound_Authz__Output } from './io/linkerd/proxy/inbound/Authz';
import type { HttpRoute as _io_linkerd_proxy_inbound_HttpRoute, HttpRoute__Output as _io_linkerd_proxy_inbound_HttpRoute__Output } from './io/linkerd/proxy/inbound/HttpRoute';
import type { Identity as _io_linkerd_proxy_inbound_Identity, Identity__Output as _io_linkerd_proxy_inbound_Identity__Output } from './io/linkerd/proxy/inbound/Identity';
import type { IdentitySuffix as _io_linkerd_proxy_inbound_IdentitySuffix, IdentitySuffix__Output as _io_linkerd_proxy_inbound_IdentitySuffix__Output } from './io/linkerd/proxy/inbound/IdentitySuffix';
import type { InboundServerPoliciesClient as _io_linkerd_proxy_inbound_InboundServerPoliciesClient, InboundServerPoliciesDefinition as _io_linkerd_proxy_inbound_InboundServerPoliciesDefinition } from './io/linkerd/proxy/inbound/InboundServerPolicies';
import type { Network as _io_linkerd_proxy_inbound_Network, Network__Output as _io_linkerd_proxy_inbound_Network__Output } from './io/linkerd/proxy/inbound/Network';
import type { PortSpec as _io_linkerd_proxy_inbound_PortSpec, PortSpec__Output as _io_linkerd_proxy_inbound_PortSpec__Output } from './io/linkerd/proxy/inbound/PortSpec';
import type { ProxyProtocol as _io_linkerd_proxy_inbound_ProxyProtocol, ProxyProtocol__Output as _io_linkerd_proxy_inbound_ProxyProtocol__Output } from './io/linkerd/proxy/inbound/ProxyProtocol';
import type { Server as _io_linkerd_proxy_inbound_Server, Server__Output as _io_linkerd_proxy_inbound_Server__Output } from './io/linkerd/proxy/inbound/Server';
import type { Metadata as _io_linkerd_proxy_meta_Metadata, Metadata__Output as _io_linkerd_proxy_meta_Metadata__Output } from './io/linkerd/proxy/meta/Metadata';
import type { Resource as _io_linkerd_proxy_meta_Resource, Resource__Output as _io_linkerd_proxy_meta_Resource__Output } from './io/linkerd/proxy/meta/Resource';
import type { IPAddress as _io_linkerd_proxy_net_IPAddress, IPAddress__Output as _io_linkerd_proxy_net_IPAddress__Output } from './io/linkerd/proxy/net/IPAddress';
import type { IPNetwork as _io_linkerd_proxy_net_IPNetwork, IPNetwork__Output as _io_linkerd_proxy_net_IPNetwork__Output } from './io/linkerd/proxy/net/IPNetwork';
import type { IPv6 as _io_linkerd_proxy_net_IPv6, IPv6__Output as _io_linkerd_proxy_net_IPv6__Output } from './io/linkerd/proxy/net/IPv6';
import type { TcpAddress as _io_linkerd_proxy_net_TcpAddress, TcpAddress__Output as _io_linkerd_proxy_net_TcpAddress__Output } from './io/linkerd/proxy/net/TcpAddress';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  google: {
    protobuf: {
      Duration: MessageTypeDefinition<_google_protobuf_Duration, _google_protobuf_Duration__Output>
    }
  }
  io: {
    linkerd: {
      proxy: {
        http_route: {
          HeaderMatch: MessageTypeDefinition<_io_linkerd_proxy_http_route_HeaderMatch, _io_linkerd_proxy_http_route_HeaderMatch__Output>
          HostMatch: MessageTypeDefinition<_io_linkerd_proxy_http_route_HostMatch, _io_linkerd_proxy_http_route_HostMatch__Output>
          HttpFailureInjector: MessageTypeDefinition<_io_linkerd_proxy_http_route_HttpFailureInjector, _io_linkerd_proxy_http_route_HttpFailureInjector__Output>
          HttpRouteMatch: MessageTypeDefinition<_io_linkerd_proxy_http_route_HttpRouteMatch, _io_linkerd_proxy_http_route_HttpRouteMatch__Output>
          PathMatch: MessageTypeDefinition<_io_linkerd_proxy_http_route_PathMatch, _io_linkerd_proxy_http_route_PathMatch__Output>
          PathModifier: MessageTypeDefinition<_io_linkerd_proxy_http_route_PathModifier, _io_linkerd_proxy_http_route_PathModifier__Output>
          QueryParamMatch: MessageTypeDefinition<_io_linkerd_proxy_http_route_QueryParamMatch, _io_linkerd_proxy_http_route_QueryParamMatch__Output>
          Ratio: MessageTypeDefinition<_io_linkerd_proxy_http_route_Ratio, _io_linkerd_proxy_http_route_Ratio__Output>
          RequestHeaderModifier: MessageTypeDefinition<_io_linkerd_proxy_http_route_RequestHeaderModifier, _io_linkerd_proxy_http_route_RequestHeaderModifier__Output>
          RequestRedirect: MessageTypeDefinition<_io_linkerd_proxy_http_route_RequestRedirect, _io_linkerd_proxy_http_route_RequestRedirect__Output>
        }
        http_types: {
          Headers: MessageTypeDefinition<_io_linkerd_proxy_http_types_Headers, _io_linkerd_proxy_http_types_Headers__Output>
          HttpMethod: MessageTypeDefinition<_io_linkerd_proxy_http_types_HttpMethod, _io_linkerd_proxy_http_types_HttpMethod__Output>
          Scheme: MessageTypeDefinition<_io_linkerd_proxy_http_types_Scheme, _io_linkerd_proxy_http_types_Scheme__Output>
        }
        inbound: {
          Authn: MessageTypeDefinition<_io_linkerd_proxy_inbound_Authn, _io_linkerd_proxy_inbound_Authn__Output>
          Authz: MessageTypeDefinition<_io_linkerd_proxy_inbound_Authz, _io_linkerd_proxy_inbound_Authz__Output>
          HttpRoute: MessageTypeDefinition<_io_linkerd_proxy_inbound_HttpRoute, _io_linkerd_proxy_inbound_HttpRoute__Output>
          Identity: MessageTypeDefinition<_io_linkerd_proxy_inbound_Identity, _io_linkerd_proxy_inbound_Identity__Output>
          IdentitySuffix: MessageTypeDefinition<_io_linkerd_proxy_inbound_IdentitySuffix, _io_linkerd_proxy_inbound_IdentitySuffix__Output>
          InboundServerPolicies: SubtypeConstructor<typeof grpc.Client, _io_linkerd_proxy_inbound_InboundServerPoliciesClient> & { service: _io_linkerd_proxy_inbound_InboundServerPoliciesDefinition }
          Network: MessageTypeDefinition<_io_linkerd_proxy_inbound_Network, _io_linkerd_proxy_inbound_Network__Output>
          PortSpec: MessageTypeDefinition<_io_linkerd_proxy_inbound_PortSpec, _io_linkerd_proxy_inbound_PortSpec__Output>
          ProxyProtocol: MessageTypeDefinition<_io_linkerd_proxy_inbound_ProxyProtocol, _io_linkerd_proxy_inbound_ProxyProtocol__Output>
          Server: MessageTypeDefinition<_io_linkerd_proxy_inbound_Server, _io_linkerd_proxy_inbound_Server__Output>
        }
        meta: {
          Metadata: MessageTypeDefinition<_io_linkerd_proxy_meta_Metadata, _io_linkerd_proxy_meta_Metadata__Output>
          Resource: MessageTypeDefinition<_io_linkerd_proxy_meta_Resource, _io_linkerd_proxy_meta_Resource__Output>
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

