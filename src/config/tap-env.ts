// The tap part of the proxy's environment: Linkerd's switch
// (LINKERD2_PROXY_TAP_SVC_NAME, the only identity admitted to tap; tap is
// off without it, and off when identity is disabled) and bpfmesh's bounds
// on what tappers can make the proxy hold.
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { parseCount } from './proxy-env.js';

export const TAP_ENV = {
  svcName: 'LINKERD2_PROXY_TAP_SVC_NAME',
  disabled: 'LINKERD2_PROXY_TAP_DISABLED',
  maxStreams: 'BPFMESH_PROXY_TAP_MAX_STREAMS',
  queue: 'BPFMESH_PROXY_TAP_QUEUE',
  maxEventsPerSecond: 'BPFMESH_PROXY_TAP_MAX_EVENTS_PER_SECOND',
} as const;

export interface TapConfig {
  /** The tap controller's identity: the only client identity Observe serves. */
  svcName: string;
  /** Observe streams open at once; more are refused with RESOURCE_EXHAUSTED. */
  maxStreams: number;
  /** Events queued per stream for a client that reads slowly; more are dropped (counted). */
  queue: number;
  /** Events per second over all streams; requests that would go past it are not tapped (counted). */
  maxEventsPerSecond: number;
}

export const DEFAULT_TAP = { maxStreams: 16, queue: 400, maxEventsPerSecond: 3000 } as const;

const NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i;

/** Undefined when tap is off: no LINKERD2_PROXY_TAP_SVC_NAME, or LINKERD2_PROXY_TAP_DISABLED set. */
export function parseTapEnv(env: NodeJS.ProcessEnv): TapConfig | undefined {
  const get = (n: string): string | undefined => {
    const v = env[n]?.trim();
    return v === undefined || v === '' ? undefined : v;
  };
  const name = get(TAP_ENV.svcName);
  if (name === undefined || get(TAP_ENV.disabled) !== undefined) return undefined;
  if (!NAME.test(name) || name.length > 253) {
    throw new BpfmeshError(ErrorCodes.BAD_ENV, `${TAP_ENV.svcName}: "${name}" is not valid; expected an identity such as linkerd-tap.linkerd-viz.serviceaccount.identity.linkerd.cluster.local`);
  }
  const count = (n: string, dflt: number): number => {
    const v = get(n);
    return v === undefined ? dflt : parseCount(v, n);
  };
  return {
    svcName: name,
    maxStreams: count(TAP_ENV.maxStreams, DEFAULT_TAP.maxStreams),
    queue: count(TAP_ENV.queue, DEFAULT_TAP.queue),
    maxEventsPerSecond: count(TAP_ENV.maxEventsPerSecond, DEFAULT_TAP.maxEventsPerSecond),
  };
}
