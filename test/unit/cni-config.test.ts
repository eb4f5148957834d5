// The CNI plugin's configuration: linkerd-cni's blocks, bpfmesh's own,
// the CNI_* environment and a pod's annotations.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { confVersion, decodeConf, DEFAULT_POLICY, parseNetConf } from '../../src/cni/config.js';
import { parseCniArgs, parseCniEnv, pinIdOf, requireContainerId, requireNetns } from '../../src/cni/env.js';
import { applyAnnotations, isMeshed } from '../../src/cni/annotations.js';
import { formatCidr } from '../../src/util/ip.js';
import { normalizePolicy } from '../../src/cni/plugin.js';

const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
};

// linkerd-cni's plugin entry as its Helm chart writes it, plus our block.
const LINKERD_CNI = {
  name: 'linkerd-cni',
  type: 'bpfmesh-cni',
  cniVersion: '1.0.0',
  log_level: 'debug',
  policy: { type: 'k8s', k8s_api_root: 'https://10.96.0.1:443', k8s_auth_token: 'x' },
  kubernetes: { kubeconfig: '/etc/cni/net.d/ZZZ-linkerd-cni-kubeconfig' },
  linkerd: {
    'incoming-proxy-port': 4143,
    'outgoing-proxy-port': 4140,
    'proxy-uid': 2102,
    'proxy-gid': 2103,
    'ports-to-redirect': [8080, 9090],
    'inbound-ports-to-ignore': ['4191', '4190', '25-27'],
    'outbound-ports-to-ignore': ['443'],
    'subnets-to-ignore': ['10.0.0.0/8', 'fd00::/8'],
    simulate: false,
    'use-wait-flag': true,
  },
  bpfmesh: { cgroup_root: '/sys/fs/cgroup/test/', bpffs: '/tmp/bpffs', fail_open: true, sockpath: false },
  prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.1.0.5/24' }] },
};

