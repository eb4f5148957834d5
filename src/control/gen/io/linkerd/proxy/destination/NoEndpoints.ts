// Original file: proto/destination.proto


export interface NoEndpoints {
  'exists'?: (boolean);
}

export interface NoEndpoints__Output {
  'exists': (boolean);
}
