// IdentityClient against the real development control plane, in-process.
// Renewal timing: the server issues 2 s leaves and the client's 10 s refresh
// floor is lowered to 100 ms (minRefreshMs), so "renew at 70% of the
// remaining lifetime" shows in about a second; the 20 s → 14 s case of the
// same formula is checked directly with refreshDelayMs.
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { IdentityClient, refreshDelayMs, type IdentityClientOptions, type WorkloadCertificate } from '../../src/control/identity.js';
import { identityClientCtor, type CertifyResponseMsg } from '../../src/control/protos.js';
import { x509 } from '../../src/control/x509.js';
import { startControlPlane } from '../../src/controlplane/server.js';
import { eventually, metricValue, silent, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

const WEB = 'web.default.serviceaccount.identity.linkerd.cluster.local';
const OTHER = 'other.default.serviceaccount.identity.linkerd.cluster.local';

let t: TestControlPlane;
const clients: IdentityClient[] = [];

before(async () => {
  t = await startTestControlPlane(`
trustDomain: cluster.local
identity: { leafLifetime: 2s }
tokens:
  token-a: ${WEB}
  token-b: ${WEB}
  token-other: ${OTHER}
`);
});

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

after(async () => {
  await t.cleanup();
});

function client(
  localName: string,
  token: string,
  extra: Partial<IdentityClientOptions> & { dir?: string; trustAnchorsPem?: string } = {},
): { c: IdentityClient; registry: Registry; tokenFile: string } {
  const { dir, trustAnchorsPem, ...opts } = extra;
  const tokenFile = join(t.dir, `token-${clients.length}`);
  writeFileSync(tokenFile, token);
  const registry = new Registry();
  const c = new IdentityClient({
    config: { svc: { addr: t.cp.address, loopback: true, name: undefined }, localName, tokenFile, trustAnchorsPem: trustAnchorsPem ?? t.cp.trustAnchorsPem, dir },
    registry,
    log: silent,
    minRefreshMs: 100,
    ...opts,
  });
  clients.push(c);
  return { c, registry, tokenFile };
}

function nextCertificate(c: IdentityClient, timeoutMs: number): Promise<WorkloadCertificate> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no certificate in time')), timeoutMs);
    c.once('certificate', (cert) => {
      clearTimeout(timer);
      resolve(cert);
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('refresh at 70% of the remaining lifetime, clamped to [10 s, 24 h]', () => {
  assert.equal(refreshDelayMs(20_000, 0), 14_000);
  assert.equal(refreshDelayMs(24 * 3_600_000, 0), Math.floor(24 * 3_600_000 * 0.7));
  assert.equal(refreshDelayMs(2_000, 0), 10_000, 'the floor');
  assert.equal(refreshDelayMs(-5, 0), 10_000, 'already expired: the floor, not a tight loop');
  assert.equal(refreshDelayMs(30 * 86_400_000, 0), 24 * 3_600_000, 'the cap');
  assert.equal(refreshDelayMs(2_000, 0, 100), 1_400, 'an injected floor');
});

test('certifies with a CSR whose only SAN is the identity; the chain verifies; ready, metrics and the identity dir', async () => {
  const dir = join(t.dir, 'end-entity');
  // A trailing newline in the token file is not part of the token.
  const { c: withDir, registry } = client(WEB, 'token-a\n', { dir });
  assert.equal(withDir.isReady, false);
  const before = t.certifies.length;
  await withDir.start();
  const cert = await withDir.ready;
  assert.equal(withDir.isReady, true);
  assert.equal(cert.identity, WEB);

  // What the server received.
  const ev = t.certifies[before];
  assert.ok(ev);
  assert.equal(ev.result, 'OK');
  assert.equal(ev.identity, WEB);
  assert.equal(ev.token, 'token-a');
  const csr = new x509.Pkcs10CertificateRequest(new Uint8Array(ev.csr));
  assert.ok(await csr.verify());
  const sans = csr.extensions.filter((e) => e.type === '2.5.29.17').map((e) => new x509.SubjectAlternativeNameExtension(e.rawData));
  assert.equal(sans.length, 1);
  assert.deepEqual(sans[0]?.names.items.map((n) => [n.type, n.value]), [['dns', WEB]], 'exactly one SAN: DNS = identity');
  assert.deepEqual(csr.subjectName.getField('CN'), [], 'CN empty');
  assert.equal((csr.publicKey.algorithm as EcKeyAlgorithm).namedCurve, 'P-256');

  // What the client installed.
  const [leafPem, issuerPem, ...rest] = cert.certPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  assert.ok(leafPem !== undefined && issuerPem !== undefined);
  assert.equal(rest.length, 0);
  const leaf = new X509Certificate(leafPem);
  const issuer = new X509Certificate(issuerPem);
  const anchor = new X509Certificate(t.cp.trustAnchorsPem);
  assert.ok(leaf.verify(issuer.publicKey) && issuer.verify(anchor.publicKey));
  assert.equal(leaf.subjectAltName, `DNS:${WEB}`);
  assert.ok(leaf.checkPrivateKey((await import('node:crypto')).createPrivateKey(cert.keyPem)));
  assert.ok(Math.abs(cert.expiresAt.getTime() - Date.now() - 2000) < 1500, `a 2 s leaf: ${cert.expiresAt.toISOString()}`);
  assert.equal(await metricValue(registry, 'bpfmesh_identity_cert_expiry_timestamp_seconds'), cert.expiresAt.getTime() / 1000);
  assert.ok((await metricValue(registry, 'bpfmesh_identity_refreshes_total', { result: 'ok' })) >= 1);

  // LINKERD2_PROXY_IDENTITY_DIR.
  assert.equal(readFileSync(join(dir, 'key.pem'), 'utf8'), cert.keyPem);
  assert.equal(statSync(join(dir, 'key.pem')).mode & 0o777, 0o600);
  await eventually(() => {
    try {
      return readFileSync(join(dir, 'cert.pem'), 'utf8').includes(leafPem);
    } catch {
      return false;
    }
  }, 1000, 'cert.pem written');
  assert.ok(statSync(join(dir, 'csr.der')).size > 0);
});

test('renews at ~70% of the remaining lifetime, re-reading the token file each time', async () => {
  const { c, tokenFile } = client(WEB, 'token-a');
  const first = nextCertificate(c, 5000);
  const before = t.certifies.length;
  await c.start();
  const a = await first;
  const tA = Date.now();
  writeFileSync(tokenFile, 'token-b'); // the kubelet rotated it
  const b = await nextCertificate(c, 4000);
  const waited = Date.now() - tA;
  const expected = 0.7 * (a.expiresAt.getTime() - tA);
  // Leaves end on a whole second, so 2 s leaves last 1-2 s: renewal 0.7-1.4 s after issue.
  assert.ok(Math.abs(waited - expected) < 400, `renewed after ${waited} ms, expected ~${Math.round(expected)} ms`);
  assert.ok(b.expiresAt > a.expiresAt);
  assert.equal(b.keyPem, a.keyPem, 'one key for the process');
  const seen = t.certifies.slice(before).map((e) => e.token);
  assert.deepEqual(seen.slice(0, 2), ['token-a', 'token-b'], 'the second Certify carried the new token');
});

test('FailedPrecondition for a token that does not authenticate the identity: retried after 10 s, not in a loop', async () => {
  const before = t.certifies.length;
  const { c, registry } = client(WEB, 'token-other');
  const errors: Error[] = [];
  c.on('refreshError', (e) => errors.push(e));
  await c.start();
  await sleep(1500);
  const calls = t.certifies.slice(before);
  assert.equal(calls.length, 1, `Certify calls in 1.5 s: ${calls.length}`);
  assert.equal(calls[0]?.result, 'FAILED_PRECONDITION');
  assert.equal(errors.length, 1);
  assert.match(errors[0]?.message ?? '', /FAILED_PRECONDITION/);
  assert.equal(c.isReady, false);
  assert.equal(await metricValue(registry, 'bpfmesh_identity_refreshes_total', { result: 'error' }), 1);
});

test('InvalidArgument for an identity outside the trust domain: not retried in a tight loop', async () => {
  const before = t.certifies.length;
  const { c } = client('web.default.serviceaccount.identity.linkerd.example.org', 'token-a', { retryMs: 700 });
  await c.start();
  await sleep(1500);
  const calls = t.certifies.slice(before);
  assert.ok(calls.length >= 2 && calls.length <= 3, `Certify calls in 1.5 s with a 700 ms retry: ${calls.length}`);
  assert.ok(calls.every((e) => e.result === 'INVALID_ARGUMENT'));
});

test('a certificate that does not chain to the trust anchors is not installed', async () => {
  const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']));
  const stranger = await x509.X509CertificateGenerator.createSelfSigned({ name: 'CN=stranger', keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } });
  const { c: strangerClient } = client(WEB, 'token-a', { retryMs: 60_000, trustAnchorsPem: stranger.toString('pem') });
  const err = new Promise<Error>((resolve) => strangerClient.once('refreshError', resolve));
  await strangerClient.start();
  assert.match((await err).message, /no chain .* to the trust anchors/);
  assert.equal(strangerClient.isReady, false);
});

// The server's checks, with requests the client would never send.
async function certify(identity: string, token: string, csr: Buffer): Promise<{ code: grpc.status; res?: CertifyResponseMsg }> {
  const Ctor = identityClientCtor();
  const stub = new Ctor(`127.0.0.1:${t.cp.address.port}`, grpc.credentials.createInsecure());
  try {
    return await new Promise((resolve) =>
      stub.Certify({ identity, token: Buffer.from(token), certificate_signing_request: csr }, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (err, res) =>
        resolve(err === null ? { code: grpc.status.OK, ...(res !== undefined ? { res } : {}) } : { code: err.code }),
      ),
    );
  } finally {
    stub.close();
  }
}

async function csrWith(names: Array<{ type: 'dns' | 'url'; value: string }>, cn?: string): Promise<Buffer> {
  const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']));
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    ...(cn !== undefined ? { name: `CN=${cn}` } : {}),
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names)] : [],
  });
  return Buffer.from(csr.rawData);
}

