// `bpfmesh node --proxy`: one node proxy serves several pods of a node with
// sockets made in each pod's netns. Real kernel, real node-wide BPF, pods
// laid out as kubelet does and wired to a bridge (in a hub netns of their
// own), the agent as a child process in a cgroup under the attach root, the
// fake Kubernetes API. Traffic with curl between pods: HTTP/1, HTTP/2
// (prior knowledge), opaque TCP; per-pod metrics; a pod removed under
// traffic; its netns freed (its veth peer in the hub disappears only when
// the namespace is destroyed, so a kept fd or socket would show).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { AgentProcess, metricSum, until } from '../helpers/node-agent-proc.js';
import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSkipReason } from '../helpers/root.js';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { APP, APP_SERVER, PodProcess } from '../helpers/mesh.js';
import { startFakeKube, type FakeKube } from '../helpers/fake-kube.js';
import { KubeletNode } from '../helpers/kube-pods.js';
import { PodBridge, type BridgedPod } from '../helpers/pod-bridge.js';
import { execPlugin, type CniRuntime } from '../helpers/cni-runtime.js';
import { REPO_ROOT } from '../../src/config/paths.js';
import { ensureBpffs } from '../../src/intercept/mounts.js';
import { listEnrolled, openNodeMaps, uninstallNode, type NodeScope } from '../../src/intercept/node-wide.js';
import { closeMaps } from '../../src/intercept/layout.js';
import { netnsCookieOf } from '../../src/intercept/pod.js';
import { Flags } from '../../src/bpf/codecs.js';
import { createLogger } from '../../src/log/logger.js';

const skip = kernelSkipReason();
const NODE = 'node-p';
const INJECT = { 'linkerd.io/inject': 'enabled' };
/** Pod f's address: the seventh pod on the bridge (a, b, c, plain, d, e come before it). */
const F_IP = '10.79.0.8';
const F_CONTAINER = 'cni-sandbox-f';

const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** The agent with --proxy, in its own cgroup under the attach root (so the node-wide hooks cover its sockets). */
class NodeProxyAgent extends AgentProcess {
  constructor(cgroup: string, args: string[], env: NodeJS.ProcessEnv = {}) {
    super(['--proxy', ...args], { cgroup, env });
  }
  served(name: string): boolean {
    return this.records.some((r) => r.msg === 'serving pod' && r['pod'] === `app/${name}`);
  }
}

