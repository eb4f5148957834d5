// The Kubernetes client and the pod informer against the fake API server
// (a real HTTP server speaking list/watch): get, list, chunked watch events,
// bookmarks, filtered-watch semantics, resume after a drop, relist on 410.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadKubeAccess } from '../../src/kube/config.js';
import { isExpired, KubeClient, type KubePod, type WatchEvent } from '../../src/kube/client.js';
import { PodInformer } from '../../src/kube/informer.js';
import { createLogger } from '../../src/log/logger.js';
import { startFakeKube, type FakeKube } from '../helpers/fake-kube.js';

const log = createLogger({ logFormat: 'plain', logLevel: 'silent' });

async function until(what: string, pred: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const onNode = (name: string, node: string, extra: Partial<KubePod['metadata']> = {}) => ({ metadata: { name, namespace: 'ns1', ...extra }, spec: { nodeName: node } });

describe('KubeClient against the fake API server', () => {
  let kube: FakeKube;
  let client: KubeClient;
  before(async () => {
    kube = await startFakeKube({ bookmarkIntervalMs: 100 });
    client = new KubeClient(loadKubeAccess({ kubeconfig: kube.kubeconfigPath }));
  });
  after(async () => {
    client.close();
    await kube.close();
  });

  test('getPod returns the pod, or null for one that does not exist', async () => {
    const stored = kube.setPod({ metadata: { name: 'web', namespace: 'ns1', annotations: { 'linkerd.io/inject': 'enabled' } }, spec: { nodeName: 'n1' } });
    const pod = await client.getPod('ns1', 'web');
    assert.equal(pod?.metadata.uid, stored.metadata.uid);
    assert.equal(pod?.metadata.annotations?.['linkerd.io/inject'], 'enabled');
    assert.equal(await client.getPod('ns1', 'nope'), null);
  });

  test('listPods filters by spec.nodeName and returns the resourceVersion', async () => {
    kube.setPod(onNode('a', 'n1'));
    kube.setPod(onNode('b', 'n2'));
    const list = await client.listPods({ fieldSelector: 'spec.nodeName=n1' });
    assert.deepEqual(list.items.map((p) => p.metadata.name).sort(), ['a', 'web']);
    assert.equal(list.resourceVersion, String(kube.resourceVersion));
    const labelled = await client.listPods({ fieldSelector: 'spec.nodeName=n1', labelSelector: 'app=x' });
    assert.equal(labelled.items.length, 0);
  });

  test('a bad token is an API error with the status', async () => {
    const bad = new KubeClient({ ...client.access, token: () => 'wrong' });
    await assert.rejects(bad.listPods({}), (err: Error & { status?: number; code?: string }) => err.status === 401 && err.code === 'BPFMESH_E_KUBE_API');
    bad.close();
  });

  test('watchPods streams ADDED, MODIFIED, DELETED (also for a pod that leaves the node) and BOOKMARK', async () => {
    const { resourceVersion } = await client.listPods({ fieldSelector: 'spec.nodeName=n1' });
    const seen: WatchEvent[] = [];
    const ac = new AbortController();
    const done = client.watchPods({ fieldSelector: 'spec.nodeName=n1', resourceVersion, allowWatchBookmarks: true }, (ev) => seen.push(ev), ac.signal);
    kube.setPod(onNode('c', 'n1'));
    kube.setPod({ ...onNode('c', 'n1'), metadata: { name: 'c', namespace: 'ns1', labels: { v: '2' } } });
    kube.setPod(onNode('a', 'n2')); // moves away: DELETED for this watcher
    kube.setPod(onNode('b', 'n1')); // moves here: ADDED
    kube.deletePod('ns1', 'c');
    kube.setPod(onNode('z', 'n3')); // not ours: nothing
    await until('events and a bookmark', () => seen.filter((e) => e.type !== 'BOOKMARK').length >= 5 && seen.some((e) => e.type === 'BOOKMARK'));
    ac.abort();
    await done;
    assert.deepEqual(
      seen.filter((e) => e.type !== 'BOOKMARK').map((e) => `${e.type} ${e.object.metadata.name}`),
      ['ADDED c', 'MODIFIED c', 'DELETED a', 'ADDED b', 'DELETED c'],
    );
    const bm = seen.find((e) => e.type === 'BOOKMARK')!;
    assert.equal(bm.object.metadata.resourceVersion, String(kube.resourceVersion));
  });

  test('a watch from a compacted resourceVersion fails as Expired', async () => {
    const { resourceVersion } = await client.listPods({});
    kube.compact();
    await assert.rejects(
      client.watchPods({ resourceVersion, allowWatchBookmarks: true }, () => undefined),
      (err) => isExpired(err),
    );
    kube.failNext(1, 410);
    await assert.rejects(client.watchPods({ resourceVersion: String(kube.resourceVersion) }, () => undefined), (err) => isExpired(err));
  });
});

describe('PodInformer', () => {
  let kube: FakeKube;
  let client: KubeClient;
  before(async () => {
    kube = await startFakeKube({ bookmarkIntervalMs: 50 });
    client = new KubeClient(loadKubeAccess({ kubeconfig: kube.kubeconfigPath }));
  });
  after(async () => {
    client.close();
    await kube.close();
  });

  test('lists, watches, resumes after a drop without a relist, and relists on 410 with the removals', async () => {
    kube.setPod(onNode('p1', 'n1'));
    kube.setPod(onNode('p2', 'n1'));
    kube.setPod(onNode('other', 'n2'));
    const upserts: string[] = [];
    const removes: string[] = [];
    const syncs: number[] = [];
    const inf = new PodInformer(
      client,
      { upsert: (p) => upserts.push(p.metadata.name), remove: (p) => removes.push(p.metadata.name), synced: (s) => syncs.push(s.size) },
      { fieldSelector: 'spec.nodeName=n1', log, backoff: { minMs: 10, maxMs: 50 } },
    );
    inf.start();
    try {
      await inf.waitForSync();
      assert.deepEqual(upserts.sort(), ['p1', 'p2']);
      assert.deepEqual(syncs, [2]);
      await until('a watch', () => kube.openWatches === 1);

      kube.setPod(onNode('p3', 'n1'));
      await until('p3', () => inf.pods.size === 3);

      // A dropped connection: resume from the last resourceVersion, no relist, nothing missed.
      kube.dropWatches();
      kube.setPod(onNode('p4', 'n1'));
      await until('p4 after the drop', () => inf.pods.size === 4);
      assert.equal(inf.stats.lists, 1, 'resumed, not relisted');
      assert.equal(upserts.filter((n) => n === 'p3').length, 1, 'no replays');

      // Bookmarks move the resourceVersion forward while nothing of ours changes.
      kube.setPod(onNode('far', 'n2'));
      await until('a bookmark at the latest rv', () => inf.resourceVersion === String(kube.resourceVersion));

      // A failing server is retried with backoff.
      kube.failNext(2, 500);
      kube.dropWatches();
      await until('retries', () => inf.stats.errors >= 2 && kube.openWatches === 1);

      // Compaction while watching: 410 -> relist, and what vanished meanwhile is removed.
      await until('watching', () => kube.openWatches === 1);
      kube.compact();
      kube.deletePod('ns1', 'p1');
      kube.setPod(onNode('p5', 'n1'));
      kube.compact(); // and the deletion event itself is gone too
      const names = (): string => [...inf.pods.values()].map((p) => p.metadata.name).sort().join(',');
      await until('relist', () => inf.stats.expired >= 1 && inf.stats.lists >= 2 && names() === 'p2,p3,p4,p5');
      assert.ok(removes.includes('p1'), `p1 removed: ${removes.join(',')}`);
      assert.ok(upserts.includes('p5'));
      assert.equal(syncs.at(-1), 4);
    } finally {
      await inf.stop();
    }
    await until('stop() closes the watch', () => kube.openWatches === 0);
  });
});