test('server: InvalidArgument unless the CSR has exactly one DNS SAN equal to the identity; FailedPrecondition for a token mismatch', async () => {
  assert.equal((await certify(WEB, 'token-a', await csrWith([{ type: 'dns', value: WEB }]))).code, grpc.status.OK);
  assert.equal((await certify(WEB, 'token-a', await csrWith([{ type: 'dns', value: WEB }], WEB))).code, grpc.status.OK, 'CN equal to the identity');
  const invalid: Array<[string, Buffer]> = [
    ['another SAN', await csrWith([{ type: 'dns', value: OTHER }])],
    ['two SANs', await csrWith([{ type: 'dns', value: WEB }, { type: 'dns', value: OTHER }])],
    ['a URI SAN', await csrWith([{ type: 'url', value: 'spiffe://cluster.local/ns/default/sa/web' }])],
    ['no SAN', await csrWith([])],
    ['a CN that is not the identity', await csrWith([{ type: 'dns', value: WEB }], 'web')],
    ['not DER', Buffer.from('-----BEGIN CERTIFICATE REQUEST-----')],
  ];
  for (const [what, csr] of invalid) assert.equal((await certify(WEB, 'token-a', csr)).code, grpc.status.INVALID_ARGUMENT, what);
  assert.equal((await certify(WEB, '', await csrWith([{ type: 'dns', value: WEB }]))).code, grpc.status.INVALID_ARGUMENT, 'no token');
  assert.equal((await certify(WEB, 'nope', await csrWith([{ type: 'dns', value: WEB }]))).code, grpc.status.FAILED_PRECONDITION, 'unknown token');
  assert.equal((await certify(WEB, 'token-other', await csrWith([{ type: 'dns', value: WEB }]))).code, grpc.status.FAILED_PRECONDITION, "another identity's token");
  assert.equal((await certify(OTHER, 'token-other', await csrWith([{ type: 'dns', value: OTHER }]))).code, grpc.status.OK);
  assert.ok((await metricValue(t.registry, 'bpfmesh_controlplane_requests_total', { rpc: 'Certify', result: 'INVALID_ARGUMENT' })) >= invalid.length);
});

