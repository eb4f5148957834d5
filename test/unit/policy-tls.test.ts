// The policy watcher (InboundServerPolicies WatchPort) over mTLS with the
// workload certificate, against the real development control plane
// in-process serving TLS on loopback (serverTls: 'tls'; the client is told
// the service is off loopback, as in control-tls.test.ts). A policy API
// from another CA or under another name is refused with a coded error the
// watcher's own probe finds; a certificate rotation moves the stream to the
// new client and the port keeps its policy throughout.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { ControlAddr } from '../../src/config/proxy-env.js';
import { IdentityClient } from '../../src/control/identity.js';
import { PolicyWatcher } from '../../src/policy/watcher.js';
import { TlsStore } from '../../src/tls/tls-store.js';
import type { Addr } from '../../src/proxy/types.js';
import { eventually, metricValue, silent, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

const WEB = 'web.default.serviceaccount.identity.linkerd.cluster.local';
const WORKLOAD = '{"ns":"default","pod":"web"}';
const yaml = `
trustDomain: cluster.local
identity: { leafLifetime: 3s }
policy:
  defaultPolicy: deny
  servers:
    - name: web-http
      workload: default:web
      port: 8080
      authorizations:
        - { name: clients, authentication: { identities: [${WEB}] } }
`;
const OTHER = 'other.default.serviceaccount.identity.linkerd.cluster.local';
const LO: Addr = { host: '127.0.0.1', port: 0 };

let cp: TestControlPlane;
let otherCa: TestControlPlane;
let wrongName: TestControlPlane;
const closers: Array<() => void> = [];

before(async () => {
  cp = await startTestControlPlane(yaml, LO, { serverTls: 'tls', policyListen: LO });
  otherCa = await startTestControlPlane(yaml, LO, { serverTls: 'tls' });
  // cp's issuer (a chain that verifies), a Destination certificate for another name.
  wrongName = await startTestControlPlane(yaml, LO, {
    serverTls: 'tls',
    stateDir: join(cp.dir, 'state'),
    serverNames: { destination: 'linkerd-destination.evil.serviceaccount.identity.linkerd.cluster.local' },
  });
});

after(async () => {
  for (const c of closers) c();
  for (const t of [cp, otherCa, wrongName]) await t?.cleanup();
});

const offLoopback = (addr: Addr, name: string): ControlAddr => ({ addr, name, loopback: false });

/** A workload certificate from cp's Identity (TLS), kept current in a TlsStore. */
async function certified(registry: Registry): Promise<TlsStore> {
  const tokenFile = join(cp.dir, 'token');
  writeFileSync(tokenFile, 'any');
  const id = new IdentityClient({
    config: { svc: offLoopback(cp.cp.identityAddress, cp.cp.serverNames.identity), localName: WEB, tokenFile, trustAnchorsPem: cp.cp.trustAnchorsPem, dir: undefined },
    registry,
    log: silent,
    minRefreshMs: 100,
    retryMs: 200,
  });
  closers.push(() => id.close());
  const store = new TlsStore({ trustAnchorsPem: id.trustAnchorsPem, identity: id.identity });
  id.on('certificate', (c) => store.update({ identity: c.identity, keyPem: c.keyPem, certChainPem: c.certPem }));
  await id.start();
  await id.ready;
  return store;
}

/** JSON log records, to read what the watcher says. */
function capture(): { log: pino.Logger; records: Array<Record<string, unknown>> } {
  const records: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line.startsWith('{')) records.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'warn' }, sink), records };
}

function watcher(t: TestControlPlane, store: TlsStore, registry: Registry, log: pino.Logger = silent, at: Addr = t.cp.address): PolicyWatcher {
  const w = new PolicyWatcher({
    config: { svc: offLoopback(at, cp.cp.serverNames.destination), workload: WORKLOAD },
    tls: store,
    registry,
    log,
    backoff: { minMs: 100, maxMs: 500 },
  });
  closers.push(() => w.close());
  return w;
}

