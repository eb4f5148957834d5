// Kubeconfig as kubectl reads it, with real files, a real TLS API server,
// a real exec credential plugin (an executable script) and a real CONNECT
// proxy on loopback: several files merged by kubectl's rules, exec plugins
// (token and client certificate, env, args, KUBERNETES_EXEC_INFO, re-run
// after expiry and on 401, failures as BPFMESH_E_KUBE_EXEC),
// tls-server-name and proxy-url.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadKubeAccess } from '../../src/kube/config.js';
import { KubeClient } from '../../src/kube/client.js';
import { mintAnchor, mintIssuer, mintLeaf, type Issued } from '../helpers/tls-pki.js';
import { startConnectProxy, type ConnectProxy } from '../helpers/connect-proxy.js';

const code = (c: string, re?: RegExp) => (err: unknown) => (err as { code?: string }).code === c && (re === undefined || re.test((err as Error).message));
const b64 = (s: string): string => Buffer.from(s).toString('base64');

interface Seen {
  auth: string | undefined;
  sni: string | false | null;
  clientCert: string | undefined;
}

describe('kubeconfig: merge, exec plugins, tls-server-name, proxy-url', () => {
  let dir: string;
  let server: Server;
  let port: number;
  let anchor: Issued;
  let issuer: Issued;
  let proxy: ConnectProxy;
  const seen: Seen[] = [];
  const goodTokens = new Set<string>(['static-token']);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bpfmesh-kubeconfig-'));
    anchor = await mintAnchor('kubernetes-ca');
    issuer = await mintIssuer(anchor, 'kubernetes-intermediate');
    // The certificate names only kube.internal: reaching 127.0.0.1 needs tls-server-name.
    const leaf = await mintLeaf(issuer, 'kube.internal');
    server = createServer({ cert: leaf.certPem + issuer.certPem, key: leaf.keyPem, ca: anchor.certPem + issuer.certPem, requestCert: true, rejectUnauthorized: false }, (req, res) => {
      const sock = req.socket as TLSSocket;
      const cn = sock.authorized ? sock.getPeerCertificate().subject?.CN : undefined;
      const auth = req.headers.authorization;
      seen.push({ auth, sni: sock.servername, clientCert: typeof cn === 'string' ? cn : undefined });
      const ok = (auth !== undefined && goodTokens.has(auth.replace(/^Bearer /, ''))) || cn !== undefined;
      if (!ok) return void res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', code: 401, reason: 'Unauthorized', message: 'Unauthorized' }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'PodList', metadata: { resourceVersion: '9' }, items: [] }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
    proxy = await startConnectProxy({ basicAuth: 'proxyuser:p@ss' });
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await proxy.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const write = (name: string, text: string): string => {
    const p = join(dir, name);
    mkdirSync(join(p, '..'), { recursive: true });
    writeFileSync(p, text);
    return p;
  };
  const cluster = (extra = ''): string => `{ server: "https://127.0.0.1:${port}", certificate-authority-data: ${b64(anchor.certPem)}, tls-server-name: kube.internal${extra} }`;

  async function list(kubeconfig: string, env: NodeJS.ProcessEnv = {}): Promise<string> {
    const client = new KubeClient(loadKubeAccess({ kubeconfig, env }), { requestTimeoutMs: 5000 });
    try {
      return (await client.listPods({})).resourceVersion;
    } finally {
      client.close();
    }
  }

  test('several files (KUBECONFIG): the first to name a cluster, user or context wins it whole; the first current-context wins; missing files are skipped', () => {
    write('one/ca.pem', 'CA-ONE');
    write('two/ca.pem', 'CA-TWO');
    write('two/client.pem', 'CERT-TWO');
    write('two/client.key', 'KEY-TWO');
    const one = write(
      'one/config',
      `current-context: ctx
contexts: [{ name: ctx, context: { cluster: shared, user: u2 } }]
clusters: [{ name: shared, cluster: { server: "https://first:6443", certificate-authority: ca.pem } }]
`,
    );
    const two = write(
      'two/config',
      `current-context: other
contexts:
- { name: ctx, context: { cluster: other, user: nobody } }
- { name: other, context: { cluster: shared, user: u2 } }
clusters: [{ name: shared, cluster: { server: "https://second:6443", insecure-skip-tls-verify: true, tls-server-name: second } }]
users: [{ name: u2, user: { client-certificate: client.pem, client-key: client.key } }]
`,
    );
    const a = loadKubeAccess({ env: { KUBECONFIG: `${join(dir, 'missing')}:${one}:${two}` } });
    assert.equal(a.server, 'https://first:6443', 'cluster "shared" from the first file');
    assert.equal(a.ca?.toString(), 'CA-ONE', "relative to the first file's folder");
    assert.equal(a.insecureSkipTlsVerify, false, 'nothing of the second "shared" leaks in');
    assert.equal(a.tlsServerName, undefined);
    assert.equal(a.cert?.toString(), 'CERT-TWO', "user u2 from the second file, relative to the second file's folder");
    assert.match(a.source, /context ctx/);
    const b = loadKubeAccess({ kubeconfig: `${two}:${one}` });
    assert.match(b.source, /context other/, 'the first current-context wins');
    assert.equal(b.server, 'https://second:6443');
    assert.equal(b.insecureSkipTlsVerify, true);
    assert.throws(() => loadKubeAccess({ kubeconfig: `${join(dir, 'x')}:${join(dir, 'y')}` }), code('BPFMESH_E_KUBE_CONFIG', /none of the kubeconfig files/));
    assert.throws(() => loadKubeAccess({ kubeconfig: join(dir, 'x') }), code('BPFMESH_E_KUBE_CONFIG', /cannot read kubeconfig/));
    // An explicit path beats $KUBECONFIG (nothing merged in from it): file one alone lacks user u2.
    assert.throws(() => loadKubeAccess({ kubeconfig: one, env: { KUBECONFIG: two } }), code('BPFMESH_E_KUBE_CONFIG', /no user named "u2"/));
  });

  test('tls-server-name: SNI and the certificate check use it; without it the server at 127.0.0.1 is refused', async () => {
    const base = `current-context: c
contexts: [{ name: c, context: { cluster: k, user: u } }]
users: [{ name: u, user: { token: static-token } }]
`;
    assert.equal(await list(write('sni.yaml', `${base}clusters: [{ name: k, cluster: ${cluster()} }]\n`)), '9');
    assert.equal(seen.at(-1)?.sni, 'kube.internal');
    const without = write('nosni.yaml', `${base}clusters: [{ name: k, cluster: { server: "https://127.0.0.1:${port}", certificate-authority-data: ${b64(anchor.certPem)} } }]\n`);
    await assert.rejects(list(without), code('BPFMESH_E_KUBE_API', /kube\.internal|altnames|IP: 127\.0\.0\.1/));
  });

  test('proxy-url: requests tunnel through an http CONNECT proxy (with its password); a refusing proxy is a clear error; other schemes are refused', async () => {
    const base = `current-context: c
contexts: [{ name: c, context: { cluster: k, user: u } }]
users: [{ name: u, user: { token: static-token } }]
`;
    const before = proxy.tunnels.length;
    const viaProxy = write('proxy.yaml', `${base}clusters: [{ name: k, cluster: ${cluster(`, proxy-url: "http://proxyuser:p%40ss@127.0.0.1:${proxy.port}"`)} }]\n`);
    assert.equal(await list(viaProxy), '9');
    const t = proxy.tunnels.slice(before);
    assert.equal(t.length, 1);
    assert.equal(t[0]!.target, `127.0.0.1:${port}`);
    assert.equal(t[0]!.auth, `Basic ${b64('proxyuser:p@ss')}`);
    assert.equal(seen.at(-1)?.sni, 'kube.internal', 'TLS inside the tunnel, to the API server');

    const wrongPassword = write('proxy-bad.yaml', `${base}clusters: [{ name: k, cluster: ${cluster(`, proxy-url: "http://127.0.0.1:${proxy.port}"`)} }]\n`);
    await assert.rejects(list(wrongPassword), code('BPFMESH_E_KUBE_API', /proxy 127\.0\.0\.1:\d+: CONNECT .* refused: HTTP\/1\.1 407/));
    assert.throws(() => loadKubeAccess({ kubeconfig: write('socks.yaml', `${base}clusters: [{ name: k, cluster: ${cluster(', proxy-url: "socks5://127.0.0.1:1080"')} }]\n`) }), code('BPFMESH_E_KUBE_CONFIG', /http:\/\/ proxies/));
  });

  describe('exec credential plugin (a real executable)', () => {
    let plugin: string;
    let counter: string;
    let infoFile: string;
    let certs: { certPem: string; keyPem: string };

    before(async () => {
      counter = join(dir, 'runs');
      infoFile = join(dir, 'exec-info.json');
      const leaf = await mintLeaf(issuer, 'exec-client');
      certs = { certPem: leaf.certPem + issuer.certPem, keyPem: leaf.keyPem };
      write('certs.json', JSON.stringify(certs));
      // MODE (env from the kubeconfig) picks the answer; args and env are echoed into the token.
      plugin = write(
        'bin/plugin',
        `#!${process.execPath}
const fs = require('node:fs');
const n = (fs.existsSync(${JSON.stringify(counter)}) ? Number(fs.readFileSync(${JSON.stringify(counter)}, 'utf8')) : 0) + 1;
fs.writeFileSync(${JSON.stringify(counter)}, String(n));
fs.writeFileSync(${JSON.stringify(infoFile)}, process.env.KUBERNETES_EXEC_INFO || '');
const mode = process.env.MODE;
const api = process.env.API || 'client.authentication.k8s.io/v1';
if (mode === 'fail') { process.stderr.write('token service unavailable'); process.exit(3); }
if (mode === 'garbage') { process.stdout.write('not json'); process.exit(0); }
const status = mode === 'cert'
  ? { clientCertificateData: ${JSON.stringify(certs.certPem)}, clientKeyData: ${JSON.stringify(certs.keyPem)} }
  : { token: process.argv.slice(2).join('-') + '-' + process.env.SUFFIX + '-' + n };
if (process.env.TTL) status.expirationTimestamp = new Date(Date.now() + Number(process.env.TTL) * 1000).toISOString();
process.stdout.write(JSON.stringify({ apiVersion: api, kind: 'ExecCredential', status }));
`,
      );
      chmodSync(plugin, 0o755);
    });

    const runs = (): number => Number(readFileSync(counter, 'utf8'));
    const kubeconfig = (name: string, exec: string, clusterExtra = ''): string =>
      write(
        `${name}.yaml`,
        `current-context: c
contexts: [{ name: c, context: { cluster: k, user: u } }]
clusters: [{ name: k, cluster: ${cluster(clusterExtra)} }]
users: [{ name: u, user: { exec: ${exec} } }]
`,
      );

    test('token from stdout with args and env; KUBERNETES_EXEC_INFO; cached until expirationTimestamp, then run again; a 401 runs it again', async () => {
      rmSync(counter, { force: true });
      goodTokens.add('a-b-s1-1');
      const kc = kubeconfig(
        'exec-token',
        `{ apiVersion: client.authentication.k8s.io/v1, command: ./bin/plugin, args: [a, b], env: [{ name: SUFFIX, value: s1 }, { name: TTL, value: "11" }], interactiveMode: Never, provideClusterInfo: true }`,
        ', extensions: [{ name: client.authentication.k8s.io/exec, extension: { audience: bpfmesh } }]',
      );
      const client = new KubeClient(loadKubeAccess({ kubeconfig: kc }), { requestTimeoutMs: 5000 });
      try {
        await client.listPods({});
        await client.listPods({});
        assert.equal(runs(), 1, 'one run while the credential is valid');
        assert.equal(seen.at(-1)?.auth, 'Bearer a-b-s1-1');
        const info = JSON.parse(readFileSync(infoFile, 'utf8')) as { kind: string; apiVersion: string; spec: { interactive: boolean; cluster?: { server: string; 'tls-server-name'?: string; config?: { audience: string } } } };
        assert.equal(info.kind, 'ExecCredential');
        assert.equal(info.spec.interactive, false);
        assert.equal(info.spec.cluster?.server, `https://127.0.0.1:${port}`);
        assert.equal(info.spec.cluster?.['tls-server-name'], 'kube.internal');
        assert.deepEqual(info.spec.cluster?.config, { audience: 'bpfmesh' });
        // TTL 11 s, re-run 10 s before expiry: after a little over a second it is run again.
        goodTokens.add('a-b-s1-2');
        await new Promise((r) => setTimeout(r, 1300));
        await client.listPods({});
        assert.equal(runs(), 2, 'run again after expiry');
        assert.equal(seen.at(-1)?.auth, 'Bearer a-b-s1-2');
        // The server stops accepting it: one 401, the plugin runs again, the request is retried once.
        goodTokens.delete('a-b-s1-2');
        goodTokens.add('a-b-s1-3');
        await client.listPods({});
        assert.equal(runs(), 3);
        assert.deepEqual(
          seen.slice(-2).map((s) => s.auth),
          ['Bearer a-b-s1-2', 'Bearer a-b-s1-3'],
        );
      } finally {
        client.close();
      }
    });

    test('a client certificate from the plugin (v1beta1, no interactiveMode) is presented to the server', async () => {
      const kc = kubeconfig('exec-cert', `{ apiVersion: client.authentication.k8s.io/v1beta1, command: ${plugin}, env: [{ name: MODE, value: cert }, { name: API, value: client.authentication.k8s.io/v1beta1 }] }`);
      assert.equal(await list(kc), '9');
      assert.equal(seen.at(-1)?.clientCert, 'exec-client');
    });

    test('a failing, missing or garbled plugin is BPFMESH_E_KUBE_EXEC with its stderr or the install hint; interactiveMode Always is refused', async () => {
      await assert.rejects(list(kubeconfig('exec-fail', `{ apiVersion: client.authentication.k8s.io/v1, command: ${plugin}, env: [{ name: MODE, value: fail }], interactiveMode: Never }`)), code('BPFMESH_E_KUBE_EXEC', /exit 3.*token service unavailable/));
      await assert.rejects(
        list(kubeconfig('exec-missing', `{ apiVersion: client.authentication.k8s.io/v1, command: no-such-plugin-bpfmesh, interactiveMode: Never, installHint: "install it with: apt-get install no-such-plugin" }`)),
        code('BPFMESH_E_KUBE_EXEC', /cannot run.*install it with/),
      );
      await assert.rejects(list(kubeconfig('exec-garbage', `{ apiVersion: client.authentication.k8s.io/v1, command: ${plugin}, env: [{ name: MODE, value: garbage }], interactiveMode: Never }`)), code('BPFMESH_E_KUBE_EXEC', /not JSON/));
      await assert.rejects(
        list(kubeconfig('exec-version', `{ apiVersion: client.authentication.k8s.io/v1, command: ${plugin}, env: [{ name: API, value: client.authentication.k8s.io/v1beta1 }], interactiveMode: Never }`)),
        code('BPFMESH_E_KUBE_EXEC', /apiVersion/),
      );
      assert.throws(() => loadKubeAccess({ kubeconfig: kubeconfig('exec-always', `{ apiVersion: client.authentication.k8s.io/v1, command: ${plugin}, interactiveMode: Always }`) }), code('BPFMESH_E_KUBE_CONFIG', /needs a terminal/));
      assert.throws(() => loadKubeAccess({ kubeconfig: kubeconfig('exec-nomode', `{ apiVersion: client.authentication.k8s.io/v1, command: ${plugin} }`) }), code('BPFMESH_E_KUBE_CONFIG', /interactiveMode/));
    });
  });
});
