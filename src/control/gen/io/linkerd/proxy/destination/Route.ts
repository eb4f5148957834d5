// Original file: proto/destination.proto


export interface Route {
}

export interface Route__Output {
}
