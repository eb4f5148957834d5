// Two pods, 500 connections each (100 at once), from the same local ports to
// the proxy: the app-side 4-tuples collide across pods, and every
// connection must still get its own original destination.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { REPO_ROOT } from '../../src/config/paths.js';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, MeshLab } from '../helpers/mesh.js';
import type { LabPod } from '../../src/lab/lab.js';

const skip = kernelSkipReason();
const MANY = join(REPO_ROOT, 'dist', 'test', 'fixtures', 'many-conns.js');

describe('colliding 4-tuples across pods', { skip, timeout: 240_000 }, () => {
  let mesh: MeshLab;
  let a: LabPod;
  let b: LabPod;

  before(async () => {
    mesh = new MeshLab(86);
    a = mesh.pod('a');
    b = mesh.pod('b');
    for (const pod of [a, b]) {
      await mesh.init(pod);
      await mesh.relay(pod, 'report', false, ['--quiet']);
    }
  });
  after(() => mesh?.cleanup());

  test('500 connections per pod from the same local ports (100 at once in each), each with the right original destination', async () => {
    const [ra, rb] = await Promise.all([
      mesh.lab.exec(a, process.execPath, [MANY, '10.86.0.100', '500', '21000', '30000'], APP, 120_000),
      mesh.lab.exec(b, process.execPath, [MANY, '10.86.0.200', '500', '21000', '30000'], APP, 120_000),
    ]);
    for (const r of [ra, rb]) {
      assert.equal(r.code, 0, r.stderr);
      const s = JSON.parse(r.stdout) as { ok: number; badCount: number; bad: string[] };
      assert.equal(s.badCount, 0, s.bad.join('\n'));
      assert.equal(s.ok, 500);
    }
  });
});
