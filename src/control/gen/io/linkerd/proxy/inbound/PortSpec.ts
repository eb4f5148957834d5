// Original file: proto/inbound.proto


export interface PortSpec {
  'workload'?: (string);
  'port'?: (number);
}

export interface PortSpec__Output {
  'workload': (string);
  'port': (number);
}
