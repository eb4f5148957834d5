// Which pods the agent meshes, and the policy a pod's annotations ask for
// (over the agent's defaults). The annotations are linkerd-cni's.
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { parseInitFlags } from '../config/pod-flags.js';
import type { KubePod } from '../kube/client.js';
import type { PodPolicy } from '../intercept/rules.js';
import { toPolicy } from './flags.js';

export const INJECT = 'linkerd.io/inject';
const PROXY_CONTAINER = 'linkerd-proxy';

/** Annotation -> the `bpfmesh init` flag it sets. */
export const POLICY_ANNOTATIONS: Readonly<Record<string, string>> = {
  'config.linkerd.io/skip-inbound-ports': '--inbound-ports-to-ignore',
  'config.linkerd.io/skip-outbound-ports': '--outbound-ports-to-ignore',
  'config.linkerd.io/skip-subnets': '--subnets-to-ignore',
  'config.linkerd.io/proxy-uid': '--proxy-uid',
  'config.linkerd.io/proxy-gid': '--proxy-gid',
};

export type Skip = { mesh: true } | { mesh: false; reason: 'not_annotated' | 'disabled' | 'host_network' | 'completed' };

/**
 * A pod is meshed when annotated `linkerd.io/inject: enabled`, or when it
 * has a `linkerd-proxy` container (what linkerd-cni checks; it covers pods
 * injected through a namespace-level annotation). `disabled` always wins.
 * Host-network pods share the node's netns: never.
 */
export function meshDecision(pod: KubePod): Skip {
  const inject = pod.metadata.annotations?.[INJECT];
  if (inject === 'disabled') return { mesh: false, reason: 'disabled' };
  const containers = [...asArray(pod.spec?.['containers']), ...asArray(pod.spec?.['initContainers'])];
  const hasProxy = containers.some((c) => typeof c === 'object' && c !== null && (c as { name?: unknown }).name === PROXY_CONTAINER);
  if (inject !== 'enabled' && !hasProxy) return { mesh: false, reason: 'not_annotated' };
  if (pod.spec?.hostNetwork === true) return { mesh: false, reason: 'host_network' };
  const phase = pod.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed') return { mesh: false, reason: 'completed' };
  return { mesh: true };
}

const asArray = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/** The pod carries its own sidecar proxy (a `linkerd-proxy` container): the node proxy must not serve it too. */
export function hasSidecar(pod: KubePod): boolean {
  const containers = [...asArray(pod.spec?.['containers']), ...asArray(pod.spec?.['initContainers'])];
  return containers.some((c) => typeof c === 'object' && c !== null && (c as { name?: unknown }).name === PROXY_CONTAINER);
}

/** The pod's service account (Kubernetes' default when unset). */
export function serviceAccountOf(pod: KubePod): string {
  const sa = pod.spec?.['serviceAccountName'];
  return typeof sa === 'string' && sa !== '' ? sa : 'default';
}

/** The pod's policy: defaults, then its annotations. Throws BPFMESH_E_BAD_ANNOTATION naming the annotation. */
export function policyOf(pod: KubePod, defaultArgs: string[]): PodPolicy {
  const ann = pod.metadata.annotations ?? {};
  const args = [...defaultArgs];
  for (const [name, flag] of Object.entries(POLICY_ANNOTATIONS)) {
    const value = ann[name];
    if (value === undefined) continue;
    // Parse each alone first, so the error names the annotation that is wrong.
    try {
      parseInitFlags([flag, value.trim()]);
    } catch (err) {
      throw new BpfmeshError(ErrorCodes.BAD_ANNOTATION, `pod ${pod.metadata.namespace}/${pod.metadata.name}: annotation ${name}: "${value}": ${(err as Error).message.replace(/^--[a-z-]+: /, '')}`, { cause: err });
    }
    args.push(flag, value.trim());
  }
  return toPolicy(parseInitFlags(args));
}

/** A stable text of a policy (Buffers serialise as their bytes), to tell whether what is enrolled is still what the pod asks. */
export const policyKey = (p: PodPolicy): string => JSON.stringify(p);
