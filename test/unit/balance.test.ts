import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PeakEwma, peakEwmaCost } from '../../src/proxy/balance/peak-ewma.js';
import { P2cBalancer } from '../../src/proxy/balance/p2c.js';
import { StaticEndpointSet } from '../../src/control/static-set.js';
import { formatAddr, type Endpoint } from '../../src/proxy/types.js';

/** mulberry32: small, seedable, good enough for load-balancing statistics. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ep = (port: number, weight = 10_000): Endpoint => ({ addr: { host: '10.0.0.1', port }, weight, labels: {} });

class Clock {
  t = 1_000;
  now = (): number => this.t;
}

/**
 * Closed-loop load: `concurrency` requests in flight; each takes latency(ep)
 * on the fake clock; when one completes it is observed and another picked.
 * Returns picks per endpoint port.
 */
function simulate(b: P2cBalancer, clock: Clock, picks: number, concurrency: number, latency: (e: Endpoint) => number): Map<number, number> {
  const counts = new Map<number, number>();
  const inflight: Array<{ at: number; e: Endpoint; started: number }> = [];
  const launch = (): void => {
    const e = b.pick();
    assert.ok(e);
    counts.set(e.addr.port, (counts.get(e.addr.port) ?? 0) + 1);
    b.start(e);
    inflight.push({ at: clock.t + latency(e), e, started: clock.t });
  };
  let launched = 0;
  for (; launched < concurrency; launched++) launch();
  while (inflight.length > 0) {
    let k = 0;
    for (let i = 1; i < inflight.length; i++) if (inflight[i]!.at < inflight[k]!.at) k = i;
    const done = inflight.splice(k, 1)[0]!;
    clock.t = done.at;
    b.end(done.e);
    b.observe(done.e, done.at - done.started);
    if (launched++ < picks) launch();
  }
  return counts;
}

test('peak-EWMA: slower samples replace the estimate, faster ones blend in over the decay', () => {
  const e = new PeakEwma(0, 30, 10_000);
  assert.equal(e.estimate(0), 30);
  e.observe(200, 0);
  assert.equal(e.estimate(0), 200, 'a peak replaces at once');
  e.observe(10, 0);
  assert.equal(e.estimate(0), 200, 'no time passed: a faster sample has no weight yet');
  e.observe(10, 10_000); // one decay period: exp(-1) of the old value is left
  const expected = 200 * Math.exp(-1) + 10 * (1 - Math.exp(-1));
  assert.ok(Math.abs(e.estimate(10_000) - expected) < 1e-9, `${e.estimate(10_000)} vs ${expected}`);
  // Without samples the estimate decays toward zero.
  assert.ok(Math.abs(e.estimate(30_000) - expected * Math.exp(-2)) < 1e-9);
  assert.equal(peakEwmaCost(10, 3, 1), 40, 'estimate x (pending + 1)');
  assert.equal(peakEwmaCost(10, 3, 2), 20, 'divided by relative weight');
});

test('edge cases: no endpoint -> null, one endpoint -> it', () => {
  const set = new StaticEndpointSet();
  const b = new P2cBalancer(set, { rng: seeded(1) });
  assert.equal(b.pick(), null);
  set.replace([ep(1)]);
  for (let i = 0; i < 5; i++) assert.equal(b.pick()?.addr.port, 1);
  set.replace([ep(1, 0), ep(2)]);
  for (let i = 0; i < 50; i++) assert.equal(b.pick()?.addr.port, 2, 'weight 0 is never drawn');
  set.replace([ep(3, 0), ep(4, 0)]);
  const seen = new Set<number>();
  for (let i = 0; i < 50; i++) seen.add(b.pick()!.addr.port);
  assert.deepEqual([...seen].sort(), [3, 4], 'all weights 0: all equal');
  b.close();
  assert.equal(set.listenerCount, 0);
});

