// Original file: proto/inbound.proto

import type { Metadata as _io_linkerd_proxy_meta_Metadata, Metadata__Output as _io_linkerd_proxy_meta_Metadata__Output } from '../../../../io/linkerd/proxy/meta/Metadata';
import type { HostMatch as _io_linkerd_proxy_http_route_HostMatch, HostMatch__Output as _io_linkerd_proxy_http_route_HostMatch__Output } from '../../../../io/linkerd/proxy/http_route/HostMatch';
import type { Authz as _io_linkerd_proxy_inbound_Authz, Authz__Output as _io_linkerd_proxy_inbound_Authz__Output } from '../../../../io/linkerd/proxy/inbound/Authz';
import type { HttpRouteMatch as _io_linkerd_proxy_http_route_HttpRouteMatch, HttpRouteMatch__Output as _io_linkerd_proxy_http_route_HttpRouteMatch__Output } from '../../../../io/linkerd/proxy/http_route/HttpRouteMatch';
import type { HttpFailureInjector as _io_linkerd_proxy_http_route_HttpFailureInjector, HttpFailureInjector__Output as _io_linkerd_proxy_http_route_HttpFailureInjector__Output } from '../../../../io/linkerd/proxy/http_route/HttpFailureInjector';
import type { RequestHeaderModifier as _io_linkerd_proxy_http_route_RequestHeaderModifier, RequestHeaderModifier__Output as _io_linkerd_proxy_http_route_RequestHeaderModifier__Output } from '../../../../io/linkerd/proxy/http_route/RequestHeaderModifier';
import type { RequestRedirect as _io_linkerd_proxy_http_route_RequestRedirect, RequestRedirect__Output as _io_linkerd_proxy_http_route_RequestRedirect__Output } from '../../../../io/linkerd/proxy/http_route/RequestRedirect';

export interface _io_linkerd_proxy_inbound_HttpRoute_Filter {
  'failure_injector'?: (_io_linkerd_proxy_http_route_HttpFailureInjector | null);
  'request_header_modifier'?: (_io_linkerd_proxy_http_route_RequestHeaderModifier | null);
  'redirect'?: (_io_linkerd_proxy_http_route_RequestRedirect | null);
  'kind'?: "failure_injector"|"request_header_modifier"|"redirect";
}

export interface _io_linkerd_proxy_inbound_HttpRoute_Filter__Output {
  'failure_injector'?: (_io_linkerd_proxy_http_route_HttpFailureInjector__Output | null);
  'request_header_modifier'?: (_io_linkerd_proxy_http_route_RequestHeaderModifier__Output | null);
  'redirect'?: (_io_linkerd_proxy_http_route_RequestRedirect__Output | null);
  'kind'?: "failure_injector"|"request_header_modifier"|"redirect";
}

export interface _io_linkerd_proxy_inbound_HttpRoute_Rule {
  'matches'?: (_io_linkerd_proxy_http_route_HttpRouteMatch)[];
  'filters'?: (_io_linkerd_proxy_inbound_HttpRoute_Filter)[];
}

export interface _io_linkerd_proxy_inbound_HttpRoute_Rule__Output {
  'matches': (_io_linkerd_proxy_http_route_HttpRouteMatch__Output)[];
  'filters': (_io_linkerd_proxy_inbound_HttpRoute_Filter__Output)[];
}

export interface HttpRoute {
  'metadata'?: (_io_linkerd_proxy_meta_Metadata | null);
  'hosts'?: (_io_linkerd_proxy_http_route_HostMatch)[];
  'authorizations'?: (_io_linkerd_proxy_inbound_Authz)[];
  'rules'?: (_io_linkerd_proxy_inbound_HttpRoute_Rule)[];
}

export interface HttpRoute__Output {
  'metadata': (_io_linkerd_proxy_meta_Metadata__Output | null);
  'hosts': (_io_linkerd_proxy_http_route_HostMatch__Output)[];
  'authorizations': (_io_linkerd_proxy_inbound_Authz__Output)[];
  'rules': (_io_linkerd_proxy_inbound_HttpRoute_Rule__Output)[];
}