describe('network configuration', () => {
  test('linkerd-cni keys become the pod policy; unknown keys (policy, use-wait-flag) are ignored', () => {
    const c = parseNetConf(LINKERD_CNI);
    assert.equal(c.cniVersion, '1.0.0');
    assert.equal(c.logLevel, 'debug');
    assert.deepEqual(c.kubernetes, { apiRoot: undefined, kubeconfig: '/etc/cni/net.d/ZZZ-linkerd-cni-kubeconfig' });
    assert.deepEqual(c.prevResult, LINKERD_CNI.prevResult);
    const p = c.policy;
    assert.equal(p.incomingProxyPort, 4143);
    assert.equal(p.outgoingProxyPort, 4140);
    assert.equal(p.proxyUid, 2102);
    assert.equal(p.proxyGid, 2103);
    assert.deepEqual(p.portsToRedirect, [{ lo: 8080, hi: 8080 }, { lo: 9090, hi: 9090 }]);
    assert.deepEqual(p.inboundPortsToIgnore, [{ lo: 4191, hi: 4191 }, { lo: 4190, hi: 4190 }, { lo: 25, hi: 27 }]);
    assert.deepEqual(p.outboundPortsToIgnore, [{ lo: 443, hi: 443 }]);
    assert.deepEqual(p.subnetsToIgnore.map(formatCidr), ['10.0.0.0/8', 'fd00::/8']);
    assert.equal(p.failOpen, true);
    assert.equal(p.sockpath, false);
    assert.equal(p.adminPort, 4191);
    assert.equal(p.controlPort, 4190);
    assert.deepEqual(c.bpfmesh, { cgroupRoot: '/sys/fs/cgroup/test', bpffs: '/tmp/bpffs', bpffsExplicit: true, logFile: undefined, logFormat: 'plain' });
  });

  test('bpfmesh.sockpath_high_water: bytes or a size string; a bad one is a configuration error', () => {
    const conf = (v: unknown): Record<string, unknown> => ({ cniVersion: '1.0.0', name: 'n', type: 'bpfmesh-cni', bpfmesh: { sockpath_high_water: v } });
    assert.equal(parseNetConf(conf(1 << 20)).policy.sockpathHighWater, 1 << 20);
    assert.equal(parseNetConf(conf('8Mi')).policy.sockpathHighWater, 8 << 20);
    assert.throws(() => parseNetConf(conf('lots')), /sockpath_high_water/);
    assert.throws(() => parseNetConf(conf(true)), /sockpath_high_water/);
  });

  test("without linkerd and bpfmesh blocks: proxy-init's defaults, the host's bpffs, no kubernetes lookup", () => {
    const c = parseNetConf({ cniVersion: '0.4.0', name: 'n', type: 'bpfmesh-cni' });
    assert.deepEqual(c.policy, DEFAULT_POLICY);
    assert.equal(c.kubernetes, undefined);
    assert.equal(c.simulate, false);
    assert.equal(c.prevResult, undefined);
    assert.deepEqual(c.bpfmesh, { cgroupRoot: undefined, bpffs: '/sys/fs/bpf', bpffsExplicit: false, logFile: undefined, logFormat: 'plain' });
  });

  test('proxy-gid -1 means none; ports may be numeric strings; a comma list in one string works', () => {
    const c = parseNetConf({ cniVersion: '1.1.0', linkerd: { 'proxy-gid': -1, 'incoming-proxy-port': '5143', 'outbound-ports-to-ignore': '22,3306', 'subnets-to-ignore': ['10.1.0.0/16,10.2.0.0/16'] } });
    assert.equal(c.policy.proxyGid, undefined);
    assert.equal(c.policy.incomingProxyPort, 5143);
    assert.deepEqual(c.policy.outboundPortsToIgnore, [{ lo: 22, hi: 22 }, { lo: 3306, hi: 3306 }]);
    assert.equal(c.policy.subnetsToIgnore.length, 2);
  });

  test('bad values name the key and carry a stable code', () => {
    const conf = (linkerd: Record<string, unknown>): Record<string, unknown> => ({ cniVersion: '1.0.0', linkerd });
    assert.equal(codeOf(() => parseNetConf(conf({ 'incoming-proxy-port': 70000 }))), 'BPFMESH_E_BAD_PORT');
    assert.equal(codeOf(() => parseNetConf(conf({ 'outgoing-proxy-port': true }))), 'BPFMESH_E_BAD_PORT');
    assert.equal(codeOf(() => parseNetConf(conf({ 'inbound-ports-to-ignore': ['90-80'] }))), 'BPFMESH_E_BAD_PORT_RANGE');
    assert.equal(codeOf(() => parseNetConf(conf({ 'ports-to-redirect': [{}] }))), 'BPFMESH_E_BAD_PORT');
    assert.equal(codeOf(() => parseNetConf(conf({ 'subnets-to-ignore': ['10.0.0.0/33'] }))), 'BPFMESH_E_BAD_CIDR');
    assert.equal(codeOf(() => parseNetConf(conf({ 'proxy-uid': 'root' }))), 'BPFMESH_E_CNI_CONFIG');
    assert.equal(codeOf(() => parseNetConf(conf({ simulate: 'yes' }))), 'BPFMESH_E_CNI_CONFIG');
    assert.equal(codeOf(() => parseNetConf({ cniVersion: '1.0.0', linkerd: [] })), 'BPFMESH_E_CNI_CONFIG');
    assert.equal(codeOf(() => parseNetConf({ cniVersion: '1.0.0', log_level: 'loud' })), 'BPFMESH_E_CNI_CONFIG');
    assert.equal(codeOf(() => parseNetConf({ cniVersion: '1.0.0', prevResult: 'x' })), 'BPFMESH_E_CNI_CONFIG');
    assert.equal(codeOf(() => parseNetConf({ name: 'no version' })), 'BPFMESH_E_CNI_CONFIG');
    assert.throws(() => parseNetConf(conf({ 'incoming-proxy-port': 70000 })), /linkerd\.incoming-proxy-port: "70000" is not a port/);
  });

  test('decoding and versions', () => {
    assert.equal(codeOf(() => decodeConf('{nope')), 'BPFMESH_E_CNI_DECODE');
    assert.equal(codeOf(() => decodeConf('[1]')), 'BPFMESH_E_CNI_DECODE');
    assert.equal(confVersion({ cniVersion: '0.3.1' }), '0.3.1');
    assert.equal(confVersion({}), undefined);
    assert.equal(codeOf(() => confVersion({ cniVersion: '0.2.0' })), 'BPFMESH_E_CNI_VERSION');
    assert.equal(codeOf(() => confVersion({ cniVersion: 1 })), 'BPFMESH_E_CNI_VERSION');
  });

  test('GC: cni.dev/valid-attachments', () => {
    const c = parseNetConf({ cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{ containerID: 'abc', ifname: 'eth0' }] });
    assert.deepEqual(c.validAttachments, [{ containerId: 'abc', ifname: 'eth0' }]);
    assert.equal(codeOf(() => parseNetConf({ cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{}] })), 'BPFMESH_E_CNI_CONFIG');
  });
});

