// The connection pool of the Kubernetes client: TLS as the kubeconfig or
// service account says (CA, client certificate, tls-server-name).
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { KubeAccess } from './config.js';

export function createKubeAgent(access: KubeAccess): HttpAgent {
  if (!access.server.startsWith('https:')) return new HttpAgent({ keepAlive: true });
  return new HttpsAgent({
    keepAlive: true,
    ...(access.ca ? { ca: access.ca } : {}),
    ...(access.cert ? { cert: access.cert } : {}),
    ...(access.key ? { key: access.key } : {}),
    rejectUnauthorized: !access.insecureSkipTlsVerify,
  });
}
