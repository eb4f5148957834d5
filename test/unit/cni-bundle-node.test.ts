// The Node that cni-install copies onto every host: it must be one the
// install supports (package.json engines), checked before anything lands on
// the host; the repo's own engines ask for the Node CI runs on.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { REPO_ROOT } from '../../src/config/paths.js';
import { nodeVersionOf, requiredNodeMajor, syncBundle } from '../../src/cni/installer.js';

const root = mkdtempSync(join(tmpdir(), 'bpfmesh-bundle-node-'));
after(() => rmSync(root, { recursive: true, force: true }));

function write(path: string, text: string, mode = 0o644): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
  chmodSync(path, mode);
}

/** A minimal built install whose package.json asks for `engines`. */
function source(engines: string): string {
  const dir = mkdtempSync(join(root, 'src-'));
  write(join(dir, 'package.json'), JSON.stringify({ name: 'bpfmesh', engines: { node: engines } }));
  for (const f of ['bin/bpfmesh.js', 'bin/bpfmesh-cni', 'dist/src/cli/main.js', 'node_modules/x/index.js', 'proto/net.proto', 'build/Release/bpfmesh.node', 'build/bpf/intercept.bpf.o']) write(join(dir, f), 'x\n', 0o755);
  return dir;
}

/** A stand-in Node that reports `version` (as `node -p process.versions.node` would). */
function fakeNode(version: string): string {
  const path = join(mkdtempSync(join(root, 'node-')), 'node');
  write(path, `#!/bin/sh\necho ${version}\n`, 0o755);
  return path;
}

describe('the Node in the CNI bundle', () => {
  test('engines.node gives the lowest supported major', () => {
    const dir = (e: string): string => source(e);
    assert.equal(requiredNodeMajor(dir('>=22')), 22);
    assert.equal(requiredNodeMajor(dir('>=22.12.0')), 22);
    assert.equal(requiredNodeMajor(dir('^22 || >=24')), 22);
    assert.equal(requiredNodeMajor(dir('24.x')), 24);
    assert.equal(requiredNodeMajor(root), undefined, 'no package.json: no requirement');
  });

  test('a Node older than engines is refused before anything is copied; a supported one is copied', () => {
    const src = source('>=22');
    const bundle = join(root, 'bundle-old');
    assert.throws(() => syncBundle(src, fakeNode('20.20.2'), bundle), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'BPFMESH_E_CNI_INSTALL');
      assert.match(e.message, /is 20\.20\.2; bpfmesh needs Node 22\+/);
      return true;
    });
    assert.equal(existsSync(bundle), false, 'nothing written');

    const ok = join(root, 'bundle-24');
    syncBundle(src, fakeNode('24.22.3'), ok);
    assert.equal(readFileSync(join(ok, 'bin/node'), 'utf8'), '#!/bin/sh\necho 24.22.3\n');
  });

  test('a Node that does not run here is refused with the reason', () => {
    const broken = fakeNode('x');
    write(broken, '#!/bin/sh\nexit 3\n', 0o755);
    assert.throws(() => syncBundle(source('>=22'), broken, join(root, 'bundle-broken')), /does not run/);
  });

  test(`the repo asks for the Node it runs on: engines covers ${process.version}, and a real binary reports its version`, () => {
    const need = requiredNodeMajor(REPO_ROOT);
    assert.equal(need, 22, 'package.json engines: Node 22+ (24 is what the image ships)');
    assert.ok(Number(process.versions.node.split('.')[0]) >= need);
    // A spawned copy, not the shortcut for process.execPath.
    const copy = join(root, 'node-copy');
    execFileSync('cp', [process.execPath, copy]);
    assert.equal(nodeVersionOf(copy), process.versions.node);
  });
});
