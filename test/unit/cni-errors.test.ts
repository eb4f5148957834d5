// CNI error objects and codes, and the commands that need no kernel:
// VERSION, and ADD/CHECK/DEL/STATUS calls rejected before touching it.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { BpfmeshError, ErrorCodes } from '../../src/errors.js';
import { BPFMESH_CNI_CODES, cniCodeOf, SUPPORTED_VERSIONS, toCniError, versionAtLeast } from '../../src/cni/spec.js';
import { runCni, type CniDeps } from '../../src/cni/plugin.js';
import { createLogger } from '../../src/log/logger.js';

// No call here may reach the Kubernetes API or the kernel.
const deps: CniDeps = {
  getPod: () => Promise.reject(new Error('no pod lookup expected')),
  logger: () => createLogger({ logFormat: 'plain', logLevel: 'silent' }),
};

const CNI_ENV = { CNI_CONTAINERID: 'c1', CNI_NETNS: '/run/netns/none', CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' };
const conf = (extra: Record<string, unknown> = {}): string => JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'bpfmesh-cni', ...extra });

async function call(command: string, stdin: string, env: Record<string, string> = CNI_ENV): Promise<{ exitCode: number; out: Record<string, unknown> | null; raw: string }> {
  const r = await runCni({ ...env, CNI_COMMAND: command }, stdin, deps);
  return { exitCode: r.exitCode, out: r.stdout === '' ? null : (JSON.parse(r.stdout) as Record<string, unknown>), raw: r.stdout };
}

describe('CNI error codes', () => {
  test("spec codes for the spec's conditions, 100+ for ours, 11 for what passes", () => {
    assert.equal(cniCodeOf(ErrorCodes.CNI_VERSION), 1);
    assert.equal(cniCodeOf(ErrorCodes.CNI_ENV), 4);
    assert.equal(cniCodeOf(ErrorCodes.CNI_DECODE), 6);
    assert.equal(cniCodeOf(ErrorCodes.CNI_CONFIG), 7);
    assert.equal(cniCodeOf(ErrorCodes.BAD_PORT), 7);
    assert.equal(cniCodeOf(ErrorCodes.BAD_CIDR), 7);
    assert.equal(cniCodeOf(ErrorCodes.KUBE_API), 11);
    assert.equal(cniCodeOf(ErrorCodes.BUSY), 11);
    assert.equal(cniCodeOf(ErrorCodes.PERMISSION), 101);
    assert.equal(cniCodeOf(ErrorCodes.NOT_INSTALLED), 107);
    assert.equal(cniCodeOf(ErrorCodes.MISMATCH), 117);
    assert.equal(cniCodeOf('BPFMESH_E_SOMETHING_NEW'), 100);
    const codes = Object.values(BPFMESH_CNI_CODES);
    assert.equal(new Set(codes).size, codes.length, 'no two codes share a number');
    assert.ok(codes.every((n) => n >= 100), 'the spec reserves 0-99');
  });

  test('the error object: cniVersion, code, msg (what to do), details (our code)', () => {
    const e = toCniError(new BpfmeshError(ErrorCodes.NO_NETNS, 'network namespace /x does not exist', { errno: 2, syscall: 'open' }), '0.4.0');
    assert.deepEqual(e, { cniVersion: '0.4.0', code: 104, msg: 'network namespace /x does not exist', details: 'BPFMESH_E_NO_NETNS; syscall open; errno 2' });
    const internal = toCniError(new TypeError('boom'), '9.9.9');
    assert.equal(internal.cniVersion, '1.1.0', 'an unknown version answers with the newest');
    assert.equal(internal.code, 100);
    assert.match(internal.msg, /boom.*report it/);
    assert.equal(toCniError(null, '1.0.0').code, 100);
  });

  test('versions compare numerically', () => {
    assert.equal(versionAtLeast('0.4.0', '0.4.0'), true);
    assert.equal(versionAtLeast('1.0.0', '0.4.0'), true);
    assert.equal(versionAtLeast('0.3.1', '0.4.0'), false);
    assert.equal(versionAtLeast('0.10.0', '0.4.0'), true);
  });
});

