// The plain-JS SHA-256 `bpfmesh init` uses for its layout id (src/util/sha256.ts)
// against node:crypto, across the padding boundaries and multi-byte UTF-8.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { sha256Hex } from '../../src/util/sha256.js';

test('sha256Hex matches node:crypto for every length 0..300 and for UTF-8 text', () => {
  const inputs: string[] = [];
  for (let n = 0; n <= 300; n++) inputs.push('abcdefghijklmnopqrstuvwxyz0123456789'.repeat(9).slice(0, n));
  inputs.push('mesh_settings 2 4 64 1 0\nmesh_conns 9 8 16 65536 0', 'é→😀'.repeat(30), 'abc');
  for (const s of inputs) assert.equal(sha256Hex(s), createHash('sha256').update(s, 'utf8').digest('hex'), `length ${s.length}`);
  assert.equal(sha256Hex('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
});

test('bpfmesh init loads no node:crypto (OpenSSL start-up costs ~14 ms)', () => {
  const initJs = join(__dirname, '..', '..', 'src', 'cli', 'init.js');
  const probe = `require(${JSON.stringify(initJs)}); require(${JSON.stringify(join(__dirname, '..', '..', 'src', 'intercept', 'versions.js'))}).layoutIdOf([]); process.stdout.write(JSON.stringify(process.moduleLoadList));`;
  const r = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const loaded = JSON.parse(r.stdout) as string[];
  assert.ok(loaded.includes('NativeModule fs'), 'the probe saw the builtins');
  assert.deepEqual(loaded.filter((m) => /^NativeModule (crypto|internal\/crypto\/)/.test(m)), []);
});
