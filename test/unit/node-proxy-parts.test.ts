// Parts of the node proxy that need no kernel: the forwarded CNI call's
// framing (native/cni-forward.c writes it) and the new `bpfmesh node` flags.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCniRequest } from '../../src/node/cni-server.js';
import { parseNodeFlags } from '../../src/node/flags.js';
import { BpfmeshError } from '../../src/errors.js';

const frame = (entries: string[], conf: string): Buffer => Buffer.concat([Buffer.from('BPFMESH-CNI 1\n'), ...entries.map((e) => Buffer.from(`${e}\0`)), Buffer.from('\0'), Buffer.from(conf)]);

test('a forwarded CNI call: CNI_* variables, then the configuration verbatim', () => {
  const r = parseCniRequest(frame(['CNI_COMMAND=ADD', 'CNI_ARGS=K8S_POD_NAME=a;IgnoreUnknown=1', 'CNI_NETNS='], '{"cniVersion":"1.0.0"}\n'));
  assert.deepEqual(r, { env: { CNI_COMMAND: 'ADD', CNI_ARGS: 'K8S_POD_NAME=a;IgnoreUnknown=1', CNI_NETNS: '' }, stdin: '{"cniVersion":"1.0.0"}\n' });
});

test('anything else is not a forwarded call: no magic, a variable that is not CNI_*, no end of the variables', () => {
  assert.equal(parseCniRequest(Buffer.from('GET / HTTP/1.1\r\n\r\n')), null);
  assert.equal(parseCniRequest(frame(['PATH=/bin'], '{}')), null);
  assert.equal(parseCniRequest(frame(['CNI_COMMAND'], '{}')), null);
  assert.equal(parseCniRequest(Buffer.from('BPFMESH-CNI 1\nCNI_COMMAND=ADD')), null);
});

test('bpfmesh node --proxy, --proxy-workers, --cni-socket', () => {
  const o = parseNodeFlags(['--node-name', 'n', '--proxy', '--proxy-workers', '3', '--cni-socket', '/run/bpfmesh/cni.sock'], {});
  assert.equal(o.proxy, true);
  assert.equal(o.proxyWorkers, 3);
  assert.equal(o.cniSocket, '/run/bpfmesh/cni.sock');
  const d = parseNodeFlags(['--node-name', 'n'], {});
  assert.deepEqual([d.proxy, d.proxyWorkers, d.cniSocket], [false, 0, undefined]);
  for (const bad of ['-1', 'two', '65', '1.5']) {
    assert.throws(() => parseNodeFlags(['--node-name', 'n', '--proxy-workers', bad], {}), (e: unknown) => e instanceof BpfmeshError && e.code === 'BPFMESH_E_BAD_FLAG' && e.message.includes('--proxy-workers'));
  }
});
