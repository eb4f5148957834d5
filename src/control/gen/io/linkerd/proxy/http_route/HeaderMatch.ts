// Original file: proto/http_route.proto


export interface HeaderMatch {
  'name'?: (string);
  'exact'?: (string);
  'regex'?: (string);
  'value'?: "exact"|"regex";
}

export interface HeaderMatch__Output {
  'name': (string);
  'exact'?: (string);
  'regex'?: (string);
  'value'?: "exact"|"regex";
}
