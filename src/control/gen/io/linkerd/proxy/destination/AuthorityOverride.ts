// Original file: proto/destination.proto


export interface AuthorityOverride {
}

export interface AuthorityOverride__Output {
}
