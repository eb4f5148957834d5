// Original file: proto/identity.proto


export interface CertifyRequest {
  'identity'?: (string);
  'token'?: (Buffer | Uint8Array | string);
  'certificate_signing_request'?: (Buffer | Uint8Array | string);
}

export interface CertifyRequest__Output {
  'identity': (string);
  'token': (Buffer);
  'certificate_signing_request': (Buffer);
}
