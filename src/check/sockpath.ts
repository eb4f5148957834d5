// Socket-path checks. The socket-path rework (bounded sk_msg redirect) adds
// its own probe as src/intercept/probe-sockpath.ts; its lines go here, next
// to the 929e30f93125 FIONREAD line of kernel.ts. Until then this adds no
// line: nothing is claimed that is not probed.
import type { CheckLine, CheckOptions } from './types.js';

export function sockpathChecks(_o: CheckOptions): CheckLine[] {
  return [];
}
