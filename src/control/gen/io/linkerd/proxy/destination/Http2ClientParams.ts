// Original file: proto/destination.proto


export interface Http2ClientParams {
}

export interface Http2ClientParams__Output {
}
