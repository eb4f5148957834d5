// Kubernetes access: kubeconfig parsing (current context, token, tokenFile,
// CA and client certificate as data or relative paths) and the in-cluster
// service account (token re-read on every request).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadKubeAccess } from '../../src/kube/config.js';

const code = (c: string) => (err: unknown) => (err as { code?: string }).code === c;

describe('loadKubeAccess', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'bpfmesh-kubecfg-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const write = (name: string, text: string): string => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  test('kubeconfig: the current context picks cluster and user; data fields are base64', () => {
    const ca = Buffer.from('-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n');
    const path = write(
      'a.yaml',
      `apiVersion: v1
kind: Config
current-context: two
clusters:
- name: c1
  cluster: { server: "https://one.example:6443" }
- name: c2
  cluster:
    server: https://10.0.0.2:6443/
    certificate-authority-data: ${ca.toString('base64')}
contexts:
- name: one
  context: { cluster: c1, user: u1 }
- name: two
  context: { cluster: c2, user: u2 }
users:
- name: u1
  user: { token: t1 }
- name: u2
  user: { token: t2 }
`,
    );
    const a = loadKubeAccess({ kubeconfig: path });
    assert.equal(a.server, 'https://10.0.0.2:6443');
    assert.equal(a.token(), 't2');
    assert.deepEqual(a.ca, ca);
    assert.equal(a.cert, undefined);
    assert.equal(loadKubeAccess({ kubeconfig: path, apiServer: 'http://127.0.0.1:1' }).server, 'http://127.0.0.1:1');
  });

  test('kubeconfig: files relative to the kubeconfig, client certificate and key, tokenFile re-read', () => {
    write('ca.pem', 'CA-PEM');
    write('client.pem', 'CERT-PEM');
    write('client.key', 'KEY-PEM');
    const tokenFile = write('token', 'first\n');
    const path = write(
      'b.yaml',
      `current-context: x
clusters: [{ name: c, cluster: { server: "https://k:443", certificate-authority: ca.pem, insecure-skip-tls-verify: true } }]
contexts: [{ name: x, context: { cluster: c, user: u } }]
users: [{ name: u, user: { client-certificate: client.pem, client-key: ${join(dir, 'client.key')}, tokenFile: token } }]
`,
    );
    const a = loadKubeAccess({ kubeconfig: path });
    assert.equal(a.ca?.toString(), 'CA-PEM');
    assert.equal(a.cert?.toString(), 'CERT-PEM');
    assert.equal(a.key?.toString(), 'KEY-PEM');
    assert.equal(a.insecureSkipTlsVerify, true);
    assert.equal(a.token(), 'first');
    writeFileSync(tokenFile, 'second\n');
    assert.equal(a.token(), 'second');
  });

  test('kubeconfig errors say what is wrong', () => {
    assert.throws(() => loadKubeAccess({ kubeconfig: join(dir, 'missing.yaml') }), code('BPFMESH_E_KUBE_CONFIG'));
    assert.throws(() => loadKubeAccess({ kubeconfig: write('c.yaml', 'clusters: []\n') }), /no current-context/);
    assert.throws(() => loadKubeAccess({ kubeconfig: write('d.yaml', 'current-context: x\ncontexts: []\n') }), /no context named "x"/);
    assert.throws(
      () => loadKubeAccess({ kubeconfig: write('e.yaml', 'current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: "k8s:443"}}]\nusers: [{name: u, user: {token: t}}]\n') }),
      /not an http\(s\) URL|must be an http/,
    );
    assert.throws(
      () =>
        loadKubeAccess({
          kubeconfig: write('f.yaml', 'current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: "https://k"}}]\nusers: [{name: u, user: {client-certificate-data: QQ==}}]\n'),
        }),
      /without its key/,
    );
    assert.throws(() => loadKubeAccess({ kubeconfig: write('g.yaml', ': : :\n  - [') }), code('BPFMESH_E_KUBE_CONFIG'));
  });

  test('in-cluster: KUBERNETES_SERVICE_HOST/PORT, the CA, and a token re-read on each request', () => {
    const sa = mkdtempSync(join(dir, 'sa-'));
    writeFileSync(join(sa, 'token'), 'tok-1');
    writeFileSync(join(sa, 'ca.crt'), 'SA-CA');
    const a = loadKubeAccess({ serviceAccountDir: sa, env: { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' } });
    assert.equal(a.server, 'https://10.96.0.1:443');
    assert.equal(a.ca?.toString(), 'SA-CA');
    assert.equal(a.token(), 'tok-1');
    writeFileSync(join(sa, 'token'), 'tok-2');
    assert.equal(a.token(), 'tok-2', 'rotated token is picked up');
    rmSync(join(sa, 'token'));
    assert.equal(a.token(), 'tok-2', 'a missing file mid-rotation keeps the last token');
    writeFileSync(join(sa, 'token'), 'tok-3');
    assert.equal(loadKubeAccess({ serviceAccountDir: sa, env: { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '6443' } }).server, 'https://[fd00::1]:6443');
    assert.throws(() => loadKubeAccess({ serviceAccountDir: sa, env: {} }), /not running in a cluster/);
  });
});
