// The pod informer against a failing API server (the fake, failing on
// demand as a real one does): request rates counted at the server over a
// fixed window stay within the documented bound (README "DaemonSet agent":
// one attempt per backoff delay, 200 ms doubling to 30 s, drawn in [1/2, 1]
// of the schedule, so at most 5 retries in the first 3 s), Retry-After is
// honoured, stalled and trickling watches are restarted, and the informer
// recovers once the server does.
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadKubeAccess } from '../../src/kube/config.js';
import { KubeClient, retryAfterMs } from '../../src/kube/client.js';
import { PodInformer, type PodInformerOptions } from '../../src/kube/informer.js';
import { createLogger } from '../../src/log/logger.js';
import { startFakeKube, type FakeKube } from '../helpers/fake-kube.js';

const log = createLogger({ logFormat: 'plain', logLevel: 'silent' });
const WINDOW_MS = 3000;
// Retries land at >= 100, 300, 700, 1500, 3100 ms: 5 in the window, plus the first attempt.
const MAX_ATTEMPTS_IN_WINDOW = 6;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(what: string, pred: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

describe('PodInformer against a failing API server', () => {
  let kube: FakeKube;
  let client: KubeClient;
  let informer: PodInformer | undefined;
  let seq = 0;

  before(async () => {
    kube = await startFakeKube({ bookmarkIntervalMs: 100 });
    client = new KubeClient(loadKubeAccess({ kubeconfig: kube.kubeconfigPath }), { requestTimeoutMs: 500 });
  });
  afterEach(async () => {
    kube.heal();
    await informer?.stop();
    informer = undefined;
  });
  after(async () => {
    client.close();
    await kube.close();
  });

  /** The production backoff and health rule; only the stall timeout is shortened where a test needs it. */
  function start(opts: Partial<PodInformerOptions> = {}): PodInformer {
    informer = new PodInformer(client, { upsert: () => undefined, remove: () => undefined }, { fieldSelector: 'spec.nodeName=n1', log, ...opts });
    informer.start();
    return informer;
  }

  /** After the server heals, a new pod reaches the informer. */
  async function recovers(inf: PodInformer): Promise<void> {
    kube.heal();
    const name = `after-${++seq}`;
    kube.setPod({ metadata: { name, namespace: 'ns1' }, spec: { nodeName: 'n1' } });
    await until(`${name} after recovery`, () => [...inf.pods.values()].some((p) => p.metadata.name === name), 10_000);
  }

  test('watch ERROR events with code 500 back off (no relist storm) and the watch recovers', async () => {
    const inf = start();
    await inf.waitForSync();
    kube.failWith({ kind: 'watch-error', code: 500 }, { on: 'watch' });
    kube.dropWatches();
    const from = kube.requests.length;
    await sleep(WINDOW_MS);
    const watches = kube.countRequests(from, 'watch');
    const lists = kube.countRequests(from, 'list');
    assert.ok(watches >= 2 && watches <= MAX_ATTEMPTS_IN_WINDOW, `watches in ${WINDOW_MS} ms: ${watches}`);
    assert.equal(lists, 0, 'a 500 is not an expiry: resume, no relist');
    await recovers(inf);
  });

  test('a watch that always expires (ERROR 410) relists with backoff, not in a loop', async () => {
    const from = kube.requests.length;
    kube.failWith({ kind: 'watch-error', code: 410 }, { on: 'watch' });
    const inf = start();
    await sleep(WINDOW_MS);
    const lists = kube.countRequests(from, 'list');
    const watches = kube.countRequests(from, 'watch');
    assert.ok(lists >= 2 && lists <= MAX_ATTEMPTS_IN_WINDOW, `lists in ${WINDOW_MS} ms: ${lists}`);
    assert.ok(watches <= MAX_ATTEMPTS_IN_WINDOW, `watches in ${WINDOW_MS} ms: ${watches}`);
    assert.ok(inf.stats.expired >= 2);
    await recovers(inf);
  });

  test('HTTP 429 Retry-After on a LIST and an ERROR 429 with retryAfterSeconds on a watch are honoured', async () => {
    kube.failWith({ kind: 'status', status: 429, retryAfter: '2' }, { on: 'list', count: 1 });
    // Requests are taken by position, not by time: their time stamps have 1 ms steps.
    const first = kube.requests.length;
    const inf = start();
    await inf.waitForSync();
    const lists = kube.requests.slice(first).filter((r) => !r.watch);
    assert.equal(lists[0]?.status, 429);
    assert.ok(lists[1]!.at - lists[0].at >= 2000, `second list ${lists[1]!.at - lists[0].at} ms after the 429`);
    assert.equal(inf.stats.throttled, 1);

    // The successful LIST can land in the same millisecond as the line after waitForSync.
    const since = kube.requests.length;
    kube.failWith({ kind: 'watch-error', code: 429, retryAfterSeconds: 1 }, { on: 'watch', count: 1 });
    kube.dropWatches();
    await until('a watch after the throttled one', () => kube.requests.slice(since).filter((r) => r.watch).length >= 2);
    const watches = kube.requests.slice(since).filter((r) => r.watch);
    assert.equal(watches[0]?.fault, 'watch-error');
    assert.ok(watches[1]!.at - watches[0].at >= 1000, `next watch ${watches[1]!.at - watches[0].at} ms after ERROR 429`);
    assert.deepEqual(kube.requests.slice(since).filter((r) => !r.watch), [], 'a 429 is not an expiry: no LIST after it');
    await recovers(inf);
  });

  test('LIST failures: a trickled answer hits the request deadline; 5xx and resets on LIST are bounded', async () => {
    kube.failWith({ kind: 'trickle', intervalMs: 50 }, { on: 'list', count: 1 });
    const t = Date.now();
    await assert.rejects(client.listPods({}), /no complete answer in 500 ms/);
    assert.ok(Date.now() - t < 1500, 'the deadline counts the whole answer, not idle time');

    kube.failWith({ kind: 'status', status: 503 }, { on: 'list' });
    const from = kube.requests.length;
    const inf = start();
    await sleep(WINDOW_MS / 2);
    kube.failWith({ kind: 'reset' }, { on: 'list' });
    await sleep(WINDOW_MS / 2);
    const lists = kube.countRequests(from, 'list');
    assert.ok(lists >= 2 && lists <= MAX_ATTEMPTS_IN_WINDOW, `lists in ${WINDOW_MS} ms: ${lists}`);
    assert.ok(kube.requests.slice(from).some((r) => r.fault === 'reset'));
    assert.equal(inf.hasSynced, false);
    await recovers(inf);
  });

  test('watches that end early after a bookmark (reset, or a clean end) back off: a bookmark is no proof of health', async () => {
    const inf = start();
    await inf.waitForSync();
    kube.failWith({ kind: 'reset' }, { on: 'watch' });
    kube.dropWatches();
    const from = kube.requests.length;
    await sleep(WINDOW_MS);
    const resets = kube.countRequests(from, 'watch');
    assert.ok(resets >= 2 && resets <= MAX_ATTEMPTS_IN_WINDOW, `watches in ${WINDOW_MS} ms: ${resets}`);
    assert.ok(inf.stats.errors >= 2);
    await recovers(inf);
    await inf.stop();

    const inf2 = start();
    await inf2.waitForSync();
    kube.failWith({ kind: 'early-end' }, { on: 'watch' });
    kube.dropWatches();
    const from2 = kube.requests.length;
    await sleep(WINDOW_MS);
    const ends = kube.countRequests(from2, 'watch');
    assert.ok(ends >= 2 && ends <= MAX_ATTEMPTS_IN_WINDOW, `watches ending early in ${WINDOW_MS} ms: ${ends}`);
    await recovers(inf2);
  });

  test('a watch that stalls (headers, then no byte) is restarted after the stall timeout', async () => {
    const inf = start({ watchStallMs: 300 });
    await inf.waitForSync();
    kube.failWith({ kind: 'stall' }, { on: 'watch' });
    const t0 = Date.now();
    const from = kube.requests.length;
    kube.dropWatches();
    await until('two stalls', () => inf.stats.stalls >= 2, 3000);
    const stalled = kube.requests.slice(from).filter((r) => r.fault === 'stall');
    assert.ok(stalled[1]!.at - stalled[0]!.at >= 300, 'restarted after the stall timeout, not before');
    await sleep(WINDOW_MS - (Date.now() - t0));
    assert.ok(kube.countRequests(from, 'watch') <= MAX_ATTEMPTS_IN_WINDOW);
    await recovers(inf);
  });

  test('a watch trickling bytes without completing an event counts as stalled', async () => {
    const inf = start({ watchStallMs: 300 });
    await inf.waitForSync();
    kube.failWith({ kind: 'trickle', intervalMs: 20 }, { on: 'watch' });
    kube.dropWatches();
    await until('a stall', () => inf.stats.stalls >= 1, 3000);
    await recovers(inf);
  });

  test('Retry-After as seconds, as an HTTP date, from a Status, capped', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    assert.equal(retryAfterMs('3', undefined, now), 3000);
    assert.equal(retryAfterMs('Thu, 01 Jan 2026 00:00:05 GMT', undefined, now), 5000);
    assert.equal(retryAfterMs(undefined, { details: { retryAfterSeconds: 2 } }, now), 2000);
    assert.equal(retryAfterMs('86400', undefined, now), 600_000);
    assert.equal(retryAfterMs('soon', undefined, now), undefined);
  });
});