describe('commands without the kernel', () => {
  test('VERSION lists what we speak, in the version asked with', async () => {
    const r = await call('VERSION', conf());
    assert.equal(r.exitCode, 0);
    assert.deepEqual(r.out, { cniVersion: '1.0.0', supportedVersions: [...SUPPORTED_VERSIONS] });
    assert.deepEqual((await call('VERSION', '', {})).out, { cniVersion: '1.1.0', supportedVersions: [...SUPPORTED_VERSIONS] });
    assert.equal((await call('VERSION', JSON.stringify({ cniVersion: '0.1.0' }), {})).out?.['cniVersion'], '1.1.0');
  });

  test('bad JSON is code 6, an unknown version 1, a bad port 7, no prevResult on ADD 7', async () => {
    const bad = await call('ADD', '{"cniVersion":');
    assert.equal(bad.exitCode, 1);
    assert.equal(bad.out?.['code'], 6);
    const old = await call('ADD', JSON.stringify({ cniVersion: '0.2.0' }));
    assert.equal(old.out?.['code'], 1);
    assert.match(String(old.out?.['msg']), /speaks 0\.3\.0, 0\.3\.1, 0\.4\.0, 1\.0\.0, 1\.1\.0/);
    const port = await call('ADD', conf({ linkerd: { 'outgoing-proxy-port': 0 }, prevResult: { cniVersion: '1.0.0' } }));
    assert.deepEqual(port.out, { cniVersion: '1.0.0', code: 7, msg: 'linkerd.outgoing-proxy-port: "0" is not a port (1-65535)', details: 'BPFMESH_E_BAD_PORT' });
    const noPrev = await call('ADD', conf());
    assert.equal(noPrev.out?.['code'], 7);
    assert.match(String(noPrev.out?.['msg']), /prevResult is missing.*chained plugin/);
  });

  test('missing CNI_* variables are code 4; CHECK before 0.4.0 is code 1', async () => {
    assert.equal((await call('ADD', conf({ prevResult: {} }), { CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0' })).out?.['code'], 4);
    assert.equal((await call('ADD', conf({ prevResult: {} }), { CNI_NETNS: '/x', CNI_IFNAME: 'eth0' })).out?.['code'], 4);
    assert.equal((await call('ADD', conf(), {})).out?.['code'], 4, 'no CNI_COMMAND at all');
    const r = await runCni({}, conf(), deps);
    assert.equal(r.exitCode, 1);
    assert.equal(r.error?.code, 'BPFMESH_E_CNI_ENV');
    assert.equal((await call('CHECK', JSON.stringify({ cniVersion: '0.3.1', prevResult: {} }))).out?.['code'], 1);
  });

  test('simulate: ADD passes prevResult through and CHECK/DEL succeed, changing nothing', async () => {
    const prevResult = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0' }], ips: [{ address: '10.9.0.2/24', gateway: '10.9.0.1' }] };
    const add = await call('ADD', conf({ linkerd: { simulate: true }, prevResult, bpfmesh: { bpffs: '/nonexistent' } }));
    assert.equal(add.exitCode, 0);
    assert.deepEqual(add.out, prevResult);
    assert.equal((await call('DEL', conf({ linkerd: { simulate: true } }))).raw, '');
  });

  test('DEL with no node-wide install, no CNI_NETNS and no CNI_IFNAME succeeds', async () => {
    const r = await call('DEL', conf({ bpfmesh: { bpffs: '/nonexistent-bpffs' } }), { CNI_CONTAINERID: 'gone', CNI_NETNS: '' });
    assert.equal(r.exitCode, 0);
    assert.equal(r.raw, '');
  });
});
