// Endpoint labels on the proxy's metrics: client_id / server_id /
// no_tls_reason, the endpoint's metric_labels as dst_*, and the bounds that
// keep their cardinality finite (the authorization metrics' client_id too).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { endpointLabeler } from '../../src/proxy/endpoint-labels.js';
import { createProxyMetrics, DST_LABEL_LIMITS, dstLabels } from '../../src/proxy/metrics.js';
import type { ConnLabels, Endpoint } from '../../src/proxy/types.js';
import { MAX_CLIENT_IDS, PolicyMetrics } from '../../src/policy/metrics.js';
import { defaultServerPolicy } from '../../src/policy/model.js';
import { defaultRoute } from '../../src/policy/authorize.js';

async function lines(registry: Registry, family: string): Promise<string[]> {
  return (await registry.metrics()).split('\n').filter((l) => l.startsWith(`${family}{`));
}

const base: ConnLabels = { direction: 'outbound', target_addr: '10.0.0.2:8080', tls: 'no_identity', no_tls_reason: 'loopback' };
const meshed: Endpoint = { addr: { host: '10.0.0.2', port: 8080 }, weight: 1, identity: 'web.ns.id', labels: { pod: 'web-0', 'pod-template-hash': 'abc' } };
const plain: Endpoint = { addr: { host: '10.0.0.3', port: 8080 }, weight: 1, labels: {} };

test('dstLabels: dst_ prefix, valid names, bounded keys and values, cached per object', () => {
  assert.deepEqual(dstLabels({ pod: 'web-0', 'app.kubernetes.io/name': 'web' }), { dst_app_kubernetes_io_name: 'web', dst_pod: 'web-0' });
  assert.equal(dstLabels({}), undefined);
  const many: Record<string, string> = {};
  for (let i = 0; i < 40; i++) many[`k${String(i).padStart(2, '0')}`] = 'v'.repeat(500);
  const d = dstLabels(many)!;
  assert.equal(Object.keys(d).length, DST_LABEL_LIMITS.keys);
  assert.equal(d['dst_k00']!.length, DST_LABEL_LIMITS.valueLength);
  assert.equal(dstLabels(many), d, 'cached');
  assert.ok(Object.keys(dstLabels({ ['x'.repeat(300)]: 'v' })!)[0]!.length <= 4 + DST_LABEL_LIMITS.nameLength);
});

test('outbound: server_id and dst_* on HTTP and TCP metrics of a meshed endpoint; no_tls_reason for an unmeshed one', async () => {
  const registry = new Registry();
  const m = createProxyMetrics(registry, { processMetrics: false });
  const label = endpointLabeler({ mtls: true });
  const l = label(meshed, base);
  assert.equal(label(meshed, base), l, 'one object per (connection, endpoint)');
  m.tcpOpen(base, 'src');
  m.tcpOpen(l, 'dst');
  m.request(l);
  m.response(l, { statusCode: 200, classification: 'success', latencyMs: 4 });
  m.tcpClose(l, 'dst');
  const pl = label(plain, base);
  m.request(pl);

  const ep = 'server_id="web.ns.id",dst_pod="web-0",dst_pod_template_hash="abc"';
  assert.deepEqual(await lines(registry, 'request_total'), [
    `request_total{direction="outbound",authority="",target_addr="10.0.0.2:8080",tls="true",${ep}} 1`,
    'request_total{direction="outbound",authority="",target_addr="10.0.0.2:8080",tls="no_identity",no_tls_reason="not_provided_by_service_discovery"} 1',
  ]);
  assert.deepEqual(await lines(registry, 'response_total'), [
    `response_total{direction="outbound",authority="",target_addr="10.0.0.2:8080",tls="true",${ep},status_code="200",classification="success",grpc_status="",error=""} 1`,
  ]);
  assert.ok((await lines(registry, 'response_latency_ms_bucket')).includes(`response_latency_ms_bucket{le="5",direction="outbound",authority="",target_addr="10.0.0.2:8080",tls="true",${ep},status_code="200"} 1`));
  assert.deepEqual(await lines(registry, 'tcp_open_total'), [
    'tcp_open_total{direction="outbound",peer="src",target_addr="10.0.0.2:8080",tls="no_identity",no_tls_reason="loopback"} 1',
    `tcp_open_total{direction="outbound",peer="dst",target_addr="10.0.0.2:8080",tls="true",${ep}} 1`,
  ]);
  assert.deepEqual(await lines(registry, 'tcp_close_total'), [`tcp_close_total{direction="outbound",peer="dst",target_addr="10.0.0.2:8080",tls="true",${ep},errno=""} 1`]);
});