test('an issuer given as files (identity.issuer + trustAnchorsFile) signs leaves that chain to those anchors', async () => {
  const state = join(t.dir, 'state');
  const given = await startTestControlPlane(`
identity:
  issuer: { certFile: ${join(state, 'issuer.crt')}, keyFile: ${join(state, 'issuer.key')} }
  trustAnchorsFile: ${join(state, 'trust-anchors.pem')}
`);
  try {
    assert.equal(given.cp.trustAnchorsPem.trim(), t.cp.trustAnchorsPem.trim());
    const c = new IdentityClient({
      config: { svc: { addr: given.cp.address, loopback: true, name: undefined }, localName: WEB, tokenFile: join(t.dir, 'token-0'), trustAnchorsPem: t.cp.trustAnchorsPem, dir: undefined },
      registry: new Registry(),
      log: silent,
    });
    clients.push(c);
    await c.start();
    const cert = await c.ready;
    assert.equal(cert.identity, WEB);
    assert.ok(cert.expiresAt.getTime() - Date.now() > 23 * 3_600_000, 'the default 24 h lifetime');
  } finally {
    await given.cleanup();
  }
  // The key of another certificate is refused at start.
  const other = await startTestControlPlane('');
  try {
    writeFileSync(join(other.dir, 'mesh.yaml'), `identity: { issuer: { certFile: ${join(state, 'issuer.crt')}, keyFile: ${join(other.dir, 'state', 'issuer.key')} } }\n`);
    await assert.rejects(
      startControlPlane({ configPath: join(other.dir, 'mesh.yaml'), stateDir: join(other.dir, 'unused'), log: silent, registry: new Registry(), listen: { host: '127.0.0.1', port: 0 }, watch: false }),
      (e: Error & { code?: string }) => e.code === 'BPFMESH_E_CONTROL_PLANE_CONFIG' && /is not the key of/.test(e.message),
    );
  } finally {
    await other.cleanup();
  }
});