describe('bpfmesh node --proxy (one proxy for the pods of a node)', { skip, timeout: 600_000 }, () => {
  let kube: FakeKube;
  let node: KubeletNode;
  let bpffs: string;
  let scope: NodeScope;
  let agent: NodeProxyAgent;
  const agents: NodeProxyAgent[] = [];
  const pods = new Map<string, BridgedPod>();
  let bridge: PodBridge;
  const apps: PodProcess[] = [];
  const log = createLogger({ logFormat: 'plain', logLevel: 'error' });

  async function podOnBridge(name: string): Promise<void> {
    pods.set(name, bridge.attach(await node.addPod()));
  }
  const announce = (name: string, annotations: Record<string, string> = INJECT): void => {
    const p = pods.get(name)!;
    kube.setPod({ metadata: { name, namespace: 'app', uid: p.pod.uid, annotations }, spec: { nodeName: NODE, serviceAccountName: `sa-${name}` } });
  };
  const vethExists = (veth: string): boolean => bridge.vethExists(veth);
  const curl = (from: string, args: string[]) => node.exec(pods.get(from)!.pod, 'curl', ['-sS', '--max-time', '5', ...args], APP);

  let cp: TestControlPlane;
  let controlEnv: NodeJS.ProcessEnv = {};
  // Pod f comes through the CNI plugin (bin/bpfmesh-cni, forwarded to the agent's socket); its UID is known up front for its token.
  const fUid = randomUUID();
  let cniDir: string;
  let rt: CniRuntime;
  const cniSocket = (): string => join(cniDir, 'run', 'cni.sock');
  const cniCall = (command: string, name: string, containerId: string) => {
    const p = pods.get(name)!;
    const conf = {
      cniVersion: '1.0.0',
      name: 'k8s-pod-network',
      type: 'bpfmesh-cni',
      log_level: 'debug',
      kubernetes: { kubeconfig: kube.kubeconfigPath },
      linkerd: { 'incoming-proxy-port': 4143, 'outgoing-proxy-port': 4140, 'proxy-uid': 2102, 'inbound-ports-to-ignore': ['4191', '4190'] },
      bpfmesh: { cgroup_root: node.cgroupRoot, bpffs },
      prevResult: { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: p.pod.netns }], ips: [{ address: `${p.ip}/16`, interface: 0 }] },
    };
    const args = { K8S_POD_NAMESPACE: 'app', K8S_POD_NAME: name, K8S_POD_UID: p.pod.uid, K8S_POD_INFRA_CONTAINER_ID: containerId };
    return execPlugin(rt, 'bpfmesh-cni', command, { containerId, netns: p.pod.netns, ifname: 'eth0', args }, JSON.stringify(conf));
  };
  const identityOf = (name: string): string => `sa-${name}.app.serviceaccount.identity.cluster.local`;
  const startAgent = (cgroup: string, extra: string[] = []): NodeProxyAgent => {
    const a = new NodeProxyAgent(join(node.cgroupRoot, 'system', cgroup), [
      '--kubeconfig', kube.kubeconfigPath, '--node-name', NODE, '--cgroup-root', node.cgroupRoot, '--bpffs', bpffs,
      '--admin-addr', '127.0.0.1:0', '--log-format', 'json', '--log-level', 'debug', ...extra,
    ], { LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD: '3s', LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT: '1s', LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT: '1s', ...controlEnv });
    agents.push(a);
    return a;
  };
  const exited = (a: NodeProxyAgent): Promise<unknown> => a.exited();
  /** curl a -> b in a loop until stopped (bounded): counts answers and failures. */
  const loadAtoB = (): { stop: () => Promise<{ ok: number; failed: string[] }> } => {
    const b = pods.get('b')!;
    let stopped = false;
    let ok = 0;
    const failed: string[] = [];
    const run = (async () => {
      for (let i = 0; i < 2000 && !stopped; i++) {
        const r = await curl('a', ['-i', `http://${b.ip}:8080/load`]);
        if (r.code === 0 && r.stdout.includes('hello /load')) ok++;
        else failed.push(`${r.code} ${r.stderr.trim()} ${r.stdout.replace(/\r/g, '').split('\n').filter((l) => /^(HTTP|l5d|grpc|content-length)/i.test(l) || !l.includes(':')).join(' | ')}`);
      }
    })();
    return {
      stop: async () => {
        stopped = true;
        await run;
        return { ok, failed };
      },
    };
  };

  before(async () => {
    kube = await startFakeKube({ bookmarkIntervalMs: 200 });
    node = new KubeletNode();
    bridge = new PodBridge(node);
    bpffs = mkdtempSync(join(tmpdir(), 'bpfmesh-node-proxy-'));
    ensureBpffs(bpffs, false);
    cniDir = mkdtempSync(join(tmpdir(), 'bpfmesh-node-proxy-cni-'));
    mkdirSync(join(cniDir, 'bin'));
    symlinkSync(join(REPO_ROOT, 'bin', 'bpfmesh-cni'), join(cniDir, 'bin', 'bpfmesh-cni'));
    rt = { cniPath: [join(cniDir, 'bin')], env: { BPFMESH_NODE: process.execPath, BPFMESH_CNI_SOCKET: cniSocket() } };
    scope = { bpffs, bpffsExplicit: true, cgroupRoot: node.cgroupRoot };
    await podOnBridge('a');
    await podOnBridge('b');
    await podOnBridge('c');
    await podOnBridge('plain'); // not meshed: sees the source address of what reaches it
    // The control plane (in this netns, as for a node agent): identity for tokens of the pods' own service
    // accounts only, discovery giving b's and c's HTTP ports their identities (so a -> b, a -> c are mTLS).
    const tokens = ['a', 'b', 'c'].map((n) => `  "tr.app.sa-${n}.${pods.get(n)!.pod.uid}": ${identityOf(n)}`);
    tokens.push(`  "tr.app.sa-f.${fUid}": ${identityOf('f')}`);
    const fIp = F_IP;
    const services = [...['b', 'c'].map((n) => [n, pods.get(n)!.ip] as const), ['f', fIp] as const].flatMap(([n, ip]) => [8080, 8081].flatMap((port) => [`  - name: "${ip}:${port}"`, `    endpoints: [{ addr: "${ip}:${port}", identity: ${identityOf(n)} }]`]));
    cp = await startTestControlPlane(['trustDomain: cluster.local', 'tokens:', ...tokens, 'services:', ...services, ''].join('\n'));
    const cpAddr = `127.0.0.1:${cp.cp.address.port}`;
    controlEnv = {
      LINKERD2_PROXY_DESTINATION_SVC_ADDR: cpAddr,
      LINKERD2_PROXY_IDENTITY_SVC_ADDR: cpAddr,
      // The agent's own name only gives the trust domain; each pod certifies as its own service account.
      LINKERD2_PROXY_IDENTITY_LOCAL_NAME: 'bpfmesh-node.bpfmesh.serviceaccount.identity.cluster.local',
      LINKERD2_PROXY_IDENTITY_TOKEN_FILE: join(cp.dir, 'no-such-token'),
      LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS: readFileSync(join(cp.dir, 'state', 'trust-anchors.pem'), 'utf8'),
    };
    for (const name of ['b', 'c']) {
      const app = new PodProcess(node.spawn(pods.get(name)!.pod, process.execPath, [APP_SERVER], APP));
      await app.waitFor((e) => e.event === 'ready');
      apps.push(app);
    }
    const peer = node.spawn(pods.get('plain')!.pod, process.execPath, ['-e', "require('http').createServer((q,r)=>r.end('peer '+q.socket.remoteAddress+'\\n')).listen(7000,()=>console.log('ready'))"], APP);
    const whoami = new PodProcess(peer);
    await whoami.waitFor((e) => e.event === 'ready');
    apps.push(whoami);
    agent = startAgent('bpfmesh-node', ['--cni-socket', cniSocket()]);
    for (const name of ['a', 'b', 'c']) announce(name);
    // Generous: under emulation (vagrant/kernels, TCG) each pod's key generation and certification take seconds.
    await until('three pods served', () => ['a', 'b', 'c'].every((n) => agent.served(n)) || agent.child.exitCode !== null, 90_000).catch((err: Error) => {
      throw new Error(`${err.message}; agent log: ${JSON.stringify(agent.records.slice(-8))}`);
    });
    assert.equal(agent.child.exitCode, null, JSON.stringify(agent.records.slice(-5)));
  });

  after(async () => {
    try {
      for (const a of apps) a.child.kill('SIGKILL');
      for (const a of agents) {
        a.child.kill('SIGKILL');
        if (a.child.exitCode === null && a.child.signalCode === null) await new Promise((r) => a.child.once('exit', r));
      }
      if (scope !== undefined) uninstallNode(scope, log);
    } finally {
      try {
        node?.cleanup();
        bridge?.cleanup();
      } finally {
        if (bpffs !== undefined) {
          execFileSync('umount', [bpffs]);
          rmdirSync(bpffs);
        }
        await kube?.close();
        await cp?.cleanup();
        if (cniDir !== undefined) rmSync(cniDir, { recursive: true, force: true });
      }
    }
  });

  test('each pod has listeners made in its own netns, owned by the one agent process', () => {
    const pid = String(agent.child.pid);
    for (const name of ['a', 'b', 'c']) {
      const ss = sh('ip', ['netns', 'exec', pods.get(name)!.pod.netnsName, 'ss', '-Htlnp']);
      for (const port of ['127.0.0.1:4140', '0.0.0.0:4143']) {
        const line = ss.split('\n').find((l) => l.includes(port));
        assert.ok(line !== undefined, `${name}: no listener on ${port}:\n${ss}`);
        // sh exec'd node: the agent is the child's own pid.
        assert.match(line, new RegExp(`pid=${pid},`), `${name}: ${port} is not the agent's`);
      }
    }
    assert.deepEqual(listEnrolled(scope).map((e) => e.id).sort(), ['a', 'b', 'c'].map((n) => pods.get(n)!.pod.uid).sort());
  });

  test('mTLS between pods of the node, each pod with its own identity from a token of its own service account', async () => {
    const b = pods.get('b')!;
    let who = '';
    await until('a -> b over mTLS', async () => {
      const r = await curl('a', [`http://${b.ip}:8080/whoami`]);
      who = r.stdout.trim();
      return who.includes(identityOf('a'));
    }, 15_000).catch((err: Error) => assert.fail(`${err.message}: last answer "${who}"`));
    // b's app saw a's identity (l5d-client-id, set by b's inbound proxy from a's verified client certificate);
    // a's outbound verified b's server certificate against b's identity from discovery.
    const certified = new Set(cp.certifies.filter((e) => e.result === 'OK').map((e) => `${e.identity} ${e.token.split('.').slice(0, 3).join('.')}`));
    for (const n of ['a', 'b', 'c']) assert.ok(certified.has(`${identityOf(n)} tr.app.sa-${n}`), `${n} not certified with its own token: ${[...certified].join(', ')}`);
    assert.ok(kube.tokenRequests.length >= 3 && kube.tokenRequests.every((t) => t.audiences.join() === 'identity.l5d.io'), JSON.stringify(kube.tokenRequests));
    const m = await agent.metrics();
    assert.ok(metricSum(m, 'request_total', ['direction="inbound"', 'pod="b"', 'tls="true"', `client_id="${identityOf('a')}"`]) >= 1, 'b: no inbound mTLS request from a counted');
    assert.ok(metricSum(m, 'request_total', ['direction="outbound"', 'pod="a"', 'tls="true"', `server_id="${identityOf('b')}"`]) >= 1, 'a: no outbound mTLS request to b counted');
  });

  test('HTTP/1 from pod a to pod b, through both pods\' proxies in the one process', async () => {
    const b = pods.get('b')!;
    const r = await curl('a', [`http://${b.ip}:8080/h1`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), `hello /h1 from ${b.ip}:8080 1.1`);
    const m = await agent.metrics();
    assert.ok(metricSum(m, 'request_total', ['direction="outbound"', 'pod="a"', 'namespace="app"']) >= 1, 'a: outbound request not counted under pod a');
    assert.ok(metricSum(m, 'request_total', ['direction="inbound"', 'pod="b"']) >= 1, 'b: inbound request not counted under pod b');
    assert.equal(metricSum(m, 'request_total', ['pod="c"']), 0, 'pod c counted traffic it never saw');
    // Process figures once, from the agent: a pod's registry repeating them (and running an event loop monitor each) is memory per pod for nothing.
    const perPod = m.split('\n').filter((l) => /^(process|nodejs)_/.test(l) && l.includes('pod="'));
    assert.deepEqual(perPod.slice(0, 3), [], 'process_*/nodejs_* series under a pod\'s labels');
    assert.ok(m.split('\n').some((l) => l.startsWith('process_resident_memory_bytes')), 'the agent\'s own process metrics are missing');
    // One identity channel for every pod (TLS without a client certificate is the same for all), in the agent's own metrics.
    const identityBuilds = m.split('\n').filter((l) => l.startsWith('bpfmesh_control_channel_builds_total{') && l.includes('service="identity"'));
    assert.equal(identityBuilds.length, 1, `one identity channel for pods a, b, c expected:\n${identityBuilds.join('\n')}`);
    assert.ok(!identityBuilds[0]!.includes('pod="') && identityBuilds[0]!.endsWith(' 1'), identityBuilds[0]);
  });

  test('HTTP/2 (prior knowledge) from pod a to pod c', async () => {
    const c = pods.get('c')!;
    const r = await curl('a', ['--http2-prior-knowledge', `http://${c.ip}:8081/h2`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), `hello /h2 from ${c.ip}:8081 2.0`);
    const m = await agent.metrics();
    assert.ok(metricSum(m, 'bpfmesh_proxy_protocol_detected_total', ['protocol="h2"', 'pod="c"', 'direction="inbound"']) >= 1, 'c: h2 not detected inbound');
  });

  test('opaque TCP (a server-speaks-first port) from pod b to pod c', async () => {
    const c = pods.get('c')!;
    const r = await node.exec(pods.get('b')!.pod, 'sh', ['-c', `printf 'ping\\n' | nc -q 2 -w 5 ${c.ip} 3306`], APP);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /ping/);
    const m = await agent.metrics();
    assert.ok(metricSum(m, 'tcp_open_total', ['pod="b"', 'direction="outbound"']) >= 1, 'b: outbound TCP not counted under pod b');
  });

  test('an upstream connection leaves with the source pod\'s IP', async () => {
    const plain = pods.get('plain')!;
    const r = await curl('b', [`http://${plain.ip}:7000/`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim().replace('::ffff:', ''), `peer ${pods.get('b')!.ip}`);
    const m = await agent.metrics();
    assert.ok(metricSum(m, 'request_total', ['direction="outbound"', 'pod="b"']) >= 1, 'the request did not go through b\'s proxy');
  });

  test('a pod added under traffic is served; one removed under traffic is withdrawn and its netns freed', async () => {
    const b = pods.get('b')!;
    let stop = false;
    let ok = 0;
    let failed = 0;
    const load = (async () => {
      for (let i = 0; i < 400 && !stop; i++) {
        const r = await curl('a', [`http://${b.ip}:8080/load`]);
        if (r.code === 0 && r.stdout.includes('hello /load')) ok++;
        else failed++;
      }
    })();
    await podOnBridge('d');
    announce('d');
    await until('pod d served', () => agent.served('d'));
    const c = pods.get('c')!;
    // Without the proxy's fd and sockets, deleting the name frees the netns; while served, the proxy keeps it alive.
    sh('ip', ['netns', 'delete', c.pod.netnsName]);
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(vethExists(c.veth), 'the netns went while the node proxy still served it: the check below could not fail');
    node.removePod(c.pod);
    kube.deletePod('app', 'c');
    await agent.waitLog((r) => r.msg === 'pod no longer served' && r['pod'] === 'app/c', 'pod c withdrawn');
    await until('pod c netns freed (its veth peer gone from the hub)', () => !vethExists(c.veth), 10_000);
    stop = true;
    await load;
    assert.ok(ok > 0, 'no request succeeded under the changes');
    assert.equal(failed, 0, `${failed} requests a->b failed while pods came and went`);
    const r = await curl('a', [`http://${pods.get('d')!.ip}:7000/`]);
    // d has no app: its inbound proxy answers (502/503) rather than a refused connect: it is served.
    assert.equal(r.code, 0, r.stderr);
  });
  test('a pod with its own linkerd-proxy container keeps its sidecar: enrolled without the node proxy flag, not served', async () => {
    await podOnBridge('e');
    const e = pods.get('e')!;
    kube.setPod({ metadata: { name: 'e', namespace: 'app', uid: e.pod.uid, annotations: INJECT }, spec: { nodeName: NODE, serviceAccountName: 'sa-e', containers: [{ name: 'app' }, { name: 'linkerd-proxy' }] } });
    await agent.waitLog((r) => r.msg === 'interception in place' && r['uid'] === e.pod.uid, 'pod e enrolled');
    const maps = openNodeMaps(scope);
    try {
      const row = maps.settings.get(netnsCookieOf(e.pod.netns));
      assert.ok(row !== null, 'e has no settings row');
      assert.equal(row.flags & Flags.NODE_PROXY, 0, 'e enrolled for the node proxy although it has a sidecar');
      const a = maps.settings.get(netnsCookieOf(pods.get('a')!.pod.netns));
      assert.notEqual((a?.flags ?? 0) & Flags.NODE_PROXY, 0, 'a (no sidecar) lacks the node proxy flag');
    } finally {
      closeMaps(maps);
    }
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(!agent.served('e'), 'the node proxy serves a pod that has its own sidecar');
    assert.equal(sh('ip', ['netns', 'exec', e.pod.netnsName, 'ss', '-Htln', 'sport = :4140']).trim(), '', 'a listener on 4140 in e');
  });

  test('a pod the runtime adds through the CNI plugin (forwarded to the agent) is served by the node proxy from ADD on, enrolled once', async () => {
    const f = bridge.attach(node.createPod({ uid: fUid })); // netns and cgroup, no sandbox process yet: as at CNI ADD
    pods.set('f', f);
    assert.equal(f.ip, F_IP);
    announce('f'); // the pod is in the API (scheduled to this node) before its sandbox
    const add = await cniCall('ADD', 'f', F_CONTAINER);
    assert.equal(add.code, 0, add.stdout + add.stderr);
    assert.doesNotMatch(add.stderr, /did not answer/, 'the plugin ran in a process of its own, not in the agent');
    assert.ok(agent.records.some((r) => r.msg === 'CNI call served by the agent' && r['containerId'] === F_CONTAINER), 'the agent did not serve the ADD');
    // ADD returns once the node proxy listens in the pod: its app never starts before its proxy.
    assert.ok(agent.served('f'), 'ADD returned before the node proxy served the pod');
    const ss = sh('ip', ['netns', 'exec', f.pod.netnsName, 'ss', '-Htlnp']);
    for (const port of ['127.0.0.1:4140', '0.0.0.0:4143']) assert.match(ss, new RegExp(`${port.replace(/\./g, '\\.')} .*pid=${agent.child.pid},`), `f: no agent listener on ${port}:\n${ss}`);
    const maps = openNodeMaps(scope);
    try {
      assert.notEqual((maps.settings.get(netnsCookieOf(f.pod.netns))?.flags ?? 0) & Flags.NODE_PROXY, 0, 'f enrolled without the node proxy flag');
    } finally {
      closeMaps(maps);
    }
    // Its sandbox and app start; the agent meets the pod through the API and serves it under the same UID, enrolling nothing.
    await node.startSandbox(f.pod);
    const app = new PodProcess(node.spawn(f.pod, process.execPath, [APP_SERVER], APP));
    await app.waitFor((e) => e.event === 'ready');
    apps.push(app);
    await agent.waitLog((r) => r.msg === 'pod enrolled by the CNI plugin; the node proxy serves it' && r['uid'] === fUid, 'agent meets f through the API');
    const ids = listEnrolled(scope).map((e) => e.id);
    assert.ok(ids.includes(F_CONTAINER) && !ids.includes(fUid), `f enrolled twice or under the wrong id: ${ids.join(', ')}`);
    assert.equal(agent.records.filter((r) => r.msg === 'serving pod' && r['pod'] === 'app/f').length, 1, 'f served more than once');
    // a -> f over mTLS through both node proxies' pods, and f's outbound through its own.
    let who = '';
    await until('a -> f over mTLS', async () => {
      const r = await curl('a', [`http://${F_IP}:8080/whoami`]);
      who = r.stdout.trim();
      return who.includes(identityOf('a'));
    }, 15_000).catch((err: Error) => assert.fail(`${err.message}: last answer "${who}"`));
    const out = await curl('f', [`http://${pods.get('b')!.ip}:8080/from-f`]);
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stdout.trim(), `hello /from-f from ${pods.get('b')!.ip}:8080 1.1`);
    const m = await agent.metrics();
    assert.ok(metricSum(m, 'request_total', ['direction="inbound"', 'pod="f"', 'tls="true"', `client_id="${identityOf('a')}"`]) >= 1, 'f: no inbound mTLS request from a counted');
    assert.ok(metricSum(m, 'request_total', ['direction="outbound"', 'pod="f"', 'tls="true"', `server_id="${identityOf('b')}"`]) >= 1, 'f: outbound to b not through its proxy over mTLS');
    assert.ok(cp.certifies.some((e) => e.result === 'OK' && e.identity === identityOf('f')), 'f not certified as its own service account');
  });

  test('restarted under load: the new node proxy listens beside the old one, the old one drains; no request fails', async () => {
    const load = loadAtoB();
    // The new agent takes the CNI socket over too; it meets f (enrolled by the CNI plugin through the old one) through the API.
    const next = startAgent('bpfmesh-node-2', ['--cni-socket', cniSocket()]);
    await until('the new node proxy serves a, b, d and f', () => ['a', 'b', 'd', 'f'].every((n) => next.served(n)) || next.child.exitCode !== null, 60_000);
    const ss = sh('ip', ['netns', 'exec', pods.get('b')!.pod.netnsName, 'ss', '-Htlnp', 'sport = :4143']);
    assert.ok(ss.includes(`pid=${agent.child.pid},`) && ss.includes(`pid=${next.child.pid},`), `b: not both node proxies listening:\n${ss}`);
    assert.equal(sh('ip', ['netns', 'exec', pods.get('b')!.pod.netnsName, 'cat', '/proc/sys/net/ipv4/tcp_migrate_req']).trim(), '1');
    await new Promise((r) => setTimeout(r, 500));
    const old = agent;
    old.child.kill('SIGTERM');
    await old.waitLog((r) => r.msg === 'node proxy draining', 'old node proxy draining');
    await exited(old);
    agent = next;
    await new Promise((r) => setTimeout(r, 500));
    const { ok, failed } = await load.stop();
    assert.ok(ok >= 5, `only ${ok} requests during the handover`);
    assert.deepEqual(failed, [], `${failed.length} of ${ok + failed.length} requests failed during the handover`);
    const after = sh('ip', ['netns', 'exec', pods.get('b')!.pod.netnsName, 'ss', '-Htlnp', 'sport = :4143']);
    assert.ok(!after.includes(`pid=${old.child.pid},`), 'the old node proxy still listens');
  });

  test('CNI DEL through the new agent (the old one stopped) stops serving the pod and frees its netns', async () => {
    const f = pods.get('f')!;
    const r = await curl('a', [`http://${F_IP}:8080/before-del`]);
    assert.equal(r.code, 0, `the new node proxy does not serve f: ${r.stderr}`);
    // As the runtime tears a sandbox down: its processes stop, DEL runs, the netns goes.
    writeFileSync(join(f.pod.cgroup, 'cgroup.kill'), '1');
    sh('ip', ['netns', 'delete', f.pod.netnsName]);
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(vethExists(f.veth), 'f\'s netns went while the node proxy still served it: the check below could not fail');
    const del = await cniCall('DEL', 'f', F_CONTAINER);
    assert.equal(del.code, 0, del.stdout + del.stderr);
    assert.doesNotMatch(del.stderr, /did not answer/, 'the old agent\'s stop removed the new agent\'s CNI socket');
    assert.ok(agent.records.some((x) => x.msg === 'CNI call served by the agent' && x['command'] === 'DEL'), 'the new agent did not serve the DEL');
    await agent.waitLog((x) => x.msg === 'pod no longer served' && x['pod'] === 'app/f' && x['reason'] === 'cni_del', 'f withdrawn by DEL');
    assert.ok(!listEnrolled(scope).some((e) => e.id === F_CONTAINER), 'DEL left f enrolled');
    await until('f netns freed (its veth peer gone from the hub)', () => !vethExists(f.veth), 10_000);
    node.removePod(f.pod);
    kube.deletePod('app', 'f');
    pods.delete('f');
  });

  test('a pod whose node proxy is down fails closed: outbound and inbound refused, nothing bypasses', async () => {
    agent.child.kill('SIGKILL');
    await exited(agent);
    const b = pods.get('b')!;
    const out = await curl('a', [`http://${b.ip}:8080/closed`]);
    assert.equal(out.code, 7, `a -> b with the node proxy down: ${out.code} ${out.stdout}`);
    const inbound = await curl('plain', [`http://${b.ip}:8080/closed`]);
    assert.equal(inbound.code, 7, `unmeshed -> b with the node proxy down: ${inbound.code} ${inbound.stdout}`);
  });

  test('a pod the CNI plugin enrolled while no agent ran (in a process of its own) is served once an agent comes', async () => {
    const g = bridge.attach(node.createPod());
    pods.set('g', g);
    announce('g');
    const add = await cniCall('ADD', 'g', 'cni-sandbox-g');
    assert.equal(add.code, 0, add.stdout + add.stderr);
    // Its own log on the runtime's stderr (an agent would have logged it): it ran in a process of its own, without the node proxy.
    assert.match(add.stderr, /pod enrolled .*nodeProxy=false/, 'no agent runs: the plugin should have run in a process of its own');
    const flags = (): number => {
      const maps = openNodeMaps(scope);
      try {
        return maps.settings.get(netnsCookieOf(g.pod.netns))?.flags ?? -1;
      } finally {
        closeMaps(maps);
      }
    };
    assert.equal(flags() & Flags.NODE_PROXY, 0, 'enrolled without an agent, g should lack the node proxy flag (else this test proves nothing)');
    await node.startSandbox(g.pod);
    const late = startAgent('bpfmesh-node-g');
    try {
      await until('g served by the agent that came', () => late.served('g') || late.child.exitCode !== null, 60_000);
      assert.ok(late.served('g'), JSON.stringify(late.records.slice(-5)));
      assert.notEqual(flags() & Flags.NODE_PROXY, 0, 'the agent serves g without the node proxy flag on its row');
      const ids = listEnrolled(scope).map((e) => e.id);
      assert.ok(ids.includes('cni-sandbox-g') && !ids.includes(g.pod.uid), `g enrolled twice: ${ids.join(', ')}`);
      // g has no app: its inbound proxy answers (502/503) where a refused connect would fail: it is served.
      const r = await curl('a', [`http://${g.ip}:7000/`]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(metricSum(await late.metrics(), 'bpfmesh_proxy_protocol_detected_total', ['pod="g"', 'direction="inbound"']) >= 1, 'g: the connection did not reach its node proxy');
    } finally {
      late.child.kill('SIGKILL');
      await late.exited();
    }
  });

  test('with --fail-open, a pod whose node proxy is down is reached directly', async () => {
    const open = startAgent('bpfmesh-node-3', ['--fail-open']);
    await until('served again', () => ['a', 'b'].every((n) => open.served(n)) || open.child.exitCode !== null, 60_000);
    const b = pods.get('b')!;
    const through = await curl('a', [`http://${b.ip}:8080/open`]);
    assert.equal(through.code, 0, through.stderr);
    const before = metricSum(await open.metrics(), 'request_total', ['direction="inbound"', 'pod="b"']);
    assert.ok(before >= 1, 'the request did not go through the node proxy while it ran');
    open.child.kill('SIGKILL');
    await exited(open);
    const direct = await curl('a', [`http://${b.ip}:8080/open`]);
    assert.equal(direct.code, 0, `fail-open: ${direct.stderr}`);
    assert.equal(direct.stdout.trim(), `hello /open from ${b.ip}:8080 1.1`);
  });
  test('with --proxy-workers 1, two processes serve every pod side by side, and both let go of a removed pod', async () => {
    const multi = startAgent('bpfmesh-node-4', ['--proxy-workers', '1']);
    await until('served with a worker', () => ['a', 'b', 'd'].every((n) => multi.served(n)) || multi.child.exitCode !== null, 60_000);
    const b = pods.get('b')!;
    await until('two processes listening in b', () => {
      const pids = new Set([...sh('ip', ['netns', 'exec', b.pod.netnsName, 'ss', '-Htlnp', 'sport = :4143']).matchAll(/pid=(\d+),/g)].map((m) => m[1]));
      return pids.size === 2;
    }, 60_000);
    const before = metricSum(await multi.metrics(), 'request_total', ['direction="inbound"', 'pod="b"']);
    for (let i = 0; i < 30; i++) {
      const r = await curl('a', [`http://${b.ip}:8080/w${i}`]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), `hello /w${i} from ${b.ip}:8080 1.1`);
    }
    const after = metricSum(await multi.metrics(), 'request_total', ['direction="inbound"', 'pod="b"']);
    assert.equal(after - before, 30, 'the merged metrics of both processes miss requests');
    const d = pods.get('d')!;
    sh('ip', ['netns', 'delete', d.pod.netnsName]);
    node.removePod(d.pod);
    kube.deletePod('app', 'd');
    await until('pod d netns freed by both processes', () => !vethExists(d.veth), 15_000);
    multi.child.kill('SIGTERM');
    await exited(multi);
  });

  test('with --proxy-workers 1, a worker whose agent is killed goes too: nothing keeps listening in the pod', async () => {
    const multi = startAgent('bpfmesh-node-5', ['--proxy-workers', '1']);
    const b = pods.get('b')!;
    const listeners = (): Set<string> => new Set([...sh('ip', ['netns', 'exec', b.pod.netnsName, 'ss', '-Htlnp', 'sport = :4143']).matchAll(/pid=(\d+),/g)].map((m) => m[1]!));
    await until('two processes listening in b', () => listeners().size === 2 || multi.child.exitCode !== null, 60_000);
    const worker = [...listeners()].find((pid) => pid !== String(multi.child.pid));
    assert.ok(worker !== undefined, `no worker among the listeners of b: ${[...listeners()].join(', ')}`);
    multi.child.kill('SIGKILL');
    await exited(multi);
    await until(`worker ${worker} gone once its agent was killed`, () => !existsSync(`/proc/${worker}`), 10_000);
    assert.equal(listeners().size, 0, 'something still listens on the inbound port of b');
  });
});
