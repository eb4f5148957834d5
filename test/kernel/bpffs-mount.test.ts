// ensureBpffs mounts a bpffs where the default place has none: the mount
// path loads node:child_process on first use (src/intercept/mounts.ts), so
// `init` does not load it when bpffs is already there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBpffs, isBpffs } from '../../src/intercept/mounts.js';
import { uniquePrefix } from '../../src/lab/lab.js';
import { kernelSkipReason } from '../helpers/root.js';

test('ensureBpffs mounts a bpffs on a directory that has none, and leaves an existing one alone', { skip: kernelSkipReason() }, () => {
  const parent = mkdtempSync(join(tmpdir(), `${uniquePrefix('bpffs')}-`));
  const dir = join(parent, 'bpf');
  try {
    ensureBpffs(dir, false);
    assert.ok(isBpffs(dir), `${dir} is a bpffs after ensureBpffs`);
    ensureBpffs(dir, false);
    ensureBpffs(dir, true);
  } finally {
    try {
      execFileSync('umount', [dir], { stdio: 'pipe' });
    } catch {
      // not mounted (the test failed before the mount)
    }
    rmSync(parent, { recursive: true, force: true });
  }
});

test('init loads no node:child_process when bpffs is mounted', { skip: kernelSkipReason() }, () => {
  const mounts = join(__dirname, '..', '..', 'src', 'intercept', 'mounts.js');
  const probe = `const m = require(${JSON.stringify(mounts)}); m.ensureBpffs('/sys/fs/bpf', false); process.stdout.write(JSON.stringify(process.moduleLoadList));`;
  const loaded = JSON.parse(execFileSync(process.execPath, ['-e', probe], { encoding: 'utf8' })) as string[];
  assert.ok(loaded.includes('NativeModule fs'), 'the probe saw the builtins');
  assert.ok(!loaded.includes('NativeModule child_process'), 'child_process loaded');
});
