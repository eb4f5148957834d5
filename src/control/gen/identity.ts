import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from './google/protobuf/Timestamp';
import type { CertifyRequest as _io_linkerd_proxy_identity_CertifyRequest, CertifyRequest__Output as _io_linkerd_proxy_identity_CertifyRequest__Output } from './io/linkerd/proxy/identity/CertifyRequest';
import type { CertifyResponse as _io_linkerd_proxy_identity_CertifyResponse, CertifyResponse__Output as _io_linkerd_proxy_identity_CertifyResponse__Output } from './io/linkerd/proxy/identity/CertifyResponse';
import type { IdentityClient as _io_linkerd_proxy_identity_IdentityClient, IdentityDefinition as _io_linkerd_proxy_identity_IdentityDefinition } from './io/linkerd/proxy/identity/Identity';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  google: {
    protobuf: {
      Timestamp: MessageTypeDefinition<_google_protobuf_Timestamp, _google_protobuf_Timestamp__Output>
    }
  }
  io: {
    linkerd: {
      proxy: {
        identity: {
          CertifyRequest: MessageTypeDefinition<_io_linkerd_proxy_identity_CertifyRequest, _io_linkerd_proxy_identity_CertifyRequest__Output>
          CertifyResponse: MessageTypeDefinition<_io_linkerd_proxy_identity_CertifyResponse, _io_linkerd_proxy_identity_CertifyResponse__Output>
          Identity: SubtypeConstructor<typeof grpc.Client, _io_linkerd_proxy_identity_IdentityClient> & { service: _io_linkerd_proxy_identity_IdentityDefinition }
        }
      }
    }
  }
}

