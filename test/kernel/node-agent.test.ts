// `bpfmesh node` as a real child process against the fake Kubernetes API
// server, with pods laid out as kubelet does (netns + <root>/kubepods/pod<uid>
// cgroup + a sandbox process), a private bpffs and a per-run cgroup root.
// Interception is checked with real traffic (an app's connect() answered by
// a listener on the outgoing proxy port inside the pod) and in the pins and maps.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, PROXY, PodProcess, RELAY, runCli } from '../helpers/mesh.js';
import { AgentProcess, metricSum, until } from '../helpers/node-agent-proc.js';
import { startFakeKube, type FakeKube, type FakePodInput } from '../helpers/fake-kube.js';
import { KubeletNode, type NodePod } from '../helpers/kube-pods.js';
import { ensureBpffs } from '../../src/intercept/mounts.js';
import { enrollPod, listEnrolled, nodePinDir, openNodeMaps, uninstallNode, withdrawPod, type NodeScope } from '../../src/intercept/node-wide.js';
import { parseInitFlags } from '../../src/config/pod-flags.js';
import { closeMaps } from '../../src/intercept/layout.js';
import { netnsCookieOf } from '../../src/intercept/pod.js';
import { native } from '../../src/bpf/native.js';
import { RuleKind } from '../../src/bpf/codecs.js';
import { createLogger } from '../../src/log/logger.js';

const skip = kernelSkipReason();
const NODE = 'node-a';
const INJECT = { 'linkerd.io/inject': 'enabled' };
const NOWHERE = '10.66.0.9'; // no route in the pod: only the redirect can answer

/** A metric's value from the exposition text (0 when absent). */
const metric = (text: string, name: string, labels = ''): number => metricSum(text, name, labels === '' ? [] : [labels]);

