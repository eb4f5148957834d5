// Control-plane clients over TLS, against the real development control plane
// in-process. Traffic stays on loopback, so the clients are told the service
// is "off loopback" (ControlAddr.loopback false) and the control plane serves
// TLS anyway (serverTls: 'tls'); the kernel tests (mesh-control-tls) do the
// same across pods. Tampered control planes: another CA, another name,
// plaintext.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import type { ControlAddr } from '../../src/config/proxy-env.js';
import { DestinationResolver } from '../../src/control/destination.js';
import { IdentityClient } from '../../src/control/identity.js';
import { identityClientCtor } from '../../src/control/protos.js';
import { TlsStore } from '../../src/tls/tls-store.js';
import type { Addr } from '../../src/proxy/types.js';
import { eventually, metricValue, silent, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

const WEB = 'web.default.serviceaccount.identity.linkerd.cluster.local';
const SVC = 'web.default.svc.cluster.local:8080';
const yaml = `
trustDomain: cluster.local
identity: { leafLifetime: 3s }
services:
  - name: ${SVC}
    endpoints: [{ addr: "10.1.0.7:8080", identity: ${WEB} }]
`;
const LO: Addr = { host: '127.0.0.1', port: 0 };

let cp: TestControlPlane;
let otherCa: TestControlPlane;
let wrongName: TestControlPlane;
let plaintext: TestControlPlane;
const closers: Array<() => void> = [];

before(async () => {
  cp = await startTestControlPlane(yaml, LO, { serverTls: 'tls' });
  otherCa = await startTestControlPlane(yaml, LO, { serverTls: 'tls' });
  wrongName = await startTestControlPlane(yaml, LO, {
    serverTls: 'tls',
    stateDir: join(cp.dir, 'state'),
    serverNames: { identity: 'linkerd-identity.evil.serviceaccount.identity.linkerd.cluster.local' },
  });
  plaintext = await startTestControlPlane(yaml, LO, { serverTls: 'plaintext', identityListen: LO });
});

after(async () => {
  for (const c of closers) c();
  for (const t of [cp, otherCa, wrongName, plaintext]) await t?.cleanup();
});

const offLoopback = (addr: Addr, name: string): ControlAddr => ({ addr, name, loopback: false });

function identity(t: TestControlPlane, registry = new Registry()): IdentityClient {
  const tokenFile = join(cp.dir, 'token');
  writeFileSync(tokenFile, 'any');
  const c = new IdentityClient({
    config: { svc: offLoopback(t.cp.identityAddress, cp.cp.serverNames.identity), localName: WEB, tokenFile, trustAnchorsPem: cp.cp.trustAnchorsPem, dir: undefined },
    registry,
    log: silent,
    minRefreshMs: 100,
    retryMs: 200,
  });
  closers.push(() => c.close());
  return c;
}

function nextError(c: IdentityClient): Promise<Error & { code?: string }> {
  return new Promise((resolve) => c.once('refreshError', resolve));
}

test('the control plane serves Identity and Destination on separate TLS ports, with server certificates for their identities', () => {
  assert.deepEqual(cp.cp.secure, { identity: true, destination: true });
  assert.notEqual(cp.cp.identityAddress.port, cp.cp.address.port);
  assert.equal(cp.cp.serverNames.identity, 'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local');
  assert.equal(cp.cp.serverNames.destination, 'linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local');
});

test('certification over TLS, then discovery over mTLS; rotations rebuild the channel and keep the discovery state', async () => {
  const registry = new Registry();
  const id = identity(cp, registry);
  const store = new TlsStore({ trustAnchorsPem: id.trustAnchorsPem, identity: id.identity });
  id.on('certificate', (c) => store.update({ identity: c.identity, keyPem: c.keyPem, certChainPem: c.certPem }));
  const resolver = new DestinationResolver({
    config: { ...offLoopback(cp.cp.address, cp.cp.serverNames.destination), contextToken: '' },
    tls: store,
    registry,
    log: silent,
    idleMs: 60_000,
  });
  closers.push(() => resolver.close());
  // Before the first certificate no stream can open: the lookup waits.
  const target = { host: '10.1.0.1', port: 8080 };
  assert.equal(resolver.resolve(target, SVC).kind, 'fallback');
  await id.start();
  await id.ready;
  const r = await resolver.whenResolved(target, SVC, 5000);
  assert.equal(r.kind, 'endpoints');
  assert.equal(await metricValue(registry, 'bpfmesh_control_channel_builds_total', { service: 'destination' }), 1);
  // 3 s leaves, renewed at 70%: two rotations in about 4.5 s. The answer must stay 'endpoints' throughout.
  let lost = 0;
  const poll = setInterval(() => {
    if (resolver.resolve(target, SVC).kind !== 'endpoints') lost++;
  }, 5);
  try {
    await eventually(async () => (await metricValue(registry, 'bpfmesh_control_channel_builds_total', { service: 'destination' })) >= 3, 15_000, 'two rotations');
    // And the stream of the newest channel delivered: the reconnect counter counts only ends we did not cause.
    await eventually(async () => (await metricValue(registry, 'bpfmesh_destination_streams', { state: 'streaming' })) === 1, 5000, 'the stream is back');
  } finally {
    clearInterval(poll);
  }
  assert.equal(lost, 0, 'the discovery answer never left endpoints during rotations');
  assert.equal(await metricValue(registry, 'bpfmesh_destination_reconnects_total'), 0, 'no stream ended on its own');
  assert.ok((await metricValue(registry, 'bpfmesh_identity_refreshes_total', { result: 'ok' })) >= 3);
});

test('Destination refuses a client without a workload certificate (mTLS required)', async () => {
  const Ctor = identityClientCtor(); // any service: the handshake fails before a call is routed
  const creds = grpc.credentials.createSsl(Buffer.from(cp.cp.trustAnchorsPem));
  const c = new Ctor(`127.0.0.1:${cp.cp.address.port}`, creds, { 'grpc.ssl_target_name_override': cp.cp.serverNames.destination });
  closers.push(() => c.close());
  const err = await new Promise<grpc.ServiceError | null>((resolve) =>
    c.Certify({ identity: WEB, token: Buffer.from('x'), certificate_signing_request: Buffer.alloc(0) }, new grpc.Metadata(), { deadline: Date.now() + 3000 }, (e) => resolve(e)),
  );
  assert.ok(err !== null);
  assert.ok([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED].includes(err.code), `${err.code}: ${err.details}`);
});

test('a control plane from another CA is refused: BPFMESH_E_CONTROL_TLS_VERIFY, with what to do', async () => {
  const c = identity(otherCa);
  const e = nextError(c);
  await c.start();
  const err = await e;
  assert.equal(err.code, 'BPFMESH_E_CONTROL_TLS_VERIFY', err.message);
  assert.match(err.message, /LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS/);
  assert.equal(c.isReady, false);
});

test('a control plane whose certificate is for another name is refused: BPFMESH_E_CONTROL_IDENTITY_MISMATCH', async () => {
  const c = identity(wrongName);
  const e = nextError(c);
  await c.start();
  const err = await e;
  assert.equal(err.code, 'BPFMESH_E_CONTROL_IDENTITY_MISMATCH', err.message);
  assert.match(err.message, /linkerd-identity\.evil/);
  assert.match(err.message, /LINKERD2_PROXY_IDENTITY_SVC_NAME/);
});

test('a plaintext control plane off loopback is refused: BPFMESH_E_CONTROL_TLS_HANDSHAKE', async () => {
  assert.deepEqual(plaintext.cp.secure, { identity: false, destination: false });
  const c = identity(plaintext);
  const e = nextError(c);
  await c.start();
  const err = await e;
  assert.equal(err.code, 'BPFMESH_E_CONTROL_TLS_HANDSHAKE', err.message);
  assert.match(err.message, /plaintext/);
});
