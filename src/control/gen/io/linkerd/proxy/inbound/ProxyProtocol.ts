// Original file: proto/inbound.proto

import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from '../../../../google/protobuf/Duration';
import type { HttpRoute as _io_linkerd_proxy_inbound_HttpRoute, HttpRoute__Output as _io_linkerd_proxy_inbound_HttpRoute__Output } from '../../../../io/linkerd/proxy/inbound/HttpRoute';

export interface _io_linkerd_proxy_inbound_ProxyProtocol_Detect {
  'timeout'?: (_google_protobuf_Duration | null);
  'http_routes'?: (_io_linkerd_proxy_inbound_HttpRoute)[];
}

export interface _io_linkerd_proxy_inbound_ProxyProtocol_Detect__Output {
  'timeout': (_google_protobuf_Duration__Output | null);
  'http_routes': (_io_linkerd_proxy_inbound_HttpRoute__Output)[];
}

export interface _io_linkerd_proxy_inbound_ProxyProtocol_Grpc {
}

export interface _io_linkerd_proxy_inbound_ProxyProtocol_Grpc__Output {
}

export interface _io_linkerd_proxy_inbound_ProxyProtocol_Http1 {
  'routes'?: (_io_linkerd_proxy_inbound_HttpRoute)[];
}

export interface _io_linkerd_proxy_inbound_ProxyProtocol_Http1__Output {
  'routes': (_io_linkerd_proxy_inbound_HttpRoute__Output)[];
}

export interface _io_linkerd_proxy_inbound_ProxyProtocol_Http2 {
  'routes'?: (_io_linkerd_proxy_inbound_HttpRoute)[];
}

export interface _io_linkerd_proxy_inbound_ProxyProtocol_Http2__Output {
  'routes': (_io_linkerd_proxy_inbound_HttpRoute__Output)[];
}

export interface _io_linkerd_proxy_inbound_ProxyProtocol_Opaque {
}

export interface _io_linkerd_proxy_inbound_ProxyProtocol_Opaque__Output {
}

export interface _io_linkerd_proxy_inbound_ProxyProtocol_Tls {
}

export interface _io_linkerd_proxy_inbound_ProxyProtocol_Tls__Output {
}

export interface ProxyProtocol {
  'detect'?: (_io_linkerd_proxy_inbound_ProxyProtocol_Detect | null);
  'opaque'?: (_io_linkerd_proxy_inbound_ProxyProtocol_Opaque | null);
  'tls'?: (_io_linkerd_proxy_inbound_ProxyProtocol_Tls | null);
  'http1'?: (_io_linkerd_proxy_inbound_ProxyProtocol_Http1 | null);
  'http2'?: (_io_linkerd_proxy_inbound_ProxyProtocol_Http2 | null);
  'grpc'?: (_io_linkerd_proxy_inbound_ProxyProtocol_Grpc | null);
  'kind'?: "detect"|"opaque"|"tls"|"http1"|"http2"|"grpc";
}

export interface ProxyProtocol__Output {
  'detect'?: (_io_linkerd_proxy_inbound_ProxyProtocol_Detect__Output | null);
  'opaque'?: (_io_linkerd_proxy_inbound_ProxyProtocol_Opaque__Output | null);
  'tls'?: (_io_linkerd_proxy_inbound_ProxyProtocol_Tls__Output | null);
  'http1'?: (_io_linkerd_proxy_inbound_ProxyProtocol_Http1__Output | null);
  'http2'?: (_io_linkerd_proxy_inbound_ProxyProtocol_Http2__Output | null);
  'grpc'?: (_io_linkerd_proxy_inbound_ProxyProtocol_Grpc__Output | null);
  'kind'?: "detect"|"opaque"|"tls"|"http1"|"http2"|"grpc";
}
