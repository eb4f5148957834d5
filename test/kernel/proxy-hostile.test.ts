// The differential corpus of issue #11 through real pods: `bpfmesh init` and
// `bpfmesh proxy` in two pods, a node:http app in pod b, the raw cases sent
// from pod a to b's IP (a's outbound proxy, then b's inbound one). A seeded
// subset of test/unit/http1-differential's cases; the same checks against
// llhttp's reading of the same bytes (a node:http server on the host's loopback).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { REPO_ROOT } from '../../src/config/paths.js';
import type { LabPod } from '../../src/lab/lab.js';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, MeshLab, PodProcess } from '../helpers/mesh.js';
import { handMade, variant } from '../helpers/http1-corpus.js';
import { exchange, RecordingApp } from '../helpers/proxy-chain.js';

const skip = kernelSkipReason();
const FIXTURES = join(REPO_ROOT, 'dist', 'test', 'fixtures');
const SUBNET = 94;
const VARIANTS = 150;

interface AppEvent {
  event: string;
  method?: string;
  url?: string;
  body?: string;
  l5d?: string[];
}

describe('hostile HTTP/1 inputs through two pods', { skip, timeout: 300_000 }, () => {
  let mesh: MeshLab;
  let a: LabPod;
  let b: LabPod;
  let app: PodProcess;

  before(async () => {
    mesh = new MeshLab(SUBNET);
    a = mesh.pod('a');
    b = mesh.pod('b');
    for (const pod of [a, b]) {
      await mesh.init(pod);
      await mesh.proxy(pod, { LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT: '1s', LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT: '1s' });
    }
    app = new PodProcess(mesh.lab.spawn(b, process.execPath, [join(FIXTURES, 'recording-app.js'), '8080'], APP));
    await app.waitFor((e) => e.event === 'ready');
  });
  after(() => mesh?.cleanup());

  test('served as HTTP where llhttp reads HTTP, nothing smuggled, no l5d-* at the app', async () => {
    const cases = [...handMade(), ...Array.from({ length: VARIANTS }, (_, i) => variant(7_000_000 + i))];
    // llhttp's reading of each case.
    const direct = new RecordingApp();
    const port = await direct.listen();
    const byLlhttp: string[][] = [];
    try {
      for (const c of cases) {
        const n = direct.seen.length;
        await exchange(port, [c.bytes], { end: true, untilMs: 1000 });
        byLlhttp.push(direct.seen.slice(n).map((r) => `${r.method} ${r.url} ${JSON.stringify(r.body)}`));
      }
    } finally {
      await direct.close();
    }
    const input = cases.map((c) => c.bytes.toString('base64')).join('\n') + '\n';
    const r = await mesh.lab.exec(a, process.execPath, [join(FIXTURES, 'send-raw.js'), b.ip4, '8080'], APP, 240_000, input);
    assert.match(r.stdout, /"event":"done"/, r.stderr);
    await app.waitFor((e) => (e as AppEvent).url === `/__case/${cases.length}`, 10_000);
    // Split the app's requests at the markers.
    const perCase: AppEvent[][] = cases.map(() => []);
    let at = -1;
    for (const e of app.events as AppEvent[]) {
      if (e.event !== 'req') continue;
      const m = /^\/__case\/(\d+)$/.exec(e.url ?? '');
      if (m !== null) at = Number(m[1]);
      else if (at >= 0 && at < cases.length) perCase[at]!.push(e);
    }
    const problems: string[] = [];
    let read = 0;
    for (const [i, c] of cases.entries()) {
      const got = perCase[i]!;
      const forged = got.flatMap((e) => e.l5d ?? []);
      if (forged.length > 0) problems.push(`${c.name}: the app got ${forged.join(', ')}`);
      const keys = got.map((e) => `${e.method} ${e.url} ${JSON.stringify(e.body)}`);
      if (keys.some((k, j) => byLlhttp[i]![j] !== k)) problems.push(`${c.name}: the app got ${JSON.stringify(keys)}, llhttp reads ${JSON.stringify(byLlhttp[i])}`);
      if (byLlhttp[i]!.length > 0) read++;
      // Where llhttp reads a request the proxies serve it (or refuse it); none is lost to an opaque relay unseen.
    }
    assert.deepEqual(problems, []);
    assert.ok(read > 20, `llhttp read ${read} of ${cases.length} cases`);
    // Both sides of the invariant were exercised: requests reached the app through the pods.
    const served = cases.filter((_, i) => perCase[i]!.length > 0).length;
    assert.ok(served >= 10 && served <= read, `${served} cases reached the app, llhttp read ${read}`);
  });
});