describe('CNI environment', () => {
  test('CNI_* variables and CNI_ARGS', () => {
    const env = parseCniEnv({
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: 'c0ffee',
      CNI_NETNS: '/run/netns/x',
      CNI_IFNAME: 'eth0',
      CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=c0ffee',
      CNI_PATH: '/opt/cni/bin:/usr/lib/cni',
    });
    assert.equal(env.command, 'ADD');
    assert.equal(env.args['K8S_POD_NAMESPACE'], 'default');
    assert.equal(env.args['K8S_POD_NAME'], 'web-0');
    assert.deepEqual(env.path, ['/opt/cni/bin', '/usr/lib/cni']);
    assert.equal(requireContainerId(env), 'c0ffee');
    assert.equal(requireNetns(env), '/run/netns/x');
  });

  test('missing or bad variables are BPFMESH_E_CNI_ENV', () => {
    assert.equal(codeOf(() => parseCniEnv({})), 'BPFMESH_E_CNI_ENV');
    assert.equal(codeOf(() => parseCniEnv({ CNI_COMMAND: 'FROB' })), 'BPFMESH_E_CNI_ENV');
    assert.equal(codeOf(() => parseCniArgs('K8S_POD_NAME')), 'BPFMESH_E_CNI_ENV');
    const del = parseCniEnv({ CNI_COMMAND: 'DEL', CNI_NETNS: '' });
    assert.equal(del.netns, undefined, 'an empty CNI_NETNS is no netns');
    assert.equal(codeOf(() => requireNetns(del)), 'BPFMESH_E_CNI_ENV');
    assert.equal(codeOf(() => requireContainerId(del)), 'BPFMESH_E_CNI_ENV');
    assert.equal(codeOf(() => requireContainerId(parseCniEnv({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: '../etc' }))), 'BPFMESH_E_CNI_ENV');
  });

  test('container ids with dots get a pin name bpffs accepts', () => {
    assert.equal(pinIdOf('pod.a-1_b'), 'pod_a-1_b');
  });
});

describe('pod annotations', () => {
  test('meshed: linkerd.io/inject enabled, or an injected linkerd-proxy container; disabled wins', () => {
    assert.equal(isMeshed({ metadata: { annotations: { 'linkerd.io/inject': 'enabled' } } }), true);
    assert.equal(isMeshed({ metadata: { annotations: {} } }), false);
    assert.equal(isMeshed({ metadata: {}, spec: { containers: [{ name: 'app' }, { name: 'linkerd-proxy' }] } }), true);
    assert.equal(isMeshed({ metadata: { annotations: { 'linkerd.io/inject': 'disabled' } }, spec: { containers: [{ name: 'linkerd-proxy' }] } }), false);
  });

  test('config.linkerd.io annotations replace the block settings', () => {
    const base = parseNetConf(LINKERD_CNI).policy;
    const p = applyAnnotations(base, {
      'config.linkerd.io/skip-outbound-ports': '5432,6000-6010',
      'config.linkerd.io/skip-inbound-ports': '9000',
      'config.linkerd.io/skip-subnets': '192.168.0.0/16',
      'config.linkerd.io/proxy-uid': '3000',
      'config.linkerd.io/proxy-gid': '3001',
    });
    assert.deepEqual(p.outboundPortsToIgnore, [{ lo: 5432, hi: 5432 }, { lo: 6000, hi: 6010 }]);
    assert.deepEqual(p.inboundPortsToIgnore, [{ lo: 9000, hi: 9000 }]);
    assert.deepEqual(p.subnetsToIgnore.map(formatCidr), ['192.168.0.0/16']);
    assert.equal(p.proxyUid, 3000);
    assert.equal(p.proxyGid, 3001);
    assert.equal(p.incomingProxyPort, 4143, 'the rest stays');
    assert.deepEqual(applyAnnotations(base, { 'config.linkerd.io/skip-outbound-ports': '' }), base, 'empty annotations change nothing');
    assert.equal(codeOf(() => applyAnnotations(base, { 'config.linkerd.io/skip-outbound-ports': 'http' })), 'BPFMESH_E_BAD_PORT');
    assert.throws(() => applyAnnotations(base, { 'config.linkerd.io/skip-subnets': 'x' }), /annotation config\.linkerd\.io\/skip-subnets/);
  });
});

describe('policy normalization', () => {
  test("repeats and the always-ignored admin/control ports are dropped, so CHECK compares like with like", () => {
    const p = parseNetConf({
      cniVersion: '1.0.0',
      linkerd: { 'inbound-ports-to-ignore': ['4191', '4190', '25', '25', '4190-4191'], 'outbound-ports-to-ignore': ['443', '443', '8000-8002', '8002'], 'subnets-to-ignore': ['10.0.0.0/8', '10.0.0.0/8'] },
    }).policy;
    const n = normalizePolicy(p);
    assert.deepEqual(n.inboundPortsToIgnore, [{ lo: 25, hi: 25 }, { lo: 4190, hi: 4191 }]);
    assert.deepEqual(n.outboundPortsToIgnore, [{ lo: 443, hi: 443 }, { lo: 8000, hi: 8001 }, { lo: 8002, hi: 8002 }], 'as aligned blocks, each once');
    assert.deepEqual(n.subnetsToIgnore.map(formatCidr), ['10.0.0.0/8']);
    assert.deepEqual(normalizePolicy(n), n, 'idempotent');
  });
});