describe('bpfmesh node (DaemonSet agent)', { skip, timeout: 240_000 }, () => {
  let kube: FakeKube;
  let node: KubeletNode;
  let bpffs: string;
  let scope: NodeScope;
  let agent: AgentProcess;
  const pods = new Map<string, NodePod>();
  const log = createLogger({ logFormat: 'plain', logLevel: 'error' });

  const startAgent = (): AgentProcess =>
    new AgentProcess(['--kubeconfig', kube.kubeconfigPath, '--node-name', NODE, '--cgroup-root', node.cgroupRoot, '--bpffs', bpffs, '--admin-addr', '127.0.0.1:0', '--log-format', 'json', '--log-level', 'debug']);
  const enrolledIds = (): string[] => listEnrolled(scope).map((e) => e.id).sort();
  const isEnrolled = (p: NodePod): boolean => listEnrolled(scope).some((e) => e.id === p.uid && e.alive);
  const announce = (name: string, p: NodePod, annotations: Record<string, string> = INJECT, extra: Partial<FakePodInput> = {}) =>
    kube.setPod({ metadata: { name, namespace: 'app', uid: p.uid, annotations }, spec: { nodeName: NODE }, ...extra });

  async function steered(p: NodePod, port = 8080): Promise<boolean> {
    const r = await node.exec(p, 'curl', ['-sS', '--max-time', '3', `http://${NOWHERE}:${port}/`], APP);
    if (r.code === 0) {
      assert.equal(r.stdout.trim(), `outbound orig=${NOWHERE}:${port}`);
      return true;
    }
    if (process.env['DEBUG_NODE_AGENT']) process.stderr.write(`curl in ${p.uid}: ${r.code} ${r.stderr}\n${JSON.stringify(agent.records.slice(-8))}\n`);
    return false;
  }

  async function proxyIn(p: NodePod): Promise<PodProcess> {
    const relay = new PodProcess(node.spawn(p, process.execPath, [RELAY, '--mode', 'report'], PROXY));
    await relay.waitFor((e) => e.event === 'listening');
    return relay;
  }

  function rowsOf(p: NodePod): { settings: boolean; outboundIgnored: number[] } {
    const maps = openNodeMaps(scope);
    try {
      const cookie = netnsCookieOf(p.netns);
      return {
        settings: maps.settings.get(cookie) !== null,
        outboundIgnored: [...maps.portRules.keys()].filter((k) => k.netnsCookie === cookie && k.kind === RuleKind.OUTBOUND_IGNORE).map((k) => k.port),
      };
    } finally {
      closeMaps(maps);
    }
  }

  function counts(): { pods: number; settingsRows: number; portRows: number; cgroupProgs: number } {
    const maps = openNodeMaps(scope);
    try {
      const cgroupProgs = (JSON.parse(execFileSync('bpftool', ['-j', 'cgroup', 'show', scope.cgroupRoot], { encoding: 'utf8' }).trim() || '[]') as unknown[]).length;
      return { pods: listEnrolled(scope).length, settingsRows: [...maps.settings.keys()].length, portRows: [...maps.portRules.keys()].length, cgroupProgs };
    } finally {
      closeMaps(maps);
    }
  }

  const linkId = (p: NodePod): number => {
    const link = native().openPinnedLink(join(nodePinDir(bpffs), 'pods', p.uid, 'link_sk_lookup'));
    try {
      return link.info().id;
    } finally {
      link.close();
    }
  };

  before(async () => {
    kube = await startFakeKube({ bookmarkIntervalMs: 200 });
    node = new KubeletNode();
    bpffs = mkdtempSync(join(tmpdir(), 'bpfmesh-node-agent-'));
    ensureBpffs(bpffs, false);
    scope = { bpffs, bpffsExplicit: true, cgroupRoot: node.cgroupRoot };
    for (const name of ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k']) pods.set(name, name === 'e' || name === 'g' ? node.createPod() : await node.addPod({ systemd: name === 'd' }));
    agent = startAgent();
  });

  after(async () => {
    try {
      agent?.child.kill('SIGKILL');
      if (scope !== undefined) uninstallNode(scope, log);
    } finally {
      try {
        node?.cleanup();
      } finally {
        if (bpffs !== undefined) {
          execFileSync('umount', [bpffs]);
          rmdirSync(bpffs);
        }
        await kube?.close();
      }
    }
  });

  test('starts, installs the node-wide programs once, and is ready with no pods', async () => {
    await agent.waitLog((r) => r.msg === 'reconciled; ready', 'ready');
    assert.equal((await agent.get('/ready')).status, 200);
    assert.equal((await agent.get('/live')).status, 200);
    assert.equal(counts().cgroupProgs, 8);
    assert.deepEqual(enrolledIds(), []);
  });

  test('an annotated pod of this node is intercepted; unannotated pods and other nodes are not', async () => {
    const a = pods.get('a')!;
    const b = pods.get('b')!;
    const c = pods.get('c')!;
    announce('b', b, {}); // no annotation
    kube.setPod({ metadata: { name: 'c', namespace: 'app', uid: c.uid, annotations: INJECT }, spec: { nodeName: 'node-other' } });
    announce('a', a);
    await until('a enrolled', () => isEnrolled(a));
    const relayA = await proxyIn(a);
    const relayB = await proxyIn(b);
    try {
      assert.equal(await steered(a), true, "a's connect() reaches the proxy port in its own netns");
      assert.equal(await steered(b), false, 'b is not meshed');
      assert.deepEqual(enrolledIds(), [a.uid]);
      const text = await agent.metrics();
      assert.equal(metric(text, 'bpfmesh_node_pods_meshed'), 1);
      assert.equal(metric(text, 'bpfmesh_node_installs_total', 'reason="new"'), 1);
      assert.equal(metric(text, 'bpfmesh_node_time_to_interception_seconds_count'), 1);
    } finally {
      relayA.stop();
      relayB.stop();
    }
  });

  test('the systemd cgroup layout is found too', async () => {
    const d = pods.get('d')!;
    announce('d', d);
    await until('d enrolled', () => isEnrolled(d));
    assert.equal(rowsOf(d).settings, true);
  });

  test("a proxy already listening when its pod is enrolled gets its listener registered", async () => {
    const i = pods.get('i')!;
    const relay = new PodProcess(node.spawn(i, process.execPath, [RELAY, '--mode', 'report', '--inbound-port', '4143'], PROXY));
    try {
      await relay.waitFor((e) => e.event === 'listening');
      announce('i', i);
      await until('i enrolled', () => isEnrolled(i));
      const cookie = netnsCookieOf(i.netns);
      const maps = openNodeMaps(scope);
      try {
        await until('listener registered', () => [...maps.listeners.keys()].some((k) => k.netnsCookie === cookie));
      } finally {
        closeMaps(maps);
      }
      await agent.waitLog((r) => r.msg === "registered the proxy's listener that was already open" && r['uid'] === i.uid, 'adopt log');
    } finally {
      relay.stop();
    }
    kube.deletePod('app', 'i');
    await until('i withdrawn', () => !enrolledIds().includes(i.uid));
  });

  test('an annotation change rewrites the rows; traffic follows', async () => {
    const a = pods.get('a')!;
    const relay = await proxyIn(a);
    try {
      const id = linkId(a);
      announce('a', a, { ...INJECT, 'config.linkerd.io/skip-outbound-ports': '8080, 9000-9001' });
      await until('rows changed', () => rowsOf(a).outboundIgnored.includes(8080));
      assert.equal(await steered(a, 8080), false, '8080 now skips the proxy');
      assert.equal(await steered(a, 8081), true, 'other ports still steered');
      assert.equal(linkId(a), id, 'same link: only rows were written');
      assert.equal(metric(await agent.metrics(), 'bpfmesh_node_installs_total', 'reason="updated"'), 1);
      announce('a', a, { ...INJECT, 'config.linkerd.io/proxy-uid': '2102' });
      await until('rows back', () => rowsOf(a).outboundIgnored.length === 0);
      assert.equal(await steered(a, 8080), true);
    } finally {
      relay.stop();
    }
  });

  test('a bad annotation leaves a new pod unmeshed (an enrolled one keeps its last policy), is logged and counted, and the agent goes on', async () => {
    const b = pods.get('b')!;
    announce('b', b, { ...INJECT, 'config.linkerd.io/skip-outbound-ports': '80,http' });
    const rec = await agent.waitLog((r) => r.msg === 'pod not meshed: bad annotation', 'bad annotation event');
    assert.equal(rec['code'], 'BPFMESH_E_BAD_ANNOTATION');
    assert.match(String(rec['err']), /skip-outbound-ports/);
    assert.equal(metric(await agent.metrics(), 'bpfmesh_node_failures_total', 'reason="bad_annotation"'), 1);
    assert.equal(isEnrolled(b), false);
    announce('b', b, { ...INJECT, 'config.linkerd.io/skip-subnets': '10.0.0.0/8' });
    await until('b enrolled once fixed', () => isEnrolled(b));
    assert.equal(agent.child.exitCode, null);
    // Enrolled now: a bad annotation keeps the last good policy instead of unmeshing it.
    announce('b', b, { ...INJECT, 'config.linkerd.io/skip-subnets': '10.0.0.0/8', 'config.linkerd.io/skip-inbound-ports': 'ssh' });
    await agent.waitLog((r) => r.msg === 'bad annotation; keeping the last good policy' && r['uid'] === b.uid, 'kept event');
    assert.equal(isEnrolled(b), true);
    assert.equal(metric(await agent.metrics(), 'bpfmesh_node_failures_total', 'reason="bad_annotation"'), 2);
  });

  test('a pod with its own init-container install is not enrolled on top of it; once that is reset, it is', async () => {
    const j = pods.get('j')!;
    const init = await runCli(['init', '--netns', j.netns, '--cgroup', j.cgroup, '--pod-name', 'j-init', '--bpffs', bpffs, '--log-level', 'warn']);
    assert.equal(init.code, 0, init.stderr);
    try {
      announce('j', j);
      await agent.waitLog((r) => r.msg === 'pod has its own bpfmesh init install; not enrolling it node-wide' && r['uid'] === j.uid, 'skip event');
      assert.equal(isEnrolled(j), false);
    } finally {
      const reset = await runCli(['reset', '--pod-name', 'j-init', '--netns', j.netns, '--bpffs', bpffs]);
      assert.equal(reset.code, 0, reset.stderr);
    }
    await until('j enrolled node-wide once its own install is gone', () => isEnrolled(j));
    kube.deletePod('app', 'j');
    await until('j withdrawn', () => !enrolledIds().includes(j.uid));
  });

  test('a pod the CNI plugin enrolled (under its container id) is left to it', async () => {
    const k = pods.get('k')!;
    enrollPod(scope, 'cni-container-k', k.netns, parseInitFlags(['--proxy-uid', String(PROXY.uid)]), log);
    try {
      announce('k', k);
      await agent.waitLog((r) => r.msg === 'pod is enrolled node-wide under another id (the CNI plugin); leaving it' && r['uid'] === k.uid, 'leave event');
      assert.deepEqual(listEnrolled(scope).filter((e) => e.netnsCookie === netnsCookieOf(k.netns)).map((e) => e.id), ['cni-container-k']);
    } finally {
      withdrawPod(scope, 'cni-container-k', log);
    }
    kube.deletePod('app', 'k');
  });

  test('a pod announced before its sandbox runs is enrolled once a process appears', async () => {
    const e = pods.get('e')!;
    announce('e', e);
    await agent.waitLog((r) => r.msg === 'pod has no process yet; waiting' && r['uid'] === e.uid, 'waiting');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(isEnrolled(e), false);
    await node.startSandbox(e);
    await until('e enrolled', () => isEnrolled(e));
  });

  test('unannotated: withdrawn; deleted: withdrawn', async () => {
    const b = pods.get('b')!;
    const d = pods.get('d')!;
    announce('b', b, { 'linkerd.io/inject': 'disabled' });
    await until('b withdrawn', () => !enrolledIds().includes(b.uid));
    assert.equal(rowsOf(b).settings, false);
    const relay = await proxyIn(b);
    try {
      assert.equal(await steered(b), false);
    } finally {
      relay.stop();
    }
    const cookie = netnsCookieOf(d.netns);
    kube.deletePod('app', 'd');
    await until('d withdrawn', () => !enrolledIds().includes(d.uid));
    const maps = openNodeMaps(scope);
    try {
      assert.equal(maps.settings.get(cookie), null);
    } finally {
      closeMaps(maps);
    }
    const text = await agent.metrics();
    assert.equal(metric(text, 'bpfmesh_node_withdrawals_total', 'reason="unmeshed"'), 1);
    assert.equal(metric(text, 'bpfmesh_node_withdrawals_total', 'reason="deleted"'), 3, 'i, j and d');
  });

  test('410 Gone: the agent lists again and catches up on what it missed', async () => {
    const f = pods.get('f')!;
    const e = pods.get('e')!;
    announce('f', f);
    await until('f enrolled', () => isEnrolled(f));
    const lists = kube.requests.filter((r) => !r.watch && r.path === '/api/v1/pods').length;
    await until('watching', () => kube.openWatches === 1);
    // Forget history, delete e, forget again: only a relist can tell the agent.
    kube.compact();
    kube.deletePod('app', 'e');
    kube.compact();
    await until('e withdrawn', () => !enrolledIds().includes(e.uid));
    assert.ok(kube.requests.filter((r) => !r.watch && r.path === '/api/v1/pods').length > lists, 'listed again');
    await agent.waitLog((r) => r.msg === 'resourceVersion expired; listing again', 'expired log');
    assert.ok(metric(await agent.metrics(), 'bpfmesh_node_kube_expired_total') >= 1);
    assert.equal(isEnrolled(f), true, 'f kept');
  });

  test('SIGKILL mid-way, changes while down, restart: reconciled without duplicates or leaks', async () => {
    const a = pods.get('a')!;
    const f = pods.get('f')!;
    const g = pods.get('g')!;
    const h = pods.get('h')!;
    announce('h', h);
    await until('h enrolled', () => isEnrolled(h));
    assert.deepEqual(enrolledIds(), [a.uid, f.uid, h.uid].sort());
    const aLink = linkId(a);
    const aRows = rowsOf(a);

    agent.child.kill('SIGKILL');
    await agent.exited();

    // Interception stays while the agent is down.
    const relay = await proxyIn(a);
    try {
      assert.equal(await steered(a), true, 'a still steered with no agent');
    } finally {
      relay.stop();
    }
    // While down: f deleted (API and node), g added (its sandbox starts later),
    // h's sandbox recreated (new netns, same pod), a unchanged.
    kube.deletePod('app', 'f');
    node.removePod(f);
    announce('g', g);
    const hUid = h.uid;
    node.removePod(h);
    const h2 = await node.addPod({ uid: hUid });
    pods.set('h', h2);
    await until("h's old netns is seen as dead", () => listEnrolled(scope).find((x) => x.id === hUid)?.alive === false);

    agent = startAgent();
    await agent.waitLog((r) => r.msg === 'reconciled; ready', 'ready after restart');
    await node.startSandbox(g);
    await until('g enrolled', () => isEnrolled(g));
    await until('h re-enrolled', () => isEnrolled(h2));
    assert.deepEqual(enrolledIds(), [a.uid, g.uid, hUid].sort(), 'f withdrawn, nothing duplicated');
    assert.equal(linkId(a), aLink, "a adopted: its link was not replaced");
    assert.deepEqual(rowsOf(a), aRows, "a's rows unchanged");
    assert.equal(listEnrolled(scope).find((x) => x.id === hUid)?.netnsCookie, netnsCookieOf(h2.netns), 'h moved to its new netns');
    const c = counts();
    assert.equal(c.cgroupProgs, 8, 'the programs are attached once');
    assert.equal(c.pods, 3);
    assert.equal(c.settingsRows, 3, 'one settings row per enrolled pod: no leak from f or the old h');
    const text = await agent.metrics();
    assert.equal(metric(text, 'bpfmesh_node_installs_total', 'reason="adopted"'), 1);
    assert.equal(metric(text, 'bpfmesh_node_withdrawals_total', 'reason="gone_while_down"'), 1);
    assert.equal(metric(text, 'bpfmesh_node_withdrawals_total', 'reason="netns_gone"'), 1);
    assert.equal(metric(text, 'bpfmesh_node_pods_meshed'), 3);
    const relay2 = await proxyIn(g);
    try {
      assert.equal(await steered(g), true);
    } finally {
      relay2.stop();
    }
  });

  test('SIGTERM: exits 0 and leaves interception in place', async () => {
    const before = counts();
    agent.child.kill('SIGTERM');
    const { code } = await agent.exited();
    assert.equal(code, 0);
    assert.deepEqual(counts(), before);
    const a = pods.get('a')!;
    const relay = await proxyIn(a);
    try {
      assert.equal(await steered(a), true);
    } finally {
      relay.stop();
    }
  });
});
