// Original file: proto/tap.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { ObserveRequest as _io_linkerd_proxy_tap_ObserveRequest, ObserveRequest__Output as _io_linkerd_proxy_tap_ObserveRequest__Output } from '../../../../io/linkerd/proxy/tap/ObserveRequest';
import type { TapEvent as _io_linkerd_proxy_tap_TapEvent, TapEvent__Output as _io_linkerd_proxy_tap_TapEvent__Output } from '../../../../io/linkerd/proxy/tap/TapEvent';

export interface TapClient extends grpc.Client {
  Observe(argument: _io_linkerd_proxy_tap_ObserveRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_io_linkerd_proxy_tap_TapEvent__Output>;
  Observe(argument: _io_linkerd_proxy_tap_ObserveRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_io_linkerd_proxy_tap_TapEvent__Output>;
  observe(argument: _io_linkerd_proxy_tap_ObserveRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_io_linkerd_proxy_tap_TapEvent__Output>;
  observe(argument: _io_linkerd_proxy_tap_ObserveRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_io_linkerd_proxy_tap_TapEvent__Output>;
  
}

export interface TapHandlers extends grpc.UntypedServiceImplementation {
  Observe: grpc.handleServerStreamingCall<_io_linkerd_proxy_tap_ObserveRequest__Output, _io_linkerd_proxy_tap_TapEvent>;
  
}

export interface TapDefinition extends grpc.ServiceDefinition {
  Observe: MethodDefinition<_io_linkerd_proxy_tap_ObserveRequest, _io_linkerd_proxy_tap_TapEvent, _io_linkerd_proxy_tap_ObserveRequest__Output, _io_linkerd_proxy_tap_TapEvent__Output>
}
