import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff } from '../../src/control/backoff.js';

test('doubles from min to max; jitter draws below the schedule', () => {
  const hi = new Backoff({ minMs: 100, maxMs: 1000, jitter: 0.5, random: () => 0 });
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => hi.next()), [100, 200, 400, 800, 1000, 1000]);
  const lo = new Backoff({ minMs: 100, maxMs: 1000, jitter: 0.5, random: () => 0.999999 });
  assert.deepEqual([1, 2, 3, 4, 5].map(() => lo.next()), [50, 100, 200, 400, 500]);
});

test('Linkerd-like defaults: 100 ms to 10 s, never above the cap, never below half the schedule', () => {
  const b = new Backoff();
  assert.equal(b.minMs, 100);
  assert.equal(b.maxMs, 10_000);
  for (let i = 0; i < 100; i++) {
    const base = Math.min(10_000, 100 * 2 ** i);
    const d = b.next();
    assert.ok(d <= base && d >= base / 2, `attempt ${i}: ${d}`);
  }
});

test('reset starts over; slow() is at the cap; full jitter is allowed', () => {
  const b = new Backoff({ minMs: 10, maxMs: 80, jitter: 0, random: () => 0.5 });
  b.next();
  b.next();
  assert.equal(b.attempt, 2);
  b.reset();
  assert.equal(b.next(), 10);
  assert.equal(b.slow(), 80);
  const full = new Backoff({ minMs: 100, maxMs: 100, jitter: 1, random: () => 0.25 });
  assert.equal(full.next(), 75);
  assert.equal(new Backoff({ jitter: 7, random: () => 1 }).next(), 0, 'jitter clamped to 1');
});
