import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from './google/protobuf/Duration';
import type { Headers as _io_linkerd_proxy_http_types_Headers, Headers__Output as _io_linkerd_proxy_http_types_Headers__Output } from './io/linkerd/proxy/http_types/Headers';
import type { HttpMethod as _io_linkerd_proxy_http_types_HttpMethod, HttpMethod__Output as _io_linkerd_proxy_http_types_HttpMethod__Output } from './io/linkerd/proxy/http_types/HttpMethod';
import type { Scheme as _io_linkerd_proxy_http_types_Scheme, Scheme__Output as _io_linkerd_proxy_http_types_Scheme__Output } from './io/linkerd/proxy/http_types/Scheme';
import type { IPAddress as _io_linkerd_proxy_net_IPAddress, IPAddress__Output as _io_linkerd_proxy_net_IPAddress__Output } from './io/linkerd/proxy/net/IPAddress';
import type { IPNetwork as _io_linkerd_proxy_net_IPNetwork, IPNetwork__Output as _io_linkerd_proxy_net_IPNetwork__Output } from './io/linkerd/proxy/net/IPNetwork';
import type { IPv6 as _io_linkerd_proxy_net_IPv6, IPv6__Output as _io_linkerd_proxy_net_IPv6__Output } from './io/linkerd/proxy/net/IPv6';
import type { TcpAddress as _io_linkerd_proxy_net_TcpAddress, TcpAddress__Output as _io_linkerd_proxy_net_TcpAddress__Output } from './io/linkerd/proxy/net/TcpAddress';
import type { Eos as _io_linkerd_proxy_tap_Eos, Eos__Output as _io_linkerd_proxy_tap_Eos__Output } from './io/linkerd/proxy/tap/Eos';
import type { ObserveRequest as _io_linkerd_proxy_tap_ObserveRequest, ObserveRequest__Output as _io_linkerd_proxy_tap_ObserveRequest__Output } from './io/linkerd/proxy/tap/ObserveRequest';
import type { TapClient as _io_linkerd_proxy_tap_TapClient, TapDefinition as _io_linkerd_proxy_tap_TapDefinition } from './io/linkerd/proxy/tap/Tap';
import type { TapEvent as _io_linkerd_proxy_tap_TapEvent, TapEvent__Output as _io_linkerd_proxy_tap_TapEvent__Output } from './io/linkerd/proxy/tap/TapEvent';

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
        http_types: {
          Headers: MessageTypeDefinition<_io_linkerd_proxy_http_types_Headers, _io_linkerd_proxy_http_types_Headers__Output>
          HttpMethod: MessageTypeDefinition<_io_linkerd_proxy_http_types_HttpMethod, _io_linkerd_proxy_http_types_HttpMethod__Output>
          Scheme: MessageTypeDefinition<_io_linkerd_proxy_http_types_Scheme, _io_linkerd_proxy_http_types_Scheme__Output>
        }
        net: {
          IPAddress: MessageTypeDefinition<_io_linkerd_proxy_net_IPAddress, _io_linkerd_proxy_net_IPAddress__Output>
          IPNetwork: MessageTypeDefinition<_io_linkerd_proxy_net_IPNetwork, _io_linkerd_proxy_net_IPNetwork__Output>
          IPv6: MessageTypeDefinition<_io_linkerd_proxy_net_IPv6, _io_linkerd_proxy_net_IPv6__Output>
          TcpAddress: MessageTypeDefinition<_io_linkerd_proxy_net_TcpAddress, _io_linkerd_proxy_net_TcpAddress__Output>
        }
        tap: {
          Eos: MessageTypeDefinition<_io_linkerd_proxy_tap_Eos, _io_linkerd_proxy_tap_Eos__Output>
          ObserveRequest: MessageTypeDefinition<_io_linkerd_proxy_tap_ObserveRequest, _io_linkerd_proxy_tap_ObserveRequest__Output>
          Tap: SubtypeConstructor<typeof grpc.Client, _io_linkerd_proxy_tap_TapClient> & { service: _io_linkerd_proxy_tap_TapDefinition }
          TapEvent: MessageTypeDefinition<_io_linkerd_proxy_tap_TapEvent, _io_linkerd_proxy_tap_TapEvent__Output>
        }
      }
    }
  }
}