test('the policy API over mTLS on the control plane\'s policy port (policyListen): the port gets its server policy', async () => {
  const registry = new Registry();
  assert.ok(cp.cp.policyAddress !== undefined && cp.cp.policyAddress.port !== cp.cp.address.port, 'a port of its own');
  const w = watcher(cp, await certified(registry), registry, silent, cp.cp.policyAddress);
  await w.ready(8080, 5000);
  assert.equal(w.policy(8080)?.meta.name, 'web-http');
  assert.equal(await metricValue(registry, 'bpfmesh_control_channel_builds_total', { service: 'policy' }), 1);
  w.close();
});

for (const c of [
  { what: 'another CA', t: () => otherCa, code: 'BPFMESH_E_CONTROL_TLS_VERIFY', says: /does not verify against LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS/ },
  { what: 'another name', t: () => wrongName, code: 'BPFMESH_E_CONTROL_IDENTITY_MISMATCH', says: /linkerd-destination\.evil.*set LINKERD2_PROXY_POLICY_SVC_NAME/ },
]) {
  test(`a policy API with a certificate from ${c.what} is refused: ${c.code}, and the port has no policy from it`, async () => {
    const registry = new Registry();
    const { log, records } = capture();
    const w = watcher(c.t(), await certified(registry), registry, log);
    await w.ready(8080, 1500);
    assert.equal(w.policy(8080), undefined, 'no policy from a refused server');
    await eventually(async () => (await metricValue(registry, 'bpfmesh_control_tls_failures_total', { service: 'policy', code: c.code })) >= 1, 10_000, `a ${c.code} probe`);
    const rec = records.find((r) => r['msg'] === 'TLS to the policy service failed');
    assert.ok(rec !== undefined, JSON.stringify(records));
    assert.equal(rec['code'], c.code);
    assert.match(String(rec['err']), c.says);
    assert.ok((await metricValue(registry, 'bpfmesh_policy_reconnects_total', { code: 'UNAVAILABLE' })) >= 1);
    assert.equal(await metricValue(registry, 'bpfmesh_policy_updates_total'), 0);
  });
}

/** The identities port 8080's policy allows. */
const allowed = (w: PolicyWatcher): string[] => (w.policy(8080)?.authorizations ?? []).flatMap((a) => (a.authn.kind === 'identities' ? [...a.authn.exact] : []));

test('certificate rotations move the WatchPort stream to the new client; the port keeps its policy throughout', async () => {
  const registry = new Registry();
  const w = watcher(cp, await certified(registry), registry);
  await w.ready(8080, 5000);
  assert.deepEqual(allowed(w), [WEB]);
  const serverStreams = await metricValue(cp.registry, 'bpfmesh_controlplane_streams');
  let lost = 0;
  const poll = setInterval(() => {
    if (w.policy(8080) === undefined) lost++;
  }, 5);
  try {
    // 3 s leaves renewed at 70%: two rotations within about 4.5 s.
    await eventually(async () => (await metricValue(registry, 'bpfmesh_control_channel_builds_total', { service: 'policy' })) >= 3, 15_000, 'two rotations');
    // The stream on the newest client delivers: a policy change reaches the port.
    cp.write(yaml.replace(`identities: [${WEB}]`, `identities: [${OTHER}]`));
    await eventually(() => allowed(w).includes(OTHER), 5000, 'the change after the rotations reached the watcher');
  } finally {
    clearInterval(poll);
    cp.write(yaml);
  }
  assert.equal(lost, 0, 'the port never lost its policy (no fallback to the default) during rotations');
  assert.equal(await metricValue(registry, 'bpfmesh_policy_reconnects_total'), 0, 'no stream ended on its own: moved, not dropped');
  assert.equal(await metricValue(registry, 'bpfmesh_policy_watches', { state: 'streaming' }), 1);
  // The server sees one WatchPort stream, not one per rotation left open.
  await eventually(async () => (await metricValue(cp.registry, 'bpfmesh_controlplane_streams')) === serverStreams, 2000, `the server holds ${serverStreams} stream(s) as before`);
});
