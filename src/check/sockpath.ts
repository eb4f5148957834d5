// Socket-path check: runs the start-up probe the install itself uses
// (src/intercept/probe-sockpath.ts), next to the 929e30f93125 FIONREAD line
// of kernel.ts. A kernel that cannot bound the path is not a failure (the
// install keeps the path off and connections take loopback TCP); a probe that
// cannot run at all is.
import { ErrorCodes } from '../errors.js';
import { probeSockpath } from '../intercept/probe-sockpath.js';
import { fail, pass, type CheckLine, type CheckOptions } from './types.js';

export function sockpathChecks(_o: CheckOptions): CheckLine[] {
  const id = 'sockpath_bound';
  const title = 'same-host socket path bounded by the peer queue (sk_msg)';
  const p = probeSockpath();
  if (p.bounded) return [pass(id, title, `on: ${p.detail}`)];
  if (p.redirectedBytes > 0) return [pass(id, title, `off on this kernel, connections use loopback TCP: ${p.detail}`)];
  return [fail(id, title, p.detail, ErrorCodes.KERNEL_FEATURE, 'the probe program could not run: check CAP_BPF/CAP_NET_ADMIN and that build/bpf/probe.bpf.o exists (npm install)')];
}
