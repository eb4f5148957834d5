// The node proxy for pods the CNI plugin enrolls (by container id) rather
// than the agent (by pod UID). A forwarded ADD serves the pod as soon as it
// is enrolled, before any of its containers start; DEL stops serving it. The
// agent serves CNI-enrolled pods it meets through the API server too (after
// its own restart, or an ADD that ran while it was down). Either way a pod is
// served under its UID, so it is served once whichever way it came; the
// container id -> UID map answers DEL, which carries only the container id.
import { statSync } from 'node:fs';
import type { CniNodeProxy } from '../cni/plugin.js';
import type { PodView } from '../cni/annotations.js';
import type { KubePod } from '../kube/client.js';
import type { PodPolicy } from '../intercept/rules.js';
import { openNodeMaps, type NodeScope } from '../intercept/node-wide.js';
import { closeMaps } from '../intercept/layout.js';
import { netnsCookieOf } from '../intercept/pod.js';
import { Flags } from '../bpf/codecs.js';
import { hasSidecar, serviceAccountOf } from './annotations.js';
import type { PodProxyHost, ServedPod } from './pod-proxies.js';

/** What the node proxy needs of a pod, from its API object and where it is enrolled. */
export function servedPodOf(pod: KubePod, netnsPath: string, netnsIno: number, ports: { incomingPort: number; outgoingPort: number }): ServedPod {
  return {
    uid: pod.metadata.uid,
    namespace: pod.metadata.namespace ?? 'default',
    name: pod.metadata.name ?? pod.metadata.uid,
    serviceAccount: serviceAccountOf(pod),
    netnsPath,
    netnsIno,
    ...ports,
  };
}

export class CniServedPods implements CniNodeProxy {
  readonly #host: PodProxyHost;
  /** CNI container id (pin id) -> the pod's UID, for the pods served this way. */
  readonly #uidOf = new Map<string, string>();
  readonly #onServed: ((uid: string) => void) | undefined;

  constructor(host: PodProxyHost, opts: { onServed?: (uid: string) => void } = {}) {
    this.#host = host;
    this.#onServed = opts.onServed;
  }

  wants(pod: PodView): boolean {
    return typeof pod.metadata?.uid === 'string' && !hasSidecar(pod as KubePod);
  }

  /** ADD, after the enrollment: the pod's listeners in the netns the runtime made. */
  async serve(id: string, netns: string, pod: PodView, policy: PodPolicy): Promise<boolean> {
    const kpod = pod as KubePod;
    this.#uidOf.set(id, kpod.metadata.uid);
    const ok = await this.#host.serve(servedPodOf(kpod, netns, statSync(netns).ino, { incomingPort: policy.incomingProxyPort, outgoingPort: policy.outgoingProxyPort }));
    if (ok) this.#onServed?.(kpod.metadata.uid);
    else this.#uidOf.delete(id);
    return ok;
  }

  /** The agent met a CNI-enrolled pod through the API server and serves it: DEL must find it. */
  note(id: string, uid: string): void {
    this.#uidOf.set(id, uid);
  }

  async withdraw(id: string): Promise<void> {
    const uid = this.#uidOf.get(id);
    if (uid === undefined) return;
    this.#uidOf.delete(id);
    await this.#host.withdraw(uid, 'cni_del');
  }
}

/**
 * Gives a CNI enrollment the NODE_PROXY flag (it lacks it when the plugin ran
 * in a process of its own, the agent being down) and returns the proxy ports
 * its row holds; null when the netns has no row (withdrawn meanwhile).
 */
export function markForNodeProxy(scope: NodeScope, netnsPath: string): { incomingPort: number; outgoingPort: number } | null {
  const cookie = netnsCookieOf(netnsPath);
  const maps = openNodeMaps(scope);
  try {
    const row = maps.settings.get(cookie);
    if (row === null) return null;
    if ((row.flags & Flags.NODE_PROXY) === 0) maps.settings.set(cookie, { ...row, flags: row.flags | Flags.NODE_PROXY });
    return { incomingPort: row.incomingPort, outgoingPort: row.outgoingPort };
  } finally {
    closeMaps(maps);
  }
}
