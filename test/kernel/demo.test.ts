// npm start's demo: runs for 10 s, shows mTLS traffic through both proxies
// and the kernel counters, and leaves nothing behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { kernelSkipReason } from '../helpers/root.js';
import { runCli } from '../helpers/mesh.js';
import { cgroup2Mount } from '../../src/intercept/mounts.js';

const skip = kernelSkipReason();

const netnsNames = (): string[] => execFileSync('ip', ['netns', 'list']).toString().split('\n').map((l) => l.split(' ')[0] ?? '').filter(Boolean);
const pins = (): string[] => (existsSync('/sys/fs/bpf/bpfmesh') ? readdirSync('/sys/fs/bpf/bpfmesh') : []);
const cgroups = (): string[] => readdirSync(cgroup2Mount(), { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);

test('the demo shows requests through both proxies and cleans up', { skip, timeout: 120_000 }, async () => {
  const r = await runCli(['demo', '--seconds', '10']);
  assert.equal(r.code, 0, r.stderr);
  // Other tests may run beside this one: only what carries the demo's own lab prefix counts.
  const prefix = /^pods: (\S+)-client /m.exec(r.stdout)?.[1];
  assert.ok(prefix !== undefined && prefix.length > 0, `the demo names its pods: ${r.stdout}`);
  const mine = (names: string[]): string[] => names.filter((n) => n.startsWith(prefix));
  assert.match(r.stdout, /#1 hello from 10\.78\.0\.3:8080/);
  const out = /request_total\{direction="outbound"\} (\d+)/.exec(r.stdout);
  assert.ok(out && Number(out[1]) >= 3, r.stdout);
  const mtls = /client proxy: .*over mTLS (\d+)/.exec(r.stdout);
  assert.ok(mtls && Number(mtls[1]) >= 3, 'requests went over mTLS between the proxies');
  assert.match(r.stdout, /client: .*out_redirected=\d+/);
  assert.match(r.stdout, /cleaned up/);
  assert.deepEqual(mine(netnsNames()), [], 'no network namespace left');
  assert.deepEqual(mine(pins()), [], 'no pins left');
  assert.deepEqual(mine(cgroups()), [], 'no cgroup left');
});