test('inbound: client_id with tls="true"; identity disabled: no TLS detail, dst_* still', async () => {
  const registry = new Registry();
  const m = createProxyMetrics(registry, { processMetrics: false });
  m.request({ direction: 'inbound', target_addr: '10.0.0.2:8080', tls: 'true', client_id: 'a.ns.id' });
  m.request({ direction: 'inbound', target_addr: '10.0.0.2:8080', tls: 'no_identity', no_tls_reason: 'no_tls_from_remote' });
  m.request(endpointLabeler({ mtls: false })(meshed, { direction: 'outbound', target_addr: '10.0.0.2:8080', tls: 'no_identity' }));
  assert.deepEqual(await lines(registry, 'request_total'), [
    'request_total{direction="inbound",authority="",target_addr="10.0.0.2:8080",tls="true",client_id="a.ns.id"} 1',
    'request_total{direction="inbound",authority="",target_addr="10.0.0.2:8080",tls="no_identity",no_tls_reason="no_tls_from_remote"} 1',
    'request_total{direction="outbound",authority="",target_addr="10.0.0.2:8080",tls="no_identity",dst_pod="web-0",dst_pod_template_hash="abc"} 1',
  ]);
});

test('cardinality: past maxLabelSets distinct sets, traffic is counted without them, and the drop is counted', async () => {
  const registry = new Registry();
  const m = createProxyMetrics(registry, { processMetrics: false, maxLabelSets: 3 });
  const label = endpointLabeler({ mtls: true });
  for (let i = 0; i < 10; i++) m.request(label({ ...meshed, labels: { pod: `web-${i}` } }, base));
  assert.equal(m.labelSets, 3);
  const out = await lines(registry, 'request_total');
  assert.equal(out.length, 4, out.join('\n'));
  assert.ok(out.includes('request_total{direction="outbound",authority="",target_addr="10.0.0.2:8080",tls="true"} 7'));
  assert.match(await registry.metrics(), /^bpfmesh_metric_label_sets_dropped_total 7$/m);
});

test('authorization metrics: client_id is bounded; past MAX_CLIENT_IDS identities each count lands without it and is counted as dropped', async () => {
  const registry = new Registry();
  const m = new PolicyMetrics(registry);
  const server = defaultServerPolicy('all-unauthenticated', []);
  const route = defaultRoute(server);
  const authz = server.authorizations[0]!;
  const subject = (i: number) => ({ targetAddr: '10.0.0.5:8080', targetIp: '10.0.0.5', targetPort: 8080, tls: true, clientId: `sa${i}.ns.serviceaccount.identity.linkerd.cluster.local` });
  for (let i = 0; i < MAX_CLIENT_IDS + 10; i++) m.httpAllow(subject(i), server, route, authz);
  const kept = m.httpAllowSeries(subject(0), server, route, authz);
  m.count(kept);
  const over = m.httpAllowSeries(subject(MAX_CLIENT_IDS + 3), server, route, authz);
  m.count(over);
  m.count(over);
  const out = await lines(registry, 'inbound_http_authz_allow_total');
  assert.equal(out.length, MAX_CLIENT_IDS + 1, 'one series per kept identity, one without client_id');
  assert.ok(out.some((l) => l.includes('client_id="sa0.ns.') && l.endsWith(' 2')), 'a kept series counts each request');
  assert.ok(out.some((l) => !l.includes('client_id=') && l.endsWith(' 12')), 'past the bound: counted without client_id');
  assert.match(await registry.metrics(), /^bpfmesh_policy_label_sets_dropped_total 12$/m);
});
