// What linkerd-cni reads from a pod: whether it is meshed, and the
// config.linkerd.io/* annotations that replace the linkerd block's settings
// for that pod.
import type { PodPolicy } from '../intercept/rules.js';
import { parseId, portList, subnetList } from './config.js';

export const INJECT = 'linkerd.io/inject';
export const SKIP_INBOUND = 'config.linkerd.io/skip-inbound-ports';
export const SKIP_OUTBOUND = 'config.linkerd.io/skip-outbound-ports';
export const SKIP_SUBNETS = 'config.linkerd.io/skip-subnets';
export const PROXY_UID = 'config.linkerd.io/proxy-uid';
export const PROXY_GID = 'config.linkerd.io/proxy-gid';

/** The parts of a Kubernetes Pod object this plugin looks at. */
export interface PodView {
  metadata?: { annotations?: Record<string, string> | null; name?: string; namespace?: string; uid?: string };
  spec?: Record<string, unknown> | null;
}

/**
 * Meshed: annotated `linkerd.io/inject: enabled`, or already carrying the
 * injected `linkerd-proxy` container (the injector's mark when the
 * annotation sits on the namespace). `disabled` always wins.
 */
export function isMeshed(pod: PodView): boolean {
  const inject = pod.metadata?.annotations?.[INJECT];
  if (inject === 'disabled') return false;
  if (inject === 'enabled') return true;
  const containers = pod.spec?.['containers'];
  return Array.isArray(containers) && containers.some((c: unknown) => (c as { name?: unknown } | null)?.name === 'linkerd-proxy');
}

/** The pod's annotations over the block's policy; a bad value is a configuration error naming the annotation. */
export function applyAnnotations(base: PodPolicy, annotations: Record<string, string> | null | undefined): PodPolicy {
  const a = annotations ?? {};
  const has = (k: string): boolean => typeof a[k] === 'string' && a[k].trim() !== '';
  const p: PodPolicy = { ...base };
  if (has(SKIP_INBOUND)) p.inboundPortsToIgnore = portList(a[SKIP_INBOUND], `annotation ${SKIP_INBOUND}`);
  if (has(SKIP_OUTBOUND)) p.outboundPortsToIgnore = portList(a[SKIP_OUTBOUND], `annotation ${SKIP_OUTBOUND}`);
  if (has(SKIP_SUBNETS)) p.subnetsToIgnore = subnetList(a[SKIP_SUBNETS], `annotation ${SKIP_SUBNETS}`);
  if (has(PROXY_UID)) p.proxyUid = parseId(a[PROXY_UID], `annotation ${PROXY_UID}`) ?? base.proxyUid;
  if (has(PROXY_GID)) p.proxyGid = parseId(a[PROXY_GID], `annotation ${PROXY_GID}`);
  return p;
}
