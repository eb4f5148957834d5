// The pure parts of `bpfmesh check`: the helper list against the helpers
// bpf/ calls, kernel version parsing, CapEff decoding, proxy-init chain
// detection in iptables-save output.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../../src/config/paths.js';
import { HELPERS } from '../../src/check/requirements.js';
import { checkKernelVersion, kernelVersion } from '../../src/check/kernel.js';
import { checkBpffs, checkCapabilities, effectiveCaps } from '../../src/check/host.js';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { proxyInitChains } from '../../src/check/iptables.js';
import { AGENT_READY_TIMEOUT_MS, checkAgentReady } from '../../src/check/installed.js';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

describe('check parts', () => {
  test('every helper bpf/ calls is probed', () => {
    const dir = join(REPO_ROOT, 'bpf');
    const src = readdirSync(dir).filter((f) => /\.(c|h)$/.test(f)).map((f) => readFileSync(join(dir, f), 'utf8')).join('\n');
    const called = new Set([...src.matchAll(/\bbpf_([a-z0-9_]+)\(/g)].map((m) => m[1]!));
    for (const macro of ['htonl', 'htons', 'ntohl', 'ntohs']) called.delete(macro); // bpf_endian.h macros, not helpers
    // bpf_core_read.h: bpf_core_read() and BPF_CORE_READ() are bpf_probe_read_kernel() calls.
    if (called.delete('core_read') || /\bBPF_CORE_READ\(/.test(src)) called.add('probe_read_kernel');
    const probed = new Set(Object.values(HELPERS).flat());
    for (const h of called) assert.ok(probed.has(h), `bpf/ calls bpf_${h}; add it to HELPERS in src/check/requirements.ts (and native/probe.cc kHelpers)`);
  });

  test('kernel version: parsed, 6.1 is the floor', () => {
    assert.deepEqual(kernelVersion('6.18.44-fc-v1272'), [6, 18, 44]);
    assert.deepEqual(kernelVersion('6.1.0-27-amd64'), [6, 1, 0]);
    assert.equal(checkKernelVersion('6.1.0-27-amd64').ok, true);
    assert.equal(checkKernelVersion('7.0.1').ok, true);
    const old = checkKernelVersion('5.15.0-91-generic');
    assert.equal(old.ok, false);
    assert.equal(old.code, 'BPFMESH_E_KERNEL_FEATURE');
    assert.equal(checkKernelVersion('not-a-version').ok, false);
  });

  test('capabilities from CapEff', () => {
    assert.equal(effectiveCaps('Name:\tx\nCapEff:\t000001ffffffffff\n'), 0x1ffffffffffn);
    assert.equal(checkCapabilities(true, 0x1ffffffffffn).ok, true);
    const bpfOnly = (1n << 39n) | (1n << 12n) | (1n << 21n);
    assert.equal(checkCapabilities(false, bpfOnly).ok, true);
    const node = checkCapabilities(true, bpfOnly);
    assert.equal(node.ok, false);
    assert.match(node.detail, /missing CAP_SYS_PTRACE/);
    const none = checkCapabilities(false, 0n);
    assert.equal(none.code, 'BPFMESH_E_PERMISSION');
    assert.match(none.detail, /CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN/);
  });

  test('bpffs: a default one not mounted yet passes only before install', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bpfmesh-notbpffs-'));
    try {
      assert.equal(checkBpffs(dir, false, true).ok, true, 'init mounts the default one');
      assert.equal(checkBpffs(dir, false, false).code, 'BPFMESH_E_NO_BPFFS', 'installed pins need it mounted');
      assert.equal(checkBpffs(dir, true, true).code, 'BPFMESH_E_NO_BPFFS', 'an explicit --bpffs must be one');
    } finally {
      rmdirSync(dir);
    }
  });

  test('agent /ready: 200 passes; 503, silence and a closed port fail with NOT_READY, bounded in time', async () => {
    const listen = (s: Server): Promise<string> =>
      new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(s.address() as AddressInfo).port}/ready`)));
    const ok = createServer((_q, r) => r.writeHead(200).end('ready\n'));
    const notYet = createServer((_q, r) => r.writeHead(503).end());
    const silent = createServer(() => undefined); // accepts, never answers
    const closed = createServer();
    try {
      assert.equal((await checkAgentReady(await listen(ok))).ok, true);
      const l503 = await checkAgentReady(await listen(notYet));
      assert.equal(l503.code, 'BPFMESH_E_NOT_READY');
      assert.match(l503.detail, /answers 503/);
      const started = Date.now();
      const quiet = await checkAgentReady(await listen(silent));
      assert.match(quiet.detail, /no answer within/);
      assert.ok(Date.now() - started < AGENT_READY_TIMEOUT_MS + 2000, 'bounded');
      const url = await listen(closed);
      await new Promise((resolve) => closed.close(resolve));
      assert.equal((await checkAgentReady(url)).code, 'BPFMESH_E_NOT_READY');
    } finally {
      for (const s of [ok, notYet, silent]) {
        s.closeAllConnections();
        s.close();
      }
    }
  });

  test('proxy-init chains in iptables-save output', () => {
    const save = [
      '*nat',
      ':PREROUTING ACCEPT [0:0]',
      ':OUTPUT ACCEPT [0:0]',
      ':PROXY_INIT_OUTPUT - [0:0]',
      ':PROXY_INIT_REDIRECT - [0:0]',
      '-A PREROUTING -m comment --comment "proxy-init/install-proxy-init-prerouting" -j PROXY_INIT_REDIRECT',
      'COMMIT',
    ].join('\n');
    assert.deepEqual(proxyInitChains(save), ['PROXY_INIT_OUTPUT', 'PROXY_INIT_REDIRECT']);
    assert.deepEqual(proxyInitChains('*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n'), []);
  });
});
