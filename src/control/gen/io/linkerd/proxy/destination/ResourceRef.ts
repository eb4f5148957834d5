// Original file: proto/destination.proto


export interface ResourceRef {
}

export interface ResourceRef__Output {
}
