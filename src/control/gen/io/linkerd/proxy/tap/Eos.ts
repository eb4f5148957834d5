// Original file: proto/tap.proto


export interface Eos {
  'grpc_status_code'?: (number);
  'reset_error_code'?: (number);
  'end'?: "grpc_status_code"|"reset_error_code";
}

export interface Eos__Output {
  'grpc_status_code'?: (number);
  'reset_error_code'?: (number);
  'end'?: "grpc_status_code"|"reset_error_code";
}
