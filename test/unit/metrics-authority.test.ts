// The authority label comes from the client (Host, :authority), so its
// values are capped, idle ones evicted, and what is left out is counted
// (issue #11 defect 7).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { Registry } from 'prom-client';
import { createProxyMetrics } from '../../src/proxy/metrics.js';
import { exchange, sampleOf, startChain, type Chain } from '../helpers/proxy-chain.js';

let chain: Chain;
before(async () => (chain = await startChain({ BPFMESH_PROXY_METRICS_MAX_AUTHORITIES: '50' })));
after(() => chain.close());

const seriesOf = (text: string, name: string): string[] => text.split('\n').filter((l) => l.startsWith(`${name}{`));
const authorities = (text: string): Set<string> => new Set(seriesOf(text, 'request_total').map((l) => /authority="([^"]*)"/.exec(l)![1]!));

test('HTTP/1 requests carry their Host as the authority label', async () => {
  await exchange(chain.inboundPort, [Buffer.from('GET / HTTP/1.1\r\nHost: web.ns.svc:8080\r\n\r\n')], { untilMs: 500 });
  assert.ok(authorities(await chain.metrics()).has('web.ns.svc:8080'));
});

test('2000 distinct authorities over HTTP/1 and HTTP/2: at most 50 values, the rest counted, /metrics bounded', async () => {
  const reqs: Buffer[] = [];
  for (let i = 0; i < 1000; i++) reqs.push(Buffer.from(`GET /${i} HTTP/1.1\r\nHost: h1-${i}.flood\r\n\r\n`));
  await exchange(chain.inboundPort, [Buffer.concat(reqs)], { untilMs: 5000 });
  const session = http2.connect(`http://127.0.0.1:${chain.inboundPort}`);
  try {
    for (let i = 0; i < 1000; i += 100) {
      await Promise.all(
        Array.from({ length: 100 }, (_, k) =>
          new Promise<void>((resolve) => {
            const s = session.request({ ':path': '/', ':authority': `h2-${i + k}.flood` }, { endStream: true });
            s.on('error', () => resolve());
            s.resume();
            s.on('close', () => resolve());
          }),
        ),
      );
    }
  } finally {
    session.close();
  }
  const m = await chain.metrics();
  const values = authorities(m);
  assert.ok(values.size <= 51, `${values.size} authority values (50 + "")`);
  assert.ok(values.has(''), 'the overflow is counted without an authority');
  assert.ok(sampleOf(m, 'bpfmesh_metric_label_values_dropped_total', { label: 'authority' }) >= 1900);
  assert.ok(sampleOf(m, 'request_total', { direction: 'inbound' }) >= 2000, 'every request still counted');
  // Bound: HTTP series per authority value stay a handful, whatever the flood.
  assert.ok(m.length < 400_000, `/metrics is ${m.length} bytes`);
});

test('idle authorities are evicted with their series to make room, and the eviction is counted', async () => {
  let now = 0;
  const registry = new Registry();
  const metrics = createProxyMetrics(registry, { processMetrics: false, maxAuthorities: 2, authorityIdleMs: 1000, now: () => now });
  const base = { direction: 'inbound' as const, target_addr: '10.0.0.1:80', tls: 'no_identity' };
  metrics.request({ ...base, authority: 'a' });
  metrics.request({ ...base, authority: 'b' });
  now = 500;
  metrics.request({ ...base, authority: 'c' }); // full, nothing idle yet: counted without
  now = 2000;
  const keep = { ...base, authority: 'b' };
  metrics.request(keep);
  now = 2100;
  metrics.request({ ...base, authority: 'd' }); // a went idle: evicted for d
  const m = await registry.metrics();
  assert.deepEqual([...authorities(m)].sort(), ['', 'b', 'd']);
  assert.equal(sampleOf(m, 'bpfmesh_metric_label_values_evicted_total', { label: 'authority' }), 1);
  assert.equal(metrics.authorities, 2);
});
