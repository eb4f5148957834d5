// The sk_skb verdict's trim really runs and is needed: with a tc program on
// the pod's lo dropping a random share of the app<->proxy TCP segments
// (bpf/testdata/loss.bpf.c; this kernel has no netem), retransmissions that
// partly overlap bytes already received (seq < rcv_nxt < end_seq) reach the
// verdict whole from tcp_read_skb(). Seeded stress runs then deliver every
// byte once and in order with sockpath_trimmed > 0, and the same stress with
// the trim switched off (test knob NO_TRIM) duplicates bytes. See
// docs/tcp-read-skb-overlap.md.
//   BPFMESH_SOCKPATH_TRIM_RUNS   upper bound on seeded runs per test (default 240; vagrant/kernels/run.sh passes 24 under emulation)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../../src/config/paths.js';
import { kernelSkipReason } from '../helpers/root.js';
import { MeshLab } from '../helpers/mesh.js';
import type { LabPod } from '../../src/lab/lab.js';
import * as c from '../../src/bpf/codecs.js';
import { StressPods, loadWithKnobs, show } from '../helpers/sockpath-stress.js';

const skip = kernelSkipReason();
const LOSS = join(REPO_ROOT, 'build', 'bpf', 'testdata', 'loss.bpf.o');
const MAX_RUNS = Number(process.env['BPFMESH_SOCKPATH_TRIM_RUNS'] ?? 240);
const BATCH = Math.max(1, Math.min(40, Math.floor(MAX_RUNS / 2))); // two batches fit
const MIB = 2;
const SUBNET = 98;
const DEST = `10.${SUBNET}.0.99`;

const inNetns = (pod: LabPod, cmd: string, args: string[]): string =>
  execFileSync('ip', ['netns', 'exec', pod.netnsName, cmd, ...args], { encoding: 'utf8', timeout: 20_000, stdio: ['ignore', 'pipe', 'pipe'] });

/** Attaches the loss program to the pod's lo, both directions (on lo every segment arrives through ingress). */
function addLoss(pod: LabPod): void {
  // No tail loss probes: the retransmission timer must resend the cut segment from its start (see loss.bpf.c).
  inNetns(pod, 'sysctl', ['-q', '-w', 'net.ipv4.tcp_early_retrans=0']);
  inNetns(pod, 'tc', ['qdisc', 'add', 'dev', 'lo', 'clsact']);
  inNetns(pod, 'tc', ['filter', 'add', 'dev', 'lo', 'ingress', 'bpf', 'direct-action', 'obj', LOSS, 'sec', 'tc']);
}

function removeLoss(pod: LabPod): void {
  inNetns(pod, 'tc', ['qdisc', 'del', 'dev', 'lo', 'clsact']);
  assert.equal(inNetns(pod, 'tc', ['filter', 'show', 'dev', 'lo', 'ingress']).trim(), '', 'the loss filter is gone');
}

/** The loss program's counters, from its .bss (bpftool formats them with the object's BTF). */
function lossCounters(pod: LabPod): Record<string, number> {
  const net = JSON.parse(inNetns(pod, 'bpftool', ['-j', 'net', 'show', 'dev', 'lo'])) as Array<{ tc: Array<{ id: number }> }>;
  const id = net[0]?.tc[0]?.id;
  assert.ok(id !== undefined, 'the loss program is attached');
  const prog = JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show', 'id', String(id)], { encoding: 'utf8' })) as { map_ids: number[] };
  for (const m of prog.map_ids) {
    const dump = JSON.parse(execFileSync('bpftool', ['-j', 'map', 'dump', 'id', String(m)], { encoding: 'utf8' })) as Array<{ formatted?: { value?: Record<string, Array<Record<string, number>>> } }>;
    const bss = dump[0]?.formatted?.value?.['.bss'];
    if (bss) return Object.assign({}, ...bss) as Record<string, number>;
  }
  throw new Error(`no .bss map on program ${id}`);
}

