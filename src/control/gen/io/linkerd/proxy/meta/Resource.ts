// Original file: proto/meta.proto


export interface Resource {
  'group'?: (string);
  'kind'?: (string);
  'name'?: (string);
}

export interface Resource__Output {
  'group': (string);
  'kind': (string);
  'name': (string);
}
