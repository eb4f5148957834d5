// Original file: proto/http_route.proto

import type { Ratio as _io_linkerd_proxy_http_route_Ratio, Ratio__Output as _io_linkerd_proxy_http_route_Ratio__Output } from '../../../../io/linkerd/proxy/http_route/Ratio';

export interface HttpFailureInjector {
  'status'?: (number);
  'message'?: (string);
  'ratio'?: (_io_linkerd_proxy_http_route_Ratio | null);
}

export interface HttpFailureInjector__Output {
  'status': (number);
  'message': (string);
  'ratio': (_io_linkerd_proxy_http_route_Ratio__Output | null);
}
