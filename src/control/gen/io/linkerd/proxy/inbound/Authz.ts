// Original file: proto/inbound.proto

import type { Network as _io_linkerd_proxy_inbound_Network, Network__Output as _io_linkerd_proxy_inbound_Network__Output } from '../../../../io/linkerd/proxy/inbound/Network';
import type { Authn as _io_linkerd_proxy_inbound_Authn, Authn__Output as _io_linkerd_proxy_inbound_Authn__Output } from '../../../../io/linkerd/proxy/inbound/Authn';
import type { Metadata as _io_linkerd_proxy_meta_Metadata, Metadata__Output as _io_linkerd_proxy_meta_Metadata__Output } from '../../../../io/linkerd/proxy/meta/Metadata';

export interface Authz {
  'networks'?: (_io_linkerd_proxy_inbound_Network)[];
  'authentication'?: (_io_linkerd_proxy_inbound_Authn | null);
  'labels'?: ({[key: string]: string});
  'metadata'?: (_io_linkerd_proxy_meta_Metadata | null);
}

export interface Authz__Output {
  'networks': (_io_linkerd_proxy_inbound_Network__Output)[];
  'authentication': (_io_linkerd_proxy_inbound_Authn__Output | null);
  'labels': ({[key: string]: string});
  'metadata': (_io_linkerd_proxy_meta_Metadata__Output | null);
}
