// The one Kubernetes read of the CNI plugin: the pod being added or
// checked, through the kubernetes block's kubeconfig (linkerd-cni's
// installer writes one) or k8s_api_root. DEL never asks: it must work with
// the API server down and the pod gone.
import { KubeClient, type KubePod } from '../kube/client.js';
import { loadKubeAccess } from '../kube/config.js';
import type { KubeSettings } from './config.js';

// Below kubelet's CNI timeout, so the runtime gets our error, not its own.
const REQUEST_TIMEOUT_MS = 10_000;

export async function getPodFromApi(k8s: KubeSettings, namespace: string, name: string): Promise<KubePod | null> {
  const access = loadKubeAccess({ kubeconfig: k8s.kubeconfig, apiServer: k8s.apiRoot });
  const client = new KubeClient(access, { requestTimeoutMs: REQUEST_TIMEOUT_MS });
  try {
    return await client.getPod(namespace, name);
  } finally {
    client.close(); // keep-alive sockets would hold the process open
  }
}
