// bpfmesh-cni chained after Debian's containernetworking-plugins (bridge +
// host-local), invoked as a runtime would (test/helpers/cni-runtime.ts), with
// every plugin running inside a "host" network namespace this test makes and
// a pod namespace as CNI_NETNS. Pins live in a private bpffs, the programs on
// a test cgroup (bpfmesh.cgroup_root), host-local's state in a temp folder.
// Kernel floor: that of test/kernel/node-wide.test.ts (5.15).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, PodProcess, PROXY, RELAY, RESPONDER } from '../helpers/mesh.js';
import { addNetworkList, checkNetworkList, CniCallError, delNetworkList, execPlugin, pluginConfig, type Attachment, type CniRuntime, type Json } from '../helpers/cni-runtime.js';
import { REPO_ROOT } from '../../src/config/paths.js';
import { cgroup2Mount, ensureBpffs } from '../../src/intercept/mounts.js';
import { closeMaps } from '../../src/intercept/layout.js';
import { netnsCookieOf } from '../../src/intercept/pod.js';
import { listEnrolled, nodePinDir, openNodeMaps, uninstallNode, type NodeScope } from '../../src/intercept/node-wide.js';
import { cleanupOnExit, uniquePrefix } from '../../src/lab/lab.js';
import { createLogger } from '../../src/log/logger.js';

const CNI_PLUGINS = '/usr/lib/cni';
const FAKE_KUBE = join(REPO_ROOT, 'dist', 'test', 'fixtures', 'fake-kube-server.js');

function skipReason(): string | false {
  const k = kernelSkipReason();
  if (k !== false) return k;
  if (existsSync(join(CNI_PLUGINS, 'bridge')) && existsSync(join(CNI_PLUGINS, 'host-local'))) return false;
  const reason = `${CNI_PLUGINS}/bridge and host-local missing: apt-get install containernetworking-plugins (scripts/install-deps.sh)`;
  if (process.env['CI'] === 'true') throw new Error(`kernel tests cannot run under CI=true: ${reason}`);
  return reason;
}

const skip = skipReason();
const log = createLogger({ logFormat: 'plain', logLevel: 'error' });
const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const quiet = (fn: () => unknown): void => {
  try {
    fn();
  } catch {
    /* best effort during cleanup */
  }
};

/** Kills what is left in a cgroup and removes it; its processes leave a moment after the kill. */
function removeCgroup(dir: string): void {
  if (!existsSync(dir)) return;
  quiet(() => writeFileSync(join(dir, 'cgroup.kill'), '1'));
  for (let i = 0; i < 60 && existsSync(dir); i++) {
    try {
      rmdirSync(dir);
    } catch {
      execFileSync('sleep', ['0.05']);
    }
  }
}

