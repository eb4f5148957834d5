import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { createProxyMetrics, registerKernelCounters, RESPONSE_LATENCY_BUCKETS } from '../../src/proxy/metrics.js';
import type { ConnLabels } from '../../src/proxy/types.js';

/** The sample lines of one metric family (no HELP/TYPE), in output order. */
async function samples(registry: Registry, family: string): Promise<string[]> {
  const text = await registry.metrics();
  return text.split('\n').filter((l) => !l.startsWith('#') && (l.startsWith(`${family} `) || l.startsWith(`${family}{`)));
}

const out: ConnLabels = { direction: 'outbound', target_addr: '10.0.3.7:8080', tls: 'true', authority: 'web.ns.svc.cluster.local:8080' };
const inb: ConnLabels = { direction: 'inbound', target_addr: '10.0.3.8:80', tls: 'no_identity' };

test('TCP metrics: opens, bytes and closes per peer, with errno', async () => {
  const registry = new Registry();
  const m = createProxyMetrics(registry, { processMetrics: false });
  m.tcpOpen(out, 'src');
  m.tcpOpen(out, 'dst');
  m.tcpRead(out, 'src', 100);
  m.tcpWrite(out, 'dst', 100);
  m.tcpRead(out, 'dst', 7);
  m.tcpWrite(out, 'src', 7);
  m.tcpRead({ ...out }, 'src', 1); // an equal labels object lands in the same series
  m.tcpClose(out, 'dst', 'ECONNRESET');
  m.tcpOpen(inb, 'src');
  m.tcpClose(inb, 'src');

  const src = 'direction="outbound",peer="src",target_addr="10.0.3.7:8080",tls="true"';
  const dst = 'direction="outbound",peer="dst",target_addr="10.0.3.7:8080",tls="true"';
  const isrc = 'direction="inbound",peer="src",target_addr="10.0.3.8:80",tls="no_identity"';
  assert.deepEqual(await samples(registry, 'tcp_open_total'), [`tcp_open_total{${src}} 1`, `tcp_open_total{${dst}} 1`, `tcp_open_total{${isrc}} 1`]);
  assert.deepEqual(await samples(registry, 'tcp_open_connections'), [
    `tcp_open_connections{${src}} 1`,
    `tcp_open_connections{${dst}} 0`,
    `tcp_open_connections{${isrc}} 0`,
  ]);
  assert.deepEqual(await samples(registry, 'tcp_read_bytes_total'), [
    `tcp_read_bytes_total{${src}} 101`,
    `tcp_read_bytes_total{${dst}} 7`,
    `tcp_read_bytes_total{${isrc}} 0`,
  ]);
  assert.deepEqual(await samples(registry, 'tcp_write_bytes_total'), [
    `tcp_write_bytes_total{${src}} 7`,
    `tcp_write_bytes_total{${dst}} 100`,
    `tcp_write_bytes_total{${isrc}} 0`,
  ]);
  assert.deepEqual(await samples(registry, 'tcp_close_total'), [
    `tcp_close_total{${dst},errno="ECONNRESET"} 1`,
    `tcp_close_total{${isrc},errno=""} 1`,
  ]);
  // Counts keep growing across scrapes (the cells are copied, not drained).
  m.tcpRead(out, 'src', 9);
  assert.deepEqual((await samples(registry, 'tcp_read_bytes_total'))[0], `tcp_read_bytes_total{${src}} 110`);
  const text = await registry.metrics();
  assert.match(text, /# TYPE tcp_open_connections gauge/);
  assert.match(text, /# TYPE tcp_read_bytes_total counter/);
});

test('a labels object changed in place moves to its new series', async () => {
  const registry = new Registry();
  const m = createProxyMetrics(registry, { processMetrics: false });
  const l: ConnLabels = { direction: 'outbound', target_addr: '10.0.0.1:80', tls: 'no_identity' };
  m.request(l);
  l.authority = 'a.example:80';
  m.request(l);
  assert.deepEqual(await samples(registry, 'request_total'), [
    'request_total{direction="outbound",authority="",target_addr="10.0.0.1:80",tls="no_identity"} 1',
    'request_total{direction="outbound",authority="a.example:80",target_addr="10.0.0.1:80",tls="no_identity"} 1',
  ]);
});

test('HTTP metrics: requests, responses by status and class, latency histogram', async () => {
  const registry = new Registry();
  const m = createProxyMetrics(registry, { processMetrics: false });
  m.request(out);
  m.request(out);
  m.request(out);
  m.response(out, { statusCode: 200, classification: 'success', latencyMs: 3 });
  m.response(out, { statusCode: 200, classification: 'success', latencyMs: 150 });
  m.response(out, { statusCode: 200, classification: 'failure', grpcStatus: 14, latencyMs: 60_000 });
  m.response(inb, { statusCode: 504, classification: 'failure', error: 'failfast', latencyMs: 1 });

  const base = 'direction="outbound",authority="web.ns.svc.cluster.local:8080",target_addr="10.0.3.7:8080",tls="true"';
  const ibase = 'direction="inbound",authority="",target_addr="10.0.3.8:80",tls="no_identity"';
  assert.deepEqual(await samples(registry, 'request_total'), [`request_total{${base}} 3`]);
  assert.deepEqual(await samples(registry, 'response_total'), [
    `response_total{${base},status_code="200",classification="success",grpc_status="",error=""} 2`,
    `response_total{${base},status_code="200",classification="failure",grpc_status="14",error=""} 1`,
    `response_total{${ibase},status_code="504",classification="failure",grpc_status="",error="failfast"} 1`,
  ]);
  const hist = await samples(registry, 'response_latency_ms_bucket');
  const ours = hist.filter((l) => l.includes('direction="outbound"'));
  assert.equal(ours.length, RESPONSE_LATENCY_BUCKETS.length + 1, 'one line per bucket and +Inf');
  const bucket = (le: string): string | undefined => ours.find((l) => l.includes(`le="${le}"`));
  assert.equal(bucket('2'), `response_latency_ms_bucket{le="2",${base},status_code="200"} 0`);
  assert.equal(bucket('3'), `response_latency_ms_bucket{le="3",${base},status_code="200"} 1`);
  assert.equal(bucket('100'), `response_latency_ms_bucket{le="100",${base},status_code="200"} 1`);
  assert.equal(bucket('200'), `response_latency_ms_bucket{le="200",${base},status_code="200"} 2`);
  assert.equal(bucket('50000'), `response_latency_ms_bucket{le="50000",${base},status_code="200"} 2`);
  assert.equal(bucket('+Inf'), `response_latency_ms_bucket{le="+Inf",${base},status_code="200"} 3`);
  assert.deepEqual(await samples(registry, 'response_latency_ms_count'), [
    `response_latency_ms_count{${base},status_code="200"} 3`,
    `response_latency_ms_count{${ibase},status_code="504"} 1`,
  ]);
  assert.deepEqual((await samples(registry, 'response_latency_ms_sum'))[0], `response_latency_ms_sum{${base},status_code="200"} 60153`);
});

test('process metrics are on the injected registry only', async () => {
  const registry = new Registry();
  createProxyMetrics(registry);
  const text = await registry.metrics();
  for (const name of ['process_start_time_seconds', 'process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_open_fds']) {
    assert.match(text, new RegExp(`^${name} \\d`, 'm'), name);
  }
  const { register: globalRegistry } = await import('prom-client');
  assert.equal(globalRegistry.getSingleMetric('request_total'), undefined);
  assert.equal((await globalRegistry.metrics()).includes('process_start_time_seconds'), false);
});

test('kernel counters are read once per scrape; null gives no samples', async () => {
  const registry = new Registry();
  let reads = 0;
  let values: Record<string, bigint> | null = { out_redirected: 5n, in_steered: 12n, unknown_counter: 1n };
  registerKernelCounters(registry, () => {
    reads++;
    return values;
  }, ['out_redirected', 'in_steered', 'bind_denied']);
  const text = await registry.metrics();
  assert.equal(reads, 1);
  assert.match(text, /# TYPE bpfmesh_out_redirected_total counter/);
  assert.deepEqual(await samples(registry, 'bpfmesh_out_redirected_total'), ['bpfmesh_out_redirected_total 5']);
  assert.deepEqual(await samples(registry, 'bpfmesh_in_steered_total'), ['bpfmesh_in_steered_total 12']);
  assert.deepEqual(await samples(registry, 'bpfmesh_bind_denied_total'), [], 'a name the read does not return has no sample');
  assert.equal(text.includes('unknown_counter'), false);
  values = { out_redirected: 9n, in_steered: 12n };
  assert.deepEqual(await samples(registry, 'bpfmesh_out_redirected_total'), ['bpfmesh_out_redirected_total 9'], 'values are read at scrape time');
  values = null;
  assert.deepEqual(await samples(registry, 'bpfmesh_out_redirected_total'), []);
  assert.deepEqual(await samples(registry, 'bpfmesh_in_steered_total'), []);
  const broken = new Registry();
  registerKernelCounters(broken, () => {
    throw new Error('pins gone');
  }, ['out_redirected']);
  assert.deepEqual(await samples(broken, 'bpfmesh_out_redirected_total'), [], 'a failing read is a scrape without samples');
});

test('the default kernel counter names are the BPF enum', async () => {
  const registry = new Registry();
  registerKernelCounters(registry, () => ({ sockpath_redirected: 3n }));
  assert.deepEqual(await samples(registry, 'bpfmesh_sockpath_redirected_total'), ['bpfmesh_sockpath_redirected_total 3']);
  assert.match(await registry.metrics(), /# TYPE bpfmesh_listener_registered_total counter/);
});
