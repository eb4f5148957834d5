// Original file: proto/inbound.proto

import type { ProxyProtocol as _io_linkerd_proxy_inbound_ProxyProtocol, ProxyProtocol__Output as _io_linkerd_proxy_inbound_ProxyProtocol__Output } from '../../../../io/linkerd/proxy/inbound/ProxyProtocol';
import type { IPAddress as _io_linkerd_proxy_net_IPAddress, IPAddress__Output as _io_linkerd_proxy_net_IPAddress__Output } from '../../../../io/linkerd/proxy/net/IPAddress';
import type { Authz as _io_linkerd_proxy_inbound_Authz, Authz__Output as _io_linkerd_proxy_inbound_Authz__Output } from '../../../../io/linkerd/proxy/inbound/Authz';

export interface Server {
  'protocol'?: (_io_linkerd_proxy_inbound_ProxyProtocol | null);
  'server_ips'?: (_io_linkerd_proxy_net_IPAddress)[];
  'authorizations'?: (_io_linkerd_proxy_inbound_Authz)[];
  'labels'?: ({[key: string]: string});
}

export interface Server__Output {
  'protocol': (_io_linkerd_proxy_inbound_ProxyProtocol__Output | null);
  'server_ips': (_io_linkerd_proxy_net_IPAddress__Output)[];
  'authorizations': (_io_linkerd_proxy_inbound_Authz__Output)[];
  'labels': ({[key: string]: string});
}