/** The pod's TCP counters (nstat, absolute values). */
function nstat(pod: LabPod): Record<string, number> {
  const out = JSON.parse(inNetns(pod, 'nstat', ['-a', '-z', '-s', '-j'])) as { kernel: Record<string, number> };
  const want = ['TcpRetransSegs', 'TcpExtTCPLossProbes', 'TcpExtTCPDSACKOldSent', 'TcpExtTCPDSACKOfoSent', 'TcpExtTCPPartialUndo', 'TcpExtTCPOFOQueue'];
  return Object.fromEntries(want.map((k) => [k, out.kernel[k] ?? 0]));
}

describe('socket path trim under induced loss', { skip, timeout: 900_000 }, () => {
  let mesh: MeshLab;
  let pods: StressPods;

  before(() => {
    mesh = new MeshLab(SUBNET);
    pods = new StressPods(mesh, DEST);
  });
  after(() => {
    pods?.stop();
    mesh?.cleanup();
  });

  /** Stress batches until stop() says so or MAX_RUNS ran; returns runs, failed runs and the pod's counters. */
  async function batches(pod: LabPod, firstSeed: number, stop: (bad: number, cs: Record<string, bigint>, ran: number) => boolean) {
    const srv = await pods.server(pod, 'server');
    let ran = 0;
    const bad: Array<Record<string, unknown>> = [];
    let cs = pods.counters(pod);
    while (ran < MAX_RUNS && !stop(bad.length, cs, ran)) {
      const r = await pods.stress(pod, srv, BATCH, firstSeed + ran, MIB);
      ran += BATCH;
      bad.push(...r.failures, ...r.upstreamBad);
      cs = pods.counters(pod);
    }
    return { ran, bad, cs, tcp: { ...nstat(pod), ...lossCounters(pod) } };
  }

  test('seeded stress under loss: every byte once and in order, and the trim ran', async (t) => {
    const pod = mesh.pod('trim');
    await mesh.init(pod, ['--sockpath-high-water', '64Ki']);
    addLoss(pod);
    try {
      // Two batches at least, so runs are checked after the first trims too.
      const r = await batches(pod, 1, (bad, cs, ran) => bad > 0 || (ran >= 2 * BATCH && cs['sockpath_trimmed']! > 0n));
      const detail = `${r.ran} runs, ${show(r.cs)}, ${JSON.stringify(r.tcp)}`;
      assert.deepEqual(r.bad, [], `corruption: ${JSON.stringify(r.bad.slice(0, 5))}; ${detail}`);
      assert.ok(r.tcp['TcpRetransSegs']! > 0, `the loss program caused retransmissions: ${detail}`);
      assert.ok(r.tcp['loss_straddling']! > 0, `the loss program saw retransmissions straddling a cut: ${detail}`);
      assert.ok(r.cs['sockpath_trimmed']! > 0n, `partial overlaps were trimmed: ${detail}`);
      assert.equal(r.cs['sockpath_trim_failed'], 0n, detail);
      t.diagnostic(detail);
    } finally {
      removeLoss(pod);
    }
  });

  test('negative control: the same stress with the trim off duplicates bytes', async (t) => {
    const pod = mesh.pod('notrim');
    await mesh.init(pod, ['--sockpath-high-water', '64Ki']);
    loadWithKnobs(mesh.pinDir(pod), c.TestKnobs.NO_TRIM);
    addLoss(pod);
    try {
      const r = await batches(pod, 100_000, (bad) => bad > 0);
      const detail = `${r.ran} runs, ${show(r.cs)}, ${JSON.stringify(r.tcp)}`;
      assert.ok(r.tcp['loss_straddling']! > 0, `the loss program saw retransmissions straddling a cut: ${detail}`);
      // Bytes delivered twice, not a stall: the checker found the stream repeating itself.
      const dups = r.bad.filter((b) => Number(b['dup'] ?? -1) > 0);
      assert.ok(dups.length > 0, `${detail}: ${JSON.stringify(r.bad.slice(0, 3))}: no duplicated bytes without the trim, so the stress would not catch a missing trim`);
      assert.equal(r.cs['sockpath_trimmed'], 0n, `the knob switched the trim off: ${detail}`);
      t.diagnostic(`${detail}; first: ${JSON.stringify(dups.slice(0, 3))}`);
    } finally {
      removeLoss(pod);
    }
  });
});
