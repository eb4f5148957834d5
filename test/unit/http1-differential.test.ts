// The invariant of issue #11, tested by difference: whatever Node's HTTP
// parser (llhttp, as a real node:http server fed the same bytes) reads as an
// HTTP/1 request, the proxies handle as HTTP (never relayed as opaque TCP),
// no request reaches the app through them that llhttp would not have read
// from the same bytes (no smuggling: what the app gets is a prefix of
// llhttp's requests), and the app never gets an l5d-* field, in a head or in
// trailers, that the inbound proxy did not set (here it sets none). The
// hand-made cases, then seeded variants: BPFMESH_DIFF_CASES (default 3000)
// within BPFMESH_DIFF_SECONDS (default 60); BPFMESH_DIFF_SEED shifts the seeds.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Counter } from 'prom-client';
import { handMade, variant, type Case } from '../helpers/http1-corpus.js';
import { exchange, RecordingApp, startChain, type Chain, type SeenRequest } from '../helpers/proxy-chain.js';

const CASES = Number(process.env['BPFMESH_DIFF_CASES'] ?? 3000);
const SECONDS = Number(process.env['BPFMESH_DIFF_SECONDS'] ?? 60);
const SEED = Number(process.env['BPFMESH_DIFF_SEED'] ?? 1);

let chain: Chain;
const direct = new RecordingApp();
let directPort = 0;
before(async () => {
  chain = await startChain({ LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT: '500ms', LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT: '500ms' });
  directPort = await direct.listen();
});
after(async () => {
  await chain.close();
  await direct.close();
});

async function opaqueCount(direction: string): Promise<number> {
  const m = chain.registry.getSingleMetric('bpfmesh_proxy_protocol_detected_total') as Counter | undefined;
  const v = (await m?.get())?.values ?? [];
  return v.filter((s) => s.labels['direction'] === direction && s.labels['protocol'] === 'opaque').reduce((a, s) => a + s.value, 0);
}

const l5d = (r: SeenRequest): string[] => [...r.rawHeaders, ...r.rawTrailers].filter((_, i) => i % 2 === 0).filter((n) => n.toLowerCase().startsWith('l5d-'));
const key = (r: SeenRequest): string => `${r.method} ${r.url} ${JSON.stringify(r.body)}`;

/** Runs one case; returns what is wrong with it (empty when nothing is). */
async function check(c: Case): Promise<string[]> {
  const problems: string[] = [];
  const d0 = direct.seen.length;
  await exchange(directPort, [c.bytes], { end: true, untilMs: 1000 });
  const byLlhttp = direct.seen.slice(d0).map(key);
  for (const via of ['inbound', 'outbound'] as const) {
    const a0 = chain.app.seen.length;
    const o0 = await opaqueCount(via);
    await exchange(via === 'inbound' ? chain.inboundPort : chain.outboundPort, [c.bytes], { end: true, untilMs: 1000 });
    const got = chain.app.seen.slice(a0);
    const forged = got.flatMap(l5d);
    if (forged.length > 0) problems.push(`${via}: the app got ${forged.join(', ')}`);
    if (byLlhttp.length > 0 && (await opaqueCount(via)) > o0) problems.push(`${via}: llhttp reads ${byLlhttp.length} request(s) but it was relayed as opaque`);
    const keys = got.map(key);
    if (keys.some((k, i) => byLlhttp[i] !== k)) problems.push(`${via}: the app got ${JSON.stringify(keys)}, llhttp reads ${JSON.stringify(byLlhttp)}`);
  }
  return problems.map((p) => `${c.name} ${JSON.stringify(c.bytes.toString('latin1').slice(0, 200))}: ${p}`);
}

test('hand-made hostile inputs: served as HTTP where llhttp reads HTTP, nothing smuggled, no l5d-* at the app', async () => {
  const problems: string[] = [];
  for (const c of handMade()) problems.push(...(await check(c)));
  assert.deepEqual(problems, []);
});

test(`seeded variants (up to ${CASES}, ${SECONDS} s): the same invariant`, async () => {
  const problems: string[] = [];
  const deadline = Date.now() + SECONDS * 1000;
  let n = 0;
  let llhttpReads = 0;
  for (; n < CASES && Date.now() < deadline && problems.length < 20; n++) {
    const c = variant(SEED * 1_000_003 + n);
    const d0 = direct.seen.length;
    problems.push(...(await check(c)));
    if (direct.seen.length > d0) llhttpReads++;
  }
  assert.deepEqual(problems, []);
  // The corpus must exercise both sides of the invariant.
  assert.ok(n >= Math.min(CASES, 200), `only ${n} cases ran`);
  assert.ok(llhttpReads > n / 20 && llhttpReads < n, `llhttp read ${llhttpReads} of ${n}`);
});
