// Original file: proto/identity.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { CertifyRequest as _io_linkerd_proxy_identity_CertifyRequest, CertifyRequest__Output as _io_linkerd_proxy_identity_CertifyRequest__Output } from '../../../../io/linkerd/proxy/identity/CertifyRequest';
import type { CertifyResponse as _io_linkerd_proxy_identity_CertifyResponse, CertifyResponse__Output as _io_linkerd_proxy_identity_CertifyResponse__Output } from '../../../../io/linkerd/proxy/identity/CertifyResponse';

export interface IdentityClient extends grpc.Client {
  Certify(argument: _io_linkerd_proxy_identity_CertifyRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_io_linkerd_proxy_identity_CertifyResponse__Output>): grpc.ClientUnaryCall;
  Certify(argument: _io_linkerd_proxy_identity_CertifyRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_io_linkerd_proxy_identity_CertifyResponse__Output>): grpc.ClientUnaryCall;
  Certify(argument: _io_linkerd_proxy_identity_CertifyRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_io_linkerd_proxy_identity_CertifyResponse__Output>): grpc.ClientUnaryCall;
  Certify(argument: _io_linkerd_proxy_identity_CertifyRequest, callback: grpc.requestCallback<_io_linkerd_proxy_identity_CertifyResponse__Output>): grpc.ClientUnaryCall;
  certify(argument: _io_linkerd_proxy_identity_CertifyRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_io_linkerd_proxy_identity_CertifyResponse__Output>): grpc.ClientUnaryCall;
  certify(argument: _io_linkerd_proxy_identity_CertifyRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_io_linkerd_proxy_identity_CertifyResponse__Output>): grpc.ClientUnaryCall;
  certify(argument: _io_linkerd_proxy_identity_CertifyRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_io_linkerd_proxy_identity_CertifyResponse__Output>): grpc.ClientUnaryCall;
  certify(argument: _io_linkerd_proxy_identity_CertifyRequest, callback: grpc.requestCallback<_io_linkerd_proxy_identity_CertifyResponse__Output>): grpc.ClientUnaryCall;
  
}

export interface IdentityHandlers extends grpc.UntypedServiceImplementation {
  Certify: grpc.handleUnaryCall<_io_linkerd_proxy_identity_CertifyRequest__Output, _io_linkerd_proxy_identity_CertifyResponse>;
  
}

export interface IdentityDefinition extends grpc.ServiceDefinition {
  Certify: MethodDefinition<_io_linkerd_proxy_identity_CertifyRequest, _io_linkerd_proxy_identity_CertifyResponse, _io_linkerd_proxy_identity_CertifyRequest__Output, _io_linkerd_proxy_identity_CertifyResponse__Output>
}