test('a slow endpoint gets far less traffic than fast ones', () => {
  const clock = new Clock();
  const set = new StaticEndpointSet([ep(1), ep(2), ep(3), ep(4)]);
  const b = new P2cBalancer(set, { now: clock.now, rng: seeded(42) });
  const counts = simulate(b, clock, 10_000, 16, (e) => (e.addr.port === 4 ? 500 : 10));
  const slow = counts.get(4) ?? 0;
  assert.ok(slow < 200, `slow endpoint got ${slow} of 10000 (a uniform spread gives 2500)`);
  for (const p of [1, 2, 3]) assert.ok((counts.get(p) ?? 0) > 3000, `fast ${p}: ${counts.get(p)}`);
});

test('with equal latencies traffic follows the weights', () => {
  const clock = new Clock();
  const set = new StaticEndpointSet([ep(1, 10_000), ep(2, 20_000), ep(3, 40_000)]);
  const b = new P2cBalancer(set, { now: clock.now, rng: seeded(7) });
  const n = 20_000;
  const counts = simulate(b, clock, n, 32, () => 20);
  const share = (p: number): number => (counts.get(p) ?? 0) / (n + 32);
  const want: Record<number, number> = { 1: 1 / 7, 2: 2 / 7, 3: 4 / 7 };
  for (const p of [1, 2, 3]) {
    assert.ok(Math.abs(share(p) - want[p]!) < 0.03, `port ${p}: share ${share(p).toFixed(3)}, want ${want[p]!.toFixed(3)}`);
  }
});

test('set changes apply live; endpoints that stay keep their estimates', () => {
  const clock = new Clock();
  const a = ep(1);
  const set = new StaticEndpointSet([a, ep(2), ep(3)]);
  const b = new P2cBalancer(set, { now: clock.now, rng: seeded(3) });
  b.observe(a, 900);
  b.start(a);
  set.replace([{ ...a, labels: { pod: 'x' } }, ep(2)]); // 3 removed; 1 stays, as a new object
  const kept = b.stats().find((s) => s.addr === formatAddr(a.addr));
  assert.equal(kept?.pending, 1);
  assert.equal(kept?.rttMs, 900);
  for (let i = 0; i < 1000; i++) {
    const e = b.pick();
    assert.notEqual(e?.addr.port, 3, 'a removed endpoint is never picked');
    assert.notEqual(e?.addr.port, 1, 'the slow one with work in flight loses every draw against a fresh one');
  }
  b.end(a);
  set.replace([...set.endpoints, ep(5)]);
  let added = 0;
  for (let i = 0; i < 1000; i++) if (b.pick()?.addr.port === 5) added++;
  assert.ok(added > 300, `the added endpoint got ${added} of 1000`);
  // Work reported for an endpoint no longer in the set is ignored.
  b.start(ep(3));
  b.observe(ep(3), 5);
  b.end(ep(3));
  assert.deepEqual(b.stats().map((s) => s.addr), ['10.0.0.1:1', '10.0.0.1:2', '10.0.0.1:5']);
});

test('decay brings a formerly slow endpoint back', () => {
  const clock = new Clock();
  const set = new StaticEndpointSet([ep(1), ep(2), ep(3), ep(4)]);
  const b = new P2cBalancer(set, { now: clock.now, rng: seeded(11) });
  let slow = true;
  const before = simulate(b, clock, 5_000, 16, (e) => (e.addr.port === 4 && slow ? 1_000 : 10));
  assert.ok((before.get(4) ?? 0) < 150, `while slow: ${before.get(4)}`);
  // It recovers; first a quiet minute, in which its estimate decays.
  slow = false;
  clock.t += 60_000;
  const after = simulate(b, clock, 10_000, 16, () => 10);
  const share = (after.get(4) ?? 0) / 10_016;
  assert.ok(share > 0.18, `after recovery it gets ${(share * 100).toFixed(1)}% (fair: 25%)`);
});

test('picks are deterministic for a given seed', () => {
  const run = (): number[] => {
    const b = new P2cBalancer(new StaticEndpointSet([ep(1), ep(2), ep(3), ep(4, 5_000)]), { now: () => 0, rng: seeded(99) });
    return Array.from({ length: 50 }, () => b.pick()!.addr.port);
  };
  assert.deepEqual(run(), run());
});
