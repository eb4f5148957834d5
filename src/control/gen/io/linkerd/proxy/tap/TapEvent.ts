// Original file: proto/tap.proto

import type { TcpAddress as _io_linkerd_proxy_net_TcpAddress, TcpAddress__Output as _io_linkerd_proxy_net_TcpAddress__Output } from '../../../../io/linkerd/proxy/net/TcpAddress';
import type { HttpMethod as _io_linkerd_proxy_http_types_HttpMethod, HttpMethod__Output as _io_linkerd_proxy_http_types_HttpMethod__Output } from '../../../../io/linkerd/proxy/http_types/HttpMethod';
import type { Scheme as _io_linkerd_proxy_http_types_Scheme, Scheme__Output as _io_linkerd_proxy_http_types_Scheme__Output } from '../../../../io/linkerd/proxy/http_types/Scheme';
import type { Headers as _io_linkerd_proxy_http_types_Headers, Headers__Output as _io_linkerd_proxy_http_types_Headers__Output } from '../../../../io/linkerd/proxy/http_types/Headers';
import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from '../../../../google/protobuf/Duration';
import type { Eos as _io_linkerd_proxy_tap_Eos, Eos__Output as _io_linkerd_proxy_tap_Eos__Output } from '../../../../io/linkerd/proxy/tap/Eos';
import type { Long } from '@grpc/proto-loader';

export interface _io_linkerd_proxy_tap_TapEvent_EndpointMeta {
  'labels'?: ({[key: string]: string});
}

export interface _io_linkerd_proxy_tap_TapEvent_EndpointMeta__Output {
  'labels': ({[key: string]: string});
}

export interface _io_linkerd_proxy_tap_TapEvent_Http {
  'request_init'?: (_io_linkerd_proxy_tap_TapEvent_Http_RequestInit | null);
  'response_init'?: (_io_linkerd_proxy_tap_TapEvent_Http_ResponseInit | null);
  'response_end'?: (_io_linkerd_proxy_tap_TapEvent_Http_ResponseEnd | null);
  'event'?: "request_init"|"response_init"|"response_end";
}

export interface _io_linkerd_proxy_tap_TapEvent_Http__Output {
  'request_init'?: (_io_linkerd_proxy_tap_TapEvent_Http_RequestInit__Output | null);
  'response_init'?: (_io_linkerd_proxy_tap_TapEvent_Http_ResponseInit__Output | null);
  'response_end'?: (_io_linkerd_proxy_tap_TapEvent_Http_ResponseEnd__Output | null);
  'event'?: "request_init"|"response_init"|"response_end";
}

// Original file: proto/tap.proto

export const _io_linkerd_proxy_tap_TapEvent_ProxyDirection = {
  UNKNOWN: 'UNKNOWN',
  INBOUND: 'INBOUND',
  OUTBOUND: 'OUTBOUND',
} as const;

export type _io_linkerd_proxy_tap_TapEvent_ProxyDirection =
  | 'UNKNOWN'
  | 0
  | 'INBOUND'
  | 1
  | 'OUTBOUND'
  | 2

export type _io_linkerd_proxy_tap_TapEvent_ProxyDirection__Output = typeof _io_linkerd_proxy_tap_TapEvent_ProxyDirection[keyof typeof _io_linkerd_proxy_tap_TapEvent_ProxyDirection]

export interface _io_linkerd_proxy_tap_TapEvent_Http_RequestInit {
  'id'?: (_io_linkerd_proxy_tap_TapEvent_Http_StreamId | null);
  'method'?: (_io_linkerd_proxy_http_types_HttpMethod | null);
  'scheme'?: (_io_linkerd_proxy_http_types_Scheme | null);
  'authority'?: (string);
  'path'?: (string);
  'headers'?: (_io_linkerd_proxy_http_types_Headers | null);
}

export interface _io_linkerd_proxy_tap_TapEvent_Http_RequestInit__Output {
  'id': (_io_linkerd_proxy_tap_TapEvent_Http_StreamId__Output | null);
  'method': (_io_linkerd_proxy_http_types_HttpMethod__Output | null);
  'scheme': (_io_linkerd_proxy_http_types_Scheme__Output | null);
  'authority': (string);
  'path': (string);
  'headers': (_io_linkerd_proxy_http_types_Headers__Output | null);
}

