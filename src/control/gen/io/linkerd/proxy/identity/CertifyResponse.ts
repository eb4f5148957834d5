// Original file: proto/identity.proto

import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from '../../../../google/protobuf/Timestamp';

export interface CertifyResponse {
  'leaf_certificate'?: (Buffer | Uint8Array | string);
  'intermediate_certificates'?: (Buffer | Uint8Array | string)[];
  'valid_until'?: (_google_protobuf_Timestamp | null);
}

export interface CertifyResponse__Output {
  'leaf_certificate': (Buffer);
  'intermediate_certificates': (Buffer)[];
  'valid_until': (_google_protobuf_Timestamp__Output | null);
}
