// The node-wide install lock (flock on bpfmesh/node_lock in bpffs) between
// real processes: a second taker blocks until the first releases, a holder
// killed with SIGKILL releases at once (the kernel drops its flock), and a
// taker that waits too long gets BPFMESH_E_BUSY.
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, rmdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../../src/config/paths.js';
import { ensureBpffs } from '../../src/intercept/mounts.js';
import { kernelSkipReason } from '../helpers/root.js';

const HOLDER = join(REPO_ROOT, 'dist', 'test', 'fixtures', 'lock-holder.js');
const skip = kernelSkipReason();

interface Said {
  event: 'waiting' | 'locked' | 'busy' | 'released';
  at: number;
  code?: string;
}

class Holder {
  readonly child: ChildProcessWithoutNullStreams;
  readonly #said: Said[] = [];
  readonly #waiters: Array<() => void> = [];
  constructor(dir: string, timeoutMs: number) {
    this.child = spawn(process.execPath, [HOLDER, dir, String(timeoutMs)]);
    createInterface({ input: this.child.stdout }).on('line', (l) => {
      this.#said.push(JSON.parse(l) as Said);
      for (const w of this.#waiters.splice(0)) w();
    });
  }
  async next(event: Said['event'] | 'locked-or-busy', timeoutMs = 15_000): Promise<Said> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.#said.find((s) => s.event === event || (event === 'locked-or-busy' && (s.event === 'locked' || s.event === 'busy')));
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`no ${event} from the lock holder`);
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }
  said(event: Said['event']): boolean {
    return this.#said.some((s) => s.event === event);
  }
  release(): void {
    this.child.stdin.write('release\n');
  }
  async end(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.stdin.end();
    await exited;
  }
}

describe('node lock (flock in bpffs) between processes', { skip }, () => {
  let bpffs: string;
  let lock: string;
  const holders: Holder[] = [];
  const holder = (timeoutMs: number): Holder => {
    const h = new Holder(lock, timeoutMs);
    holders.push(h);
    return h;
  };

  before(() => {
    bpffs = mkdtempSync(join(tmpdir(), 'bpfmesh-node-lock-'));
    ensureBpffs(bpffs, false);
    lock = join(bpffs, 'node_lock');
  });
  // A failed test must not leave a holder that blocks the next one.
  afterEach(() => {
    for (const h of holders.splice(0)) {
      if (h.child.exitCode === null && h.child.signalCode === null) h.child.kill('SIGKILL');
    }
  });
  after(() => {
    if (bpffs !== undefined) {
      execFileSync('umount', [bpffs]);
      rmdirSync(bpffs);
    }
  });

  test('a second taker blocks until the first releases, then gets it at once; the directory goes with the last release', async () => {
    const a = holder(10_000);
    await a.next('locked');
    const b = holder(10_000);
    await b.next('waiting');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(b.said('locked'), false, 'B blocks while A holds the lock');
    a.release();
    const released = await a.next('released');
    const locked = await b.next('locked');
    assert.ok(locked.at - released.at < 1000, `B locked ${locked.at - released.at} ms after A released`);
    b.release();
    await b.next('released');
    assert.equal(existsSync(lock), false, 'released: nothing left in bpffs');
    await a.end();
    await b.end();
  });

  test('a holder killed with SIGKILL releases the lock at once', async () => {
    const a = holder(10_000);
    await a.next('locked');
    const b = holder(10_000);
    await b.next('waiting');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(b.said('locked'), false);
    const killedAt = Date.now();
    a.child.kill('SIGKILL');
    const locked = await b.next('locked');
    // Well under the 30 s the old staleness rule waited, with room for slow (emulated) machines.
    assert.ok(locked.at - killedAt < 3000, `B locked ${locked.at - killedAt} ms after A was killed (the old lock waited 30 s)`);
    b.release();
    await b.next('released');
    await b.end();
  });

  test('a taker that waits longer than its timeout gets BPFMESH_E_BUSY', async () => {
    const a = holder(10_000);
    await a.next('locked');
    const b = holder(300);
    const waiting = await b.next('waiting');
    const busy = await b.next('locked-or-busy');
    assert.equal(busy.event, 'busy');
    assert.equal(busy.code, 'BPFMESH_E_BUSY');
    assert.ok(busy.at - waiting.at >= 300, 'waited the timeout');
    a.release();
    await a.next('released');
    await a.end();
    await b.end();
  });
});