describe('bpfmesh-cni chained with bridge + host-local', { skip, timeout: 180_000 }, () => {
  const prefix = uniquePrefix('cn');
  const netnsNames = { host: `${prefix}-host`, pod: `${prefix}-pod`, plain: `${prefix}-plain`, meshed: `${prefix}-mesh`, c0: `${prefix}-c0`, c1: `${prefix}-c1`, c2: `${prefix}-c2` };
  const netns = (n: keyof typeof netnsNames): string => `/run/netns/${netnsNames[n]}`;
  const cgroupRoot = join(skip === false ? cgroup2Mount() : '/nonexistent', prefix);
  const podCgroup = join(cgroupRoot, 'pod');
  const children = new Set<ChildProcess>();
  let tmp: string;
  let bpffs: string;
  let scope: NodeScope;
  let rt: CniRuntime;
  let list: Json;
  let unregister: () => void = () => {};

  const gateway = '10.93.0.1';
  const att: Attachment = { containerId: `${prefix}-c1`, netns: '', ifname: 'eth0' };
  let cached: Json;
  let podIp: string;
  let relay: PodProcess;

  const bpfmeshEntry = (extra: Json = {}): Json => ({
    type: 'bpfmesh-cni',
    log_level: 'debug',
    linkerd: { 'incoming-proxy-port': 4143, 'outgoing-proxy-port': 4140, 'proxy-uid': PROXY.uid, 'inbound-ports-to-ignore': ['4191', '4190'], 'outbound-ports-to-ignore': ['9300'], 'use-wait-flag': false },
    bpfmesh: { cgroup_root: cgroupRoot, bpffs },
    ...extra,
  });
  const conflist = (entry: Json): Json => ({
    cniVersion: '1.0.0',
    name: `${prefix}-net`,
    plugins: [
      {
        type: 'bridge',
        bridge: `${prefix}br`,
        isGateway: true,
        ipMasq: false,
        ipam: { type: 'host-local', ranges: [[{ subnet: '10.93.0.0/24', gateway }]], dataDir: join(tmp, 'ipam') },
      },
      entry,
    ],
  });

  function cleanup(): void {
    for (const c of children) c.kill('SIGKILL');
    if (scope !== undefined) quiet(() => uninstallNode(scope, log));
    for (const n of Object.values(netnsNames)) quiet(() => sh('ip', ['netns', 'delete', n])); // the host netns takes the bridge with it
    for (const dir of [join(cgroupRoot, 'meshed'), podCgroup, cgroupRoot]) removeCgroup(dir);
    if (bpffs !== undefined) quiet(() => sh('umount', [bpffs]));
    if (tmp !== undefined) quiet(() => rmSync(tmp, { recursive: true, force: true }));
    unregister();
  }

  /** A process in the pod: in a cgroup under cgroup_root, inside the pod's netns. */
  function spawnIn(ns: string, cgroup: string | null, cmd: string, args: string[], as: { uid?: number; gid?: number } = {}): ChildProcess {
    const ids = [...(as.gid !== undefined ? [`--setgid=${as.gid}`] : []), ...(as.uid !== undefined ? [`--setuid=${as.uid}`] : [])];
    const join_ = cgroup === null ? '' : 'echo $$ > "$0/cgroup.procs" && ';
    const script = `${join_}ns="$1" && shift && exec nsenter --net="$ns" "$@"`;
    const child = spawn('sh', ['-c', script, cgroup ?? '-', ns, ...ids, '--', cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(child);
    child.once('exit', () => children.delete(child));
    return child;
  }

  async function curl(ns: string, cgroup: string | null, url: string, as: { uid?: number; gid?: number } = APP): Promise<{ code: number | null; out: string }> {
    const child = spawnIn(ns, cgroup, 'curl', ['-sS', '-g', '--max-time', '3', url], as);
    child.stdin!.end();
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((r) => child.once('close', r));
    return { code, out: out.trim() };
  }

  const fromPod = (url: string, cgroup = podCgroup, ns = netns('pod')): Promise<{ code: number | null; out: string }> => curl(ns, cgroup, url);

  async function startRelay(ns: string, cgroup: string): Promise<PodProcess> {
    const p = new PodProcess(spawnIn(ns, cgroup, process.execPath, [RELAY, '--mode', 'report', '--inbound-port', '4143'], PROXY));
    await p.waitFor((e) => e.event === 'listening');
    return p;
  }

  const podPins = (id: string): string => join(nodePinDir(bpffs), 'pods', id);
  const callBpfmesh = (command: string, a: Partial<Attachment>, stdin: string): ReturnType<typeof execPlugin> => execPlugin(rt, 'bpfmesh-cni', command, a, stdin);

  before(async () => {
    unregister = cleanupOnExit({ cleanup });
    tmp = mkdtempSync(join(tmpdir(), 'bpfmesh-cni-'));
    bpffs = join(tmp, 'bpffs');
    mkdirSync(bpffs);
    ensureBpffs(bpffs, false);
    scope = { bpffs, bpffsExplicit: true, cgroupRoot };
    mkdirSync(podCgroup, { recursive: true });
    for (const n of Object.values(netnsNames)) sh('ip', ['netns', 'add', n]);
    sh('ip', ['-n', netnsNames.host, 'link', 'set', 'lo', 'up']);
    sh('ip', ['-n', netnsNames.pod, 'link', 'set', 'lo', 'up']);
    sh('ip', ['-n', netnsNames.meshed, 'link', 'set', 'lo', 'up']);
    // CNI_PATH: Debian's plugins, and bpfmesh-cni as a symlink to bin/ (the shim resolves it).
    mkdirSync(join(tmp, 'bin'));
    symlinkSync(join(REPO_ROOT, 'bin', 'bpfmesh-cni'), join(tmp, 'bin', 'bpfmesh-cni'));
    // A runtime's environment is small: no PATH at all here; the shim copes.
    rt = { cniPath: [CNI_PLUGINS, join(tmp, 'bin')], hostNetns: netns('host'), env: { BPFMESH_NODE: process.execPath } };
    list = conflist(bpfmeshEntry());
    att.netns = netns('pod');
    // "direct" answers from the host side, to tell steered from untouched.
    const responder = new PodProcess(spawnIn(netns('host'), null, process.execPath, [RESPONDER, '8080', '9300']));
    await responder.waitFor((e) => e.event === 'ready');
  });
  after(cleanup);

  test('VERSION through the shim, with no PATH', async () => {
    const r = await callBpfmesh('VERSION', {}, JSON.stringify({ cniVersion: '1.0.0' }));
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { cniVersion: '1.0.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  });

  test("ADD: bridge's result passes through unchanged, the node install and the pod's pins appear", async () => {
    const r = await addNetworkList(rt, list, att);
    cached = r.result;
    assert.deepEqual(r.result, r.perPlugin[0], "bpfmesh-cni printed bridge's result unchanged");
    const ips = r.result['ips'] as Array<{ address: string; gateway?: string }>;
    assert.match(ips[0]!.address, /^10\.93\.0\.\d+\/24$/);
    podIp = ips[0]!.address.split('/')[0]!;
    assert.match(sh('ip', ['-n', netnsNames.pod, '-4', 'addr', 'show', 'eth0']), new RegExp(`inet ${podIp.replace(/\./g, '\\.')}/24`), 'bridge did its part');
    assert.ok(existsSync(join(podPins(att.containerId), 'link_sk_lookup')) || readdirSync(podPins(att.containerId)).some((n) => n.startsWith('link_')), 'sk_lookup link pinned');
    assert.ok(readdirSync(nodePinDir(bpffs)).filter((n) => n.startsWith('link_')).length >= 6, 'cgroup links pinned once, node-wide');
    relay = await startRelay(netns('pod'), podCgroup);
  });

  test('outbound from a process in a cgroup under cgroup_root is steered to the outgoing proxy port; ignored ports are not', async () => {
    assert.deepEqual(await fromPod(`http://${gateway}:8080/`), { code: 0, out: `outbound orig=${gateway}:8080` });
    assert.deepEqual(await fromPod(`http://${gateway}:9300/`), { code: 0, out: `direct ${gateway}:9300` }, 'outbound-ports-to-ignore');
    assert.deepEqual(await curl(netns('pod'), podCgroup, `http://${gateway}:8080/`, PROXY), { code: 0, out: `direct ${gateway}:8080` }, 'the proxy uid is exempt');
  });

  test("inbound to the pod's IP is steered to the incoming proxy port", async () => {
    // From the test's host netns, outside cgroup_root: an unmeshed client.
    assert.deepEqual(await curl(netns('host'), null, `http://${podIp}:8080/`, {}), { code: 0, out: `inbound local=${podIp}:8080` });
    await relay.waitFor((e) => e.event === 'accept' && e.direction === 'inbound');
  });

  test('CHECK verifies; after the rows are tampered with it fails with a CNI error; ADD again repairs', async () => {
    await checkNetworkList(rt, list, att, cached);
    const maps = openNodeMaps(scope);
    try {
      const cookie = netnsCookieOf(netns('pod'));
      const settings = maps.settings.get(cookie);
      assert.ok(settings !== null, 'the pod has a settings row');
      maps.settings.set(cookie, { ...settings, outgoingPort: 5555 });
    } finally {
      closeMaps(maps);
    }
    const err = await checkNetworkList(rt, list, att, cached).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(err instanceof CniCallError, 'CHECK failed');
    assert.equal(err.type, 'bpfmesh-cni');
    assert.equal(err.run.code, 1);
    assert.equal(err.cni?.code, 117);
    assert.equal(err.cni?.details, 'BPFMESH_E_MISMATCH');
    assert.match(err.cni?.msg ?? '', /settings row differs/);
    const again = await callBpfmesh('ADD', att, JSON.stringify(pluginConfig(list, (list['plugins'] as Json[])[1]!, cached)));
    assert.equal(again.code, 0, again.stdout + again.stderr);
    await checkNetworkList(rt, list, att, cached);
  });

  test('DEL removes: pins gone, traffic no longer steered; a second DEL (and one with no netns) is fine', async () => {
    // The runtime's DEL walks the list backwards: bpfmesh-cni first, while
    // the pod still has its interface to show that traffic is untouched.
    const entry = (list['plugins'] as Json[])[1]!;
    const del = await callBpfmesh('DEL', att, JSON.stringify(pluginConfig(list, entry, cached)));
    assert.deepEqual([del.code, del.stdout], [0, ''], del.stderr);
    assert.equal(existsSync(podPins(att.containerId)), false, 'the pod pins are gone');
    assert.deepEqual(await fromPod(`http://${gateway}:8080/`), { code: 0, out: `direct ${gateway}:8080` }, 'outbound untouched');
    const inbound = await curl(netns('host'), null, `http://${podIp}:8080/`, {});
    assert.notEqual(inbound.code, 0, `inbound no longer reaches the proxy: ${inbound.out}`);
    assert.equal(relay.events.filter((e) => e.direction === 'inbound').length, 1, 'the proxy saw only the earlier inbound connection');
    await delNetworkList(rt, list, att, cached); // bpfmesh-cni's second DEL, then bridge's
    await delNetworkList(rt, list, att, cached);
    const noNetns = await callBpfmesh('DEL', { containerId: att.containerId, ifname: 'eth0' }, JSON.stringify(pluginConfig(list, entry, undefined)));
    assert.deepEqual([noNetns.code, noNetns.stdout], [0, '']);
    relay.stop();
  });

  test('concurrent ADDs on a node with no install yet: one install, every pod enrolled; concurrent DELs remove them', async () => {
    uninstallNode(scope, log);
    const entry = (list['plugins'] as Json[])[1]!;
    const pods = (['c0', 'c1', 'c2'] as const).map((n) => ({ containerId: `${prefix}-${n}`, netns: netns(n), ifname: 'eth0' }));
    const prev = { cniVersion: '1.0.0', ips: [] };
    const adds = await Promise.all(pods.map((a) => callBpfmesh('ADD', a, JSON.stringify(pluginConfig(list, entry, prev)))));
    for (const r of adds) {
      assert.deepEqual([r.code, JSON.parse(r.stdout) as unknown], [0, prev], r.stderr);
      assert.match(r.stderr, /pod enrolled/, 'log_level debug: the log is on stderr, stdout holds only the result');
    }
    assert.deepEqual(listEnrolled(scope).map((e) => e.id).sort(), pods.map((a) => a.containerId).sort());
    const attached = JSON.parse(sh('bpftool', ['-j', 'cgroup', 'show', cgroupRoot]).trim() || '[]') as unknown[];
    assert.equal(attached.length, 8, 'the programs are attached once at cgroup_root');
    const quietEntry = { ...entry, log_level: 'error' };
    const dels = await Promise.all(pods.map((a) => callBpfmesh('DEL', a, JSON.stringify(pluginConfig(list, quietEntry, prev)))));
    for (const r of dels) assert.deepEqual([r.code, r.stdout, r.stderr], [0, '', ''], 'log_level error: nothing logged');
    assert.deepEqual(listEnrolled(scope), []);
  });

  test('bad configuration: CNI error JSON on stdout with the right code, nothing installed', async () => {
    const entry = (list['plugins'] as Json[])[1]!;
    const id = { containerId: `${prefix}-bad`, netns: netns('plain'), ifname: 'eth0' };
    const prev = { cniVersion: '1.0.0', ips: [{ address: '10.93.0.200/24' }] };
    const cases: Array<[string, string, number, string]> = [
      ['bad JSON', '{"cniVersion": "1.0.0", "linkerd": {', 6, 'BPFMESH_E_CNI_DECODE'],
      ['bad port', JSON.stringify(pluginConfig(list, { ...entry, linkerd: { 'incoming-proxy-port': 99999 } }, prev)), 7, 'BPFMESH_E_BAD_PORT'],
      ['missing prevResult', JSON.stringify(pluginConfig(list, entry, undefined)), 7, 'BPFMESH_E_CNI_CONFIG'],
      ['unknown cniVersion', JSON.stringify({ ...pluginConfig(list, entry, prev), cniVersion: '0.2.0' }), 1, 'BPFMESH_E_CNI_VERSION'],
    ];
    for (const [what, stdin, code, details] of cases) {
      const r = await callBpfmesh('ADD', id, stdin);
      assert.equal(r.code, 1, what);
      const e = JSON.parse(r.stdout) as { cniVersion: string; code: number; msg: string; details: string };
      assert.equal(e.code, code, `${what}: ${r.stdout}`);
      assert.equal(e.details, details, what);
      assert.ok(e.msg.length > 10 && typeof e.cniVersion === 'string', what);
      assert.match(r.stderr, new RegExp(details), `${what}: logged on stderr too`);
    }
    const noEnv = await callBpfmesh('ADD', { containerId: id.containerId, ifname: 'eth0' }, JSON.stringify(pluginConfig(list, entry, prev)));
    assert.equal((JSON.parse(noEnv.stdout) as { code: number }).code, 4, 'no CNI_NETNS');
    assert.equal(existsSync(podPins(id.containerId)), false);
  });

  describe('with a kubernetes block and an API server', () => {
    let kube: ChildProcess;
    let kubeList: Json;
    const plain: Attachment = { containerId: `${prefix}-plain`, netns: '', ifname: 'eth0', args: { IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'shop', K8S_POD_NAME: 'plain' } };
    const meshed: Attachment = { containerId: `${prefix}-mesh`, netns: '', ifname: 'eth0', args: { IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'shop', K8S_POD_NAME: 'meshed' } };
    const results = new Map<string, Json>();

    before(async () => {
      plain.netns = netns('plain');
      meshed.netns = netns('meshed');
      const pods = [
        { metadata: { name: 'plain', namespace: 'shop' } },
        { metadata: { name: 'meshed', namespace: 'shop', annotations: { 'linkerd.io/inject': 'enabled', 'config.linkerd.io/skip-outbound-ports': '8080' } } },
      ];
      // The API server listens inside the host netns, where the plugins run.
      kube = spawnIn(netns('host'), null, process.execPath, [FAKE_KUBE, JSON.stringify(pods)]);
      const first = await new Promise<string>((resolve, reject) => {
        let buf = '';
        kube.stdout!.on('data', (d: Buffer) => {
          buf += d.toString();
          if (buf.includes('\n')) resolve(buf.split('\n')[0]!);
        });
        kube.once('exit', (c) => reject(new Error(`fake API server exited (${c})`)));
      });
      const { kubeconfigPath } = JSON.parse(first) as { kubeconfigPath: string };
      assert.ok(readFileSync(kubeconfigPath, 'utf8').includes('server: http://127.0.0.1:'));
      kubeList = conflist(bpfmeshEntry({ kubernetes: { kubeconfig: kubeconfigPath } }));
    });
    after(async () => {
      for (const a of [meshed, plain]) {
        if (results.has(a.containerId)) await delNetworkList(rt, kubeList, a, results.get(a.containerId)).catch(() => {});
      }
      if (kube !== undefined && kube.exitCode === null) {
        const exited = new Promise((r) => kube.once('exit', r));
        kube.stdin!.end();
        await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
      }
    });

    test('a pod without linkerd.io/inject is left alone: prevResult passed through, nothing enrolled', async () => {
      const r = await addNetworkList(rt, kubeList, plain);
      results.set(plain.containerId, r.result);
      assert.deepEqual(r.result, r.perPlugin[0]);
      assert.equal(existsSync(podPins(plain.containerId)), false);
      await checkNetworkList(rt, kubeList, plain, r.result);
    });

    test("an annotated pod is enrolled with its skip-outbound-ports applied over the block's", async () => {
      const r = await addNetworkList(rt, kubeList, meshed);
      results.set(meshed.containerId, r.result);
      assert.deepEqual(r.result, r.perPlugin[0]);
      assert.ok(existsSync(podPins(meshed.containerId)), 'enrolled');
      const cgroup = join(cgroupRoot, 'meshed');
      mkdirSync(cgroup);
      try {
        const p = await startRelay(netns('meshed'), cgroup);
        try {
          assert.deepEqual(await fromPod(`http://${gateway}:8080/`, cgroup, netns('meshed')), { code: 0, out: `direct ${gateway}:8080` }, 'skipped by the annotation');
          assert.deepEqual(await fromPod(`http://${gateway}:9300/`, cgroup, netns('meshed')), { code: 0, out: `outbound orig=${gateway}:9300` }, "the block's 9300 was replaced");
        } finally {
          p.stop();
        }
        await checkNetworkList(rt, kubeList, meshed, r.result);
      } finally {
        removeCgroup(cgroup);
      }
    });
  });
});
