// Bad input: every failure has a stable code, a message that says what to
// do, a non-zero exit, and leaves nothing half-installed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cgroupPrograms } from '../helpers/bpftool.js';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, MeshLab, runCli } from '../helpers/mesh.js';
import type { LabPod } from '../../src/lab/lab.js';
import { REPO_ROOT } from '../../src/config/paths.js';
import { native } from '../../src/bpf/native.js';

const skip = kernelSkipReason();

describe('errors', { skip, timeout: 120_000 }, () => {
  let mesh: MeshLab;
  let pod: LabPod;
  let notBpffs: string;

  before(() => {
    mesh = new MeshLab(84);
    pod = mesh.pod('pod');
    notBpffs = mkdtempSync(join(tmpdir(), 'bpfmesh-notbpffs-'));
  });
  after(() => {
    rmdirSync(notBpffs);
    mesh?.cleanup();
  });

  const target = (): string[] => ['--netns', pod.netns, '--cgroup', pod.cgroup];

  async function expectError(args: string[], code: string, exit: number, extra: { as?: { uid: number; gid: number }; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
    const r = await runCli(args, extra.as, extra.env);
    assert.equal(r.code, exit, `exit code for ${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(code), r.stderr);
    assert.equal(existsSync(mesh.pinDir(pod)), false, 'nothing half-installed');
    assert.equal(cgroupPrograms(pod.cgroup).length, 0, 'nothing attached');
    return r.stderr;
  }

  test('unknown flag, bad port, bad range, bad CIDR: exit 2', async () => {
    await expectError(['init', ...target(), '--no-such-flag'], 'BPFMESH_E_BAD_FLAG', 2);
    await expectError(['init', ...target(), '--outgoing-proxy-port', '99999'], 'BPFMESH_E_BAD_PORT', 2);
    await expectError(['init', ...target(), '--inbound-ports-to-ignore', '9000-8000'], 'BPFMESH_E_BAD_PORT_RANGE', 2);
    await expectError(['init', ...target(), '--subnets-to-ignore', '10.0.0.1/99'], 'BPFMESH_E_BAD_CIDR', 2);
    await expectError(['frobnicate'], 'BPFMESH_E_BAD_FLAG', 2);
  });

  test('missing cgroup or netns', async () => {
    const msg = await expectError(['init', '--netns', pod.netns, '--cgroup', `${pod.cgroup}-missing`], 'BPFMESH_E_NO_CGROUP', 1);
    assert.match(msg, /--cgroup/);
    await expectError(['init', '--netns', '/run/netns/bpfmesh-no-such-ns', '--cgroup', pod.cgroup], 'BPFMESH_E_NO_NETNS', 1);
    await expectError(['init', '--netns', '/etc/hostname', '--cgroup', pod.cgroup], 'BPFMESH_E_NO_NETNS', 1);
    await expectError(['init', '--netns', pod.netns, '--cgroup', tmpdir()], 'BPFMESH_E_NO_CGROUP', 1);
  });

  test('a --bpffs that is not a bpf filesystem', async () => {
    await expectError(['init', ...target(), '--bpffs', notBpffs], 'BPFMESH_E_NO_BPFFS', 1);
  });

  test('no permission: an unprivileged user', async () => {
    const msg = await expectError(['init', ...target()], 'BPFMESH_E_PERMISSION', 1, { as: APP });
    assert.match(msg, /root/);
  });

  test('a verifier rejection shows the verifier log and installs nothing', async () => {
    const reject = join(REPO_ROOT, 'build', 'bpf', 'testdata', 'reject.bpf.o');
    const msg = await expectError(['init', ...target()], 'BPFMESH_E_VERIFIER', 1, { env: { BPFMESH_OBJECT_INTERCEPT: reject } });
    assert.match(msg, /--- verifier log ---/);
    assert.match(msg, /invalid|denied|out of bounds|!read_ok|unknown/i, 'the verifier says why');
  });

  test('the addon error carries code, errno and syscall', () => {
    assert.throws(() => native().openPinnedMap('/sys/fs/bpf/bpfmesh-no-such-pin'), (err: Error & { code?: string; errno?: number; syscall?: string }) => {
      assert.equal(err.code, 'BPFMESH_E_NOT_FOUND');
      assert.equal(err.errno, 2);
      assert.equal(typeof err.syscall, 'string');
      return true;
    });
  });
});
