// Original file: proto/destination.proto


export interface RetryBudget {
}

export interface RetryBudget__Output {
}
