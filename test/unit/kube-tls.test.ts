// The Kubernetes client over HTTPS, as it runs in a cluster: the API
// server's certificate checked against the service account's CA, a bearer
// token re-read per request, or a kubeconfig's client certificate.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadKubeAccess } from '../../src/kube/config.js';
import { KubeClient } from '../../src/kube/client.js';
import { mintAnchor, mintIssuer, mintLeaf, type Issued } from '../helpers/tls-pki.js';

describe('KubeClient over HTTPS', () => {
  let dir: string;
  let server: Server;
  let port: number;
  let anchor: Issued;
  let issuer: Issued;
  let clientLeaf: Issued;
  const seen: Array<{ auth: string | undefined; clientCert: string | undefined }> = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bpfmesh-kube-tls-'));
    anchor = await mintAnchor('kubernetes-ca');
    issuer = await mintIssuer(anchor, 'kubernetes-intermediate');
    const serverLeaf = await mintLeaf(issuer, 'localhost');
    clientLeaf = await mintLeaf(issuer, 'system-node-bpfmesh');
    server = createServer({ cert: serverLeaf.certPem + issuer.certPem, key: serverLeaf.keyPem, ca: anchor.certPem + issuer.certPem, requestCert: true, rejectUnauthorized: false }, (req, res) => {
      const sock = req.socket as TLSSocket;
      const peer = sock.authorized ? sock.getPeerCertificate().subject?.CN : undefined;
      seen.push({ auth: req.headers.authorization, clientCert: typeof peer === 'string' ? peer : undefined });
      if (req.headers.authorization !== 'Bearer sa-token-2' && peer === undefined) {
        res.writeHead(401).end(JSON.stringify({ kind: 'Status', code: 401, message: 'Unauthorized' }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'PodList', metadata: { resourceVersion: '77' }, items: [] }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  test('in-cluster: CA from the service account, the rotated token on the next request', async () => {
    const sa = mkdtempSync(join(dir, 'sa-'));
    writeFileSync(join(sa, 'token'), 'sa-token-1');
    writeFileSync(join(sa, 'ca.crt'), anchor.certPem);
    const client = new KubeClient(loadKubeAccess({ serviceAccountDir: sa, env: { KUBERNETES_SERVICE_HOST: 'localhost', KUBERNETES_SERVICE_PORT: String(port) } }));
    try {
      await assert.rejects(client.listPods({}), (err: Error & { status?: number }) => err.status === 401);
      writeFileSync(join(sa, 'token'), 'sa-token-2');
      assert.equal((await client.listPods({})).resourceVersion, '77');
      assert.equal(seen.at(-1)?.auth, 'Bearer sa-token-2');
    } finally {
      client.close();
    }
  });

  test('kubeconfig with a client certificate; a server the CA does not sign is refused', async () => {
    const kc = join(dir, 'kubeconfig');
    const b64 = (s: string): string => Buffer.from(s).toString('base64');
    writeFileSync(
      kc,
      `current-context: c
contexts: [{ name: c, context: { cluster: k, user: u } }]
clusters: [{ name: k, cluster: { server: "https://localhost:${port}", certificate-authority-data: ${b64(anchor.certPem)} } }]
users: [{ name: u, user: { client-certificate-data: ${b64(clientLeaf.certPem + issuer.certPem)}, client-key-data: ${b64(clientLeaf.keyPem)} } }]
`,
    );
    const client = new KubeClient(loadKubeAccess({ kubeconfig: kc }));
    try {
      assert.equal((await client.listPods({})).resourceVersion, '77');
      assert.equal(seen.at(-1)?.clientCert, 'system-node-bpfmesh');
    } finally {
      client.close();
    }
    const other = await mintAnchor('someone-else');
    const wrong = new KubeClient({ ...loadKubeAccess({ kubeconfig: kc }), ca: Buffer.from(other.certPem) });
    try {
      await assert.rejects(wrong.listPods({}), (err: Error & { code?: string; status?: number }) => err.code === 'BPFMESH_E_KUBE_API' && err.status === 0);
    } finally {
      wrong.close();
    }
  });
});
