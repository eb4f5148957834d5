// Original file: proto/destination.proto


export interface WeightedDst {
}

export interface WeightedDst__Output {
}