export interface _io_linkerd_proxy_tap_TapEvent_Http_ResponseEnd {
  'id'?: (_io_linkerd_proxy_tap_TapEvent_Http_StreamId | null);
  'since_request_init'?: (_google_protobuf_Duration | null);
  'since_response_init'?: (_google_protobuf_Duration | null);
  'response_bytes'?: (number | string | Long);
  'eos'?: (_io_linkerd_proxy_tap_Eos | null);
  'trailers'?: (_io_linkerd_proxy_http_types_Headers | null);
}

export interface _io_linkerd_proxy_tap_TapEvent_Http_ResponseEnd__Output {
  'id': (_io_linkerd_proxy_tap_TapEvent_Http_StreamId__Output | null);
  'since_request_init': (_google_protobuf_Duration__Output | null);
  'since_response_init': (_google_protobuf_Duration__Output | null);
  'response_bytes': (string);
  'eos': (_io_linkerd_proxy_tap_Eos__Output | null);
  'trailers': (_io_linkerd_proxy_http_types_Headers__Output | null);
}

export interface _io_linkerd_proxy_tap_TapEvent_Http_ResponseInit {
  'id'?: (_io_linkerd_proxy_tap_TapEvent_Http_StreamId | null);
  'since_request_init'?: (_google_protobuf_Duration | null);
  'http_status'?: (number);
  'headers'?: (_io_linkerd_proxy_http_types_Headers | null);
}

export interface _io_linkerd_proxy_tap_TapEvent_Http_ResponseInit__Output {
  'id': (_io_linkerd_proxy_tap_TapEvent_Http_StreamId__Output | null);
  'since_request_init': (_google_protobuf_Duration__Output | null);
  'http_status': (number);
  'headers': (_io_linkerd_proxy_http_types_Headers__Output | null);
}

export interface _io_linkerd_proxy_tap_TapEvent_RouteMeta {
  'labels'?: ({[key: string]: string});
}

export interface _io_linkerd_proxy_tap_TapEvent_RouteMeta__Output {
  'labels': ({[key: string]: string});
}

export interface _io_linkerd_proxy_tap_TapEvent_Http_StreamId {
  'base'?: (number);
  'stream'?: (number | string | Long);
}

export interface _io_linkerd_proxy_tap_TapEvent_Http_StreamId__Output {
  'base': (number);
  'stream': (string);
}

export interface TapEvent {
  'source'?: (_io_linkerd_proxy_net_TcpAddress | null);
  'destination'?: (_io_linkerd_proxy_net_TcpAddress | null);
  'http'?: (_io_linkerd_proxy_tap_TapEvent_Http | null);
  'destination_meta'?: (_io_linkerd_proxy_tap_TapEvent_EndpointMeta | null);
  'source_meta'?: (_io_linkerd_proxy_tap_TapEvent_EndpointMeta | null);
  'proxy_direction'?: (_io_linkerd_proxy_tap_TapEvent_ProxyDirection);
  'route_meta'?: (_io_linkerd_proxy_tap_TapEvent_RouteMeta | null);
  'event'?: "http";
}

export interface TapEvent__Output {
  'source': (_io_linkerd_proxy_net_TcpAddress__Output | null);
  'destination': (_io_linkerd_proxy_net_TcpAddress__Output | null);
  'http'?: (_io_linkerd_proxy_tap_TapEvent_Http__Output | null);
  'destination_meta': (_io_linkerd_proxy_tap_TapEvent_EndpointMeta__Output | null);
  'source_meta': (_io_linkerd_proxy_tap_TapEvent_EndpointMeta__Output | null);
  'proxy_direction': (_io_linkerd_proxy_tap_TapEvent_ProxyDirection__Output);
  'route_meta': (_io_linkerd_proxy_tap_TapEvent_RouteMeta__Output | null);
  'event'?: "http";
}
