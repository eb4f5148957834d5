// The same-host socket path: sk_msg redirects bytes between the app's socket
// and the proxy's accepted socket, both held in the SOCKHASH. Kernel floor:
// 5.15 (bpf_get_netns_cookie in sk_msg); the pass-through SK_SKB verdict
// keeps kernels with 929e30f93125 (6.6.128+, 6.12.75+, 6.18.14+) from stalling.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { REPO_ROOT } from '../../src/config/paths.js';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, MeshLab } from '../helpers/mesh.js';
import type { LabPod } from '../../src/lab/lab.js';
import { inspectPod } from '../../src/admin/inspect.js';

const skip = kernelSkipReason();
const STREAM = join(REPO_ROOT, 'dist', 'test', 'fixtures', 'stream.js');

describe('same-host socket path', { skip, timeout: 600_000 }, () => {
  let mesh: MeshLab;
  let pod: LabPod;

  before(async () => {
    mesh = new MeshLab(85);
    pod = mesh.pod('pod');
    await mesh.init(pod);
    await mesh.relay(pod, 'echo', false);
  });
  after(() => mesh?.cleanup());

  async function stream(args: string[]): Promise<Record<string, unknown>> {
    const r = await mesh.lab.exec(pod, process.execPath, [STREAM, ...args], APP, 330_000);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Record<string, unknown>;
  }

  const counters = (): Record<string, string> => inspectPod(mesh.pinDir(pod), pod.netnsName).counters;

  test('256 MiB each way arrives byte-identical, and half-close works', async () => {
    const before = BigInt(counters()['sockpath_redirected'] ?? '0');
    const r = await stream(['bulk', '10.85.0.99', '7000', '256']);
    assert.equal(r['error'], undefined);
    assert.equal(r['match'], true, JSON.stringify(r));
    assert.equal(r['received'], 256 * 1024 * 1024);
    assert.equal(r['halfClose'], true);
    const c = counters();
    assert.ok(BigInt(c['sockpath_paired'] ?? '0') >= 2n, 'both ends were put into the sockhash');
    // Messages, not bytes: one redirect carries up to 17 x 32 KiB; the bound sends the rest over TCP when the echo side lags.
    assert.ok(BigInt(c['sockpath_redirected'] ?? '0') - before > 100n, `bytes took the socket path: ${JSON.stringify(c)}`);
  });

  test('a Node client/server pair through the path never stalls (929e30f93125)', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await stream(['pingpong', '10.85.0.99', '7001', '5000']);
      assert.equal(r['error'], undefined, `round ${i}: ${JSON.stringify(r)}`);
      assert.equal(r['roundTrips'], 5000);
    }
  });
});
