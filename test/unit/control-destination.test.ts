// DestinationResolver against the real development control plane, in-process.
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { DestinationResolver, lookupKey, type DestinationResolverOptions } from '../../src/control/destination.js';
import type { Addr, Endpoint, EndpointSet, Resolution } from '../../src/proxy/types.js';
import { eventually, metricValue, silent, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

const WEB = 'web.default.svc.cluster.local:8080';
const WEB_ID = 'web.default.serviceaccount.identity.linkerd.cluster.local';

const yaml = (endpoints: string): string => `
trustDomain: cluster.local
services:
  - name: ${WEB}
    labels: { service: web }
    endpoints:
${endpoints}
  - name: "10.0.0.9:80"
    noEndpoints: true
`;

const TWO = `
      - { addr: 10.0.0.2:8080, weight: 10000, identity: ${WEB_ID}, protocolHint: h2, labels: { pod: web-0 } }
      - { addr: "[fd00::3]:8080", weight: 500, protocolHint: opaque, labels: { pod: web-1 } }
`;

const target: Addr = { host: '10.96.0.10', port: 8080 };

let t: TestControlPlane;
const resolvers: DestinationResolver[] = [];

function resolver(extra: Partial<DestinationResolverOptions> = {}): { r: DestinationResolver; registry: Registry } {
  const registry = new Registry();
  const r = new DestinationResolver({
    config: { addr: t.cp.address, loopback: true, name: undefined, contextToken: '{"ns":"default","nodeName":"n1","pod":"client-0"}' },
    registry,
    log: silent,
    backoff: { minMs: 50, maxMs: 400 },
    ...extra,
  });
  resolvers.push(r);
  return { r, registry };
}

function endpointsOf(res: Resolution): EndpointSet {
  assert.equal(res.kind, 'endpoints', JSON.stringify(res));
  return (res as { set: EndpointSet }).set;
}

const addrs = (eps: readonly Endpoint[]): string[] => eps.map((e) => `${e.addr.host}:${e.addr.port}`).sort();

before(async () => {
  t = await startTestControlPlane(yaml(TWO));
});

afterEach(() => {
  for (const r of resolvers.splice(0)) r.close();
});

after(async () => {
  await t.cleanup();
});

test('lookup keys: the authority (with the target port when it has none), else ip:port', () => {
  assert.equal(lookupKey(target, undefined), '10.96.0.10:8080');
  assert.equal(lookupKey(target, 'Web.Default.svc.cluster.local:8080'), WEB);
  assert.equal(lookupKey(target, 'web'), 'web:8080');
  assert.equal(lookupKey({ host: 'fd00::1', port: 80 }, undefined), '[fd00::1]:80');
  assert.equal(lookupKey(target, '[fd00::1]'), '[fd00::1]:8080');
  assert.equal(lookupKey(target, 'fd00::1'), '10.96.0.10:8080', 'a bare IPv6 is not an authority');
});

test('endpoints arrive with weights, identities, server names, hints and labels', async () => {
  const { r } = resolver();
  assert.deepEqual(r.resolve(target, WEB), { kind: 'fallback' }, 'before the first update: fallback');
  const set = endpointsOf(await r.whenResolved(target, WEB, 2000));
  const byHost = new Map(set.endpoints.map((e) => [e.addr.host, e]));
  assert.deepEqual(byHost.get('10.0.0.2'), {
    addr: { host: '10.0.0.2', port: 8080 },
    weight: 10000,
    identity: WEB_ID,
    serverName: WEB_ID,
    protocolHint: 'h2',
    labels: { service: 'web', pod: 'web-0' },
  });
  assert.deepEqual(byHost.get('fd00::3'), {
    addr: { host: 'fd00::3', port: 8080 },
    weight: 500,
    protocolHint: 'opaque',
    labels: { service: 'web', pod: 'web-1' },
  });
  assert.equal(endpointsOf(r.resolve(target, WEB)).endpoints.length, 2, 'resolve() now answers from the cache');
});

test('one Get stream per key, shared by every caller', async () => {
  const before = await metricValue(t.registry, 'bpfmesh_controlplane_requests_total', { rpc: 'Get' });
  const { r } = resolver();
  const first = await r.whenResolved(target, WEB, 2000);
  const sets = new Set<EndpointSet>();
  for (let i = 0; i < 20; i++) sets.add(endpointsOf(r.resolve({ host: `10.96.0.${i}`, port: 8080 }, WEB)));
  assert.equal(sets.size, 1);
  assert.ok(sets.has(endpointsOf(first)));
  assert.equal(r.size, 1);
  assert.equal((await metricValue(t.registry, 'bpfmesh_controlplane_requests_total', { rpc: 'Get' })) - before, 1);
});

test('NoEndpoints{exists:true} fails fast; exists:false (an unknown path) falls back', async () => {
  const { r } = resolver();
  const known = await r.whenResolved({ host: '10.0.0.9', port: 80 }, undefined, 2000);
  assert.equal(known.kind, 'fail');
  assert.match((known as { reason: string }).reason, /10\.0\.0\.9:80/);
  assert.deepEqual(await r.whenResolved({ host: '10.0.0.99', port: 80 }, undefined, 2000), { kind: 'fallback' });
  assert.deepEqual(await r.whenResolved(target, 'nobody.default.svc.cluster.local:80', 2000), { kind: 'fallback' });
});

test('a hot reload reaches open streams as Add/Remove within 1 s; a bad file changes nothing', async () => {
  const { r, registry } = resolver();
  const set = endpointsOf(await r.whenResolved(target, WEB, 2000));
  let changes = 0;
  set.onChange(() => changes++);

  const t0 = Date.now();
  t.write(
    yaml(`
      - { addr: 10.0.0.2:8080, weight: 20000, identity: ${WEB_ID}, protocolHint: h2, labels: { pod: web-0 } }
      - { addr: 10.0.0.4:8080, identity: ${WEB_ID}, labels: { pod: web-2 } }
`),
  );
  await eventually(() => addrs(set.endpoints).join() === '10.0.0.2:8080,10.0.0.4:8080' && set.endpoints.find((e) => e.addr.host === '10.0.0.2')?.weight === 20000, 1000, 'the reload to arrive');
  assert.ok(Date.now() - t0 <= 1000);
  assert.ok(changes >= 1);
  const web2 = set.endpoints.find((e) => e.addr.host === '10.0.0.4');
  assert.equal(web2?.weight, 10000, 'the controller default');
  assert.ok((await metricValue(registry, 'bpfmesh_destination_updates_total', { kind: 'remove' })) >= 1);
  assert.ok((await metricValue(registry, 'bpfmesh_destination_updates_total', { kind: 'add' })) >= 2);

  // A file that does not parse is logged and ignored.
  t.write('services: [ { name: "web:80", endpoints: 7 } ]\n');
  await eventually(async () => (await metricValue(t.registry, 'bpfmesh_controlplane_reloads_total', { result: 'error' })) >= 1, 2000, 'the bad reload');
  assert.deepEqual(addrs(set.endpoints), ['10.0.0.2:8080', '10.0.0.4:8080']);
  assert.equal((await r.whenResolved({ host: '10.0.0.9', port: 80 }, undefined, 2000)).kind, 'fail', 'the old configuration still answers');

  // A service emptied: its clients fail fast.
  t.write(yaml('      []'));
  await eventually(() => r.resolve(target, WEB).kind === 'fail', 1000, 'NoEndpoints{exists:true}');
  t.write(yaml(TWO));
  await eventually(() => r.resolve(target, WEB).kind === 'endpoints', 1000, 'endpoints again');
});

test('the control plane gone: the last endpoints stay; it returns on the same port and updates resume', async () => {
  t.write(yaml(TWO));
  await t.cp.reload();
  const { r, registry } = resolver();
  const set = endpointsOf(await r.whenResolved(target, WEB, 2000));
  assert.deepEqual(addrs(set.endpoints), ['10.0.0.2:8080', 'fd00::3:8080']);
  const port = t.cp.address.port;

  await t.stop();
  await eventually(async () => (await metricValue(registry, 'bpfmesh_destination_reconnects_total')) >= 2, 3000, 'reconnect attempts');
  const res = r.resolve(target, WEB);
  assert.equal(endpointsOf(res), set, 'the same set, still answering');
  assert.equal(set.endpoints.length, 2, 'last known endpoints kept');
  assert.ok((await metricValue(registry, 'bpfmesh_destination_streams', { state: 'backoff' })) + (await metricValue(registry, 'bpfmesh_destination_streams', { state: 'connecting' })) === 1);

  // Back, with another state: the first message after the reconnect replaces what was known.
  t.write(yaml('      - { addr: 10.0.0.7:8080, identity: ' + WEB_ID + ' }'));
  await t.restart();
  assert.equal(t.cp.address.port, port);
  await eventually(() => addrs(set.endpoints).join() === '10.0.0.7:8080', 3000, 'updates to resume after the restart');
  assert.equal(await metricValue(registry, 'bpfmesh_destination_streams', { state: 'streaming' }), 1);

  t.write(yaml(TWO));
  await eventually(() => set.endpoints.length === 2, 1000, 'a reload after the reconnect');
});

test('the reconnect schedule backs off with jitter', async () => {
  const gone = resolver({ config: { addr: { host: '127.0.0.1', port: 1 }, loopback: true, name: undefined, contextToken: '' }, backoff: { minMs: 20, maxMs: 160, jitter: 0.5 } });
  gone.r.resolve(target, WEB);
  await new Promise((res) => setTimeout(res, 1000));
  // 20,40,80,160,160... halved at worst: ≥ 10+20+40+80+80+80+... in 1 s → at most ~12 tries; a tight loop would make hundreds.
  const n = await metricValue(gone.registry, 'bpfmesh_destination_reconnects_total', { code: 'UNAVAILABLE' });
  assert.ok(n >= 3 && n <= 14, `reconnects in 1 s: ${n}`);
  assert.deepEqual(gone.r.resolve(target, WEB), { kind: 'fallback' }, 'no answer yet: fallback');
});

test('InvalidArgument is not retried in a tight loop; the lookup falls back', async () => {
  const before = await metricValue(t.registry, 'bpfmesh_controlplane_requests_total', { rpc: 'Get', result: 'INVALID_ARGUMENT' });
  const { r, registry } = resolver({ backoff: { minMs: 10, maxMs: 3000 } });
  // Not a DNS name: the server refuses the path.
  assert.deepEqual(await r.whenResolved(target, 'bad_name.default:8080', 2000), { kind: 'fallback' });
  await new Promise((res) => setTimeout(res, 1000));
  const refused = (await metricValue(t.registry, 'bpfmesh_controlplane_requests_total', { rpc: 'Get', result: 'INVALID_ARGUMENT' })) - before;
  assert.equal(refused, 1, 'retried only after the slow delay (≥ 1.5 s here)');
  assert.equal(await metricValue(registry, 'bpfmesh_destination_reconnects_total', { code: 'INVALID_ARGUMENT' }), 1);
});

test('lookups unused for the idle timeout are dropped and their streams cancelled', async () => {
  let now = 1000;
  const { r } = resolver({ idleMs: 200, now: () => now });
  for (const path of [WEB, 'a.default.svc.cluster.local:80', 'b.default.svc.cluster.local:80']) await r.whenResolved(target, path, 2000);
  assert.equal(r.size, 3);
  await eventually(async () => (await metricValue(t.registry, 'bpfmesh_controlplane_streams')) >= 3, 1000, 'server streams');
  now += 150;
  r.resolve(target, WEB); // keeps this one alive
  now += 100;
  await eventually(() => r.size === 1, 1000, 'two idle lookups dropped');
  now += 250;
  await eventually(() => r.size === 0, 1000, 'the last one dropped');
  await eventually(async () => (await metricValue(t.registry, 'bpfmesh_controlplane_streams')) === 0, 2000, 'the server to see the streams cancelled');
  // A new lookup of a dropped key opens a new stream.
  assert.equal((await r.whenResolved(target, WEB, 2000)).kind, 'endpoints');
  assert.equal(r.size, 1);
});

test('off loopback without TLS credentials: BPFMESH_E_CONTROL_TLS_UNSUPPORTED', () => {
  assert.throws(
    () =>
      new DestinationResolver({
        config: { addr: { host: 'linkerd-dst-headless.linkerd.svc.cluster.local.', port: 8086 }, loopback: false, name: 'linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local', contextToken: '' },
        registry: new Registry(),
        log: silent,
      }),
    { code: 'BPFMESH_E_CONTROL_TLS_UNSUPPORTED' },
  );
});
