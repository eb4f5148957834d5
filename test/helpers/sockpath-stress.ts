// Shared by the socket-path stress tests (sockpath-bound, sockpath-trim):
// intercept.bpf.o loaded with test knobs, the stress fixture's server and
// client in a lab pod, and the pod's socket-path counters.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { REPO_ROOT, bpfObjectPath } from '../../src/config/paths.js';
import { APP, type MeshLab, PROXY, PodProcess } from './mesh.js';
import type { LabPod } from '../../src/lab/lab.js';
import { inspectPod } from '../../src/admin/inspect.js';
import { native } from '../../src/bpf/native.js';
import * as c from '../../src/bpf/codecs.js';
import { MapNames, SOCKMAP_PROGRAMS } from '../../src/intercept/layout.js';
import { mapsDirOf } from '../../src/intercept/versions.js';

export const STRESS = join(REPO_ROOT, 'dist', 'test', 'fixtures', 'sockpath-stress.js');
/** The stress server's port (the proxy side) and the port the app dials. */
export const STRESS_PORT = 4140;
export const STRESS_DEST_PORT = 7000;

/**
 * Loads intercept.bpf.o on the pod's pinned maps with test knobs in its
 * .rodata, and puts its sockops program behind the pod's link and its
 * sk_msg/sk_skb on the pod's sockhash: new connections then run the
 * knobbed programs (which share their own, unpinned socket-path maps).
 */
export function loadWithKnobs(pinDir: string, testKnobs: number): void {
  const obj = native().openObject(bpfObjectPath('intercept'), { pinRoot: mapsDirOf(pinDir) });
  try {
    obj.setRodata(c.interceptRodata.encode({ testKnobs }));
    obj.load();
    const link = native().openPinnedLink(join(pinDir, 'link_sockops'));
    try {
      link.updateProgram(obj.program('mesh_sockops'));
    } finally {
      link.close();
    }
    const pairs = obj.map(MapNames.sockPairs);
    for (const spec of SOCKMAP_PROGRAMS) obj.program(spec.program).attachToMap(pairs.fd, spec.kind);
  } finally {
    obj.close();
  }
}

export const show = (cs: Record<string, bigint>): string => JSON.stringify(Object.fromEntries(Object.entries(cs).filter(([k]) => k.startsWith('sockpath')).map(([k, v]) => [k, String(v)])));

export interface StressResult {
  runs: number;
  /** dup: bytes delivered twice at the first mismatch (-1 if the bytes there are no repeat) */
  failures: Array<{ seed: number; why: string; dup?: number }>;
  ms: number;
  upstreamBad: Array<Record<string, unknown>>;
}

/** The stress fixture in the pods of one MeshLab; stop() ends every server it started. */
export class StressPods {
  readonly servers: PodProcess[] = [];

  constructor(
    private readonly mesh: MeshLab,
    private readonly dest: string,
  ) {}

  counters(pod: LabPod): Record<string, bigint> {
    return Object.fromEntries(Object.entries(inspectPod(this.mesh.pinDir(pod), pod.netnsName).counters).map(([k, v]) => [k, BigInt(v)]));
  }

  async server(pod: LabPod, mode: 'server' | 'hold-server'): Promise<PodProcess> {
    const p = new PodProcess(this.mesh.lab.spawn(pod, process.execPath, [STRESS, mode, String(STRESS_PORT)], PROXY));
    this.servers.push(p);
    await p.waitFor((e) => e.event === 'listening', 60_000); // minutes of Node start-up under emulation
    return p;
  }

  async stress(pod: LabPod, srv: PodProcess, runs: number, firstSeed: number, mib: number): Promise<StressResult> {
    const seen = srv.events.length;
    const r = await this.mesh.lab.exec(pod, process.execPath, [STRESS, 'client', this.dest, String(STRESS_DEST_PORT), String(runs), String(mib), String(firstSeed), '4'], APP, 240_000);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Omit<StressResult, 'upstreamBad'>;
    // The server logs each connection when its upstream ended; give the last ones a moment.
    const deadline = Date.now() + 5000;
    while (srv.events.slice(seen).filter((e) => e.event === 'conn').length < runs && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    const conns = srv.events.slice(seen).filter((e) => e.event === 'conn') as unknown as Array<Record<string, number>>;
    const upstreamBad = conns.filter((e) => e['firstBad']! >= 0 || e['got'] !== e['total']);
    if (conns.length < runs - out.failures.length) upstreamBad.push({ missing: runs - conns.length });
    return { ...out, upstreamBad };
  }

  stop(): void {
    for (const s of this.servers) s.stop();
  }
}
