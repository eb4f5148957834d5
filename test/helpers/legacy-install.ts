// An install as the previous release made it: its BPF objects (built from
// bpf/testdata/layout-prev/, bpf/ at 3b674e2) with every map pinned flat in
// the install folder next to the link pins, and no layout marker. The steps
// are that release's install.ts and node-wide.ts, run on this tree's helpers
// (openAndLoad, attachOrUpdate, writePolicy take the pin folder they are given).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { bpfObjectDir } from '../../src/config/paths.js';
import * as c from '../../src/bpf/codecs.js';
import { attachOrUpdate, openAndLoad } from '../../src/intercept/install.js';
import { LINKS, SOCKMAP_PROGRAMS, closeMaps, mapsOfObject, MapNames } from '../../src/intercept/layout.js';
import { netnsAddressesOf, netnsCookieOf, withFd } from '../../src/intercept/pod.js';
import { writePolicy, type PodPolicy } from '../../src/intercept/rules.js';
import type { NativeObject } from '../../src/bpf/native.js';

/** layout-prev: that release as it was; layout-prev-small: built for 512 pods (settings, counters and listeners maps of another size). */
export type PrevVariant = 'layout-prev' | 'layout-prev-small';

export const prevObjects = (variant: PrevVariant = 'layout-prev') => ({
  intercept: join(bpfObjectDir(), 'testdata', variant, 'intercept.bpf.o'),
  inbound: join(bpfObjectDir(), 'testdata', variant, 'inbound.bpf.o'),
});

/** Runs fn with the previous release's objects in place of this build's. */
function withPrevObjects<T>(fn: () => T, variant: PrevVariant = 'layout-prev'): T {
  const saved = [process.env['BPFMESH_OBJECT_INTERCEPT'], process.env['BPFMESH_OBJECT_INBOUND']];
  process.env['BPFMESH_OBJECT_INTERCEPT'] = prevObjects(variant).intercept;
  process.env['BPFMESH_OBJECT_INBOUND'] = prevObjects(variant).inbound;
  try {
    return fn();
  } finally {
    for (const [i, name] of ['BPFMESH_OBJECT_INTERCEPT', 'BPFMESH_OBJECT_INBOUND'].entries()) {
      if (saved[i] === undefined) delete process.env[name];
      else process.env[name] = saved[i];
    }
  }
}

function withObjects(objs: NativeObject[], fn: () => void): void {
  try {
    fn();
  } finally {
    for (const o of objs) o.close();
  }
}

function writeRows(intercept: NativeObject, netns: string, policy: PodPolicy): void {
  const maps = mapsOfObject(intercept);
  try {
    writePolicy(maps, netnsCookieOf(netns), policy, netnsAddressesOf(netns));
  } finally {
    closeMaps(maps);
  }
  const pairs = intercept.map(MapNames.sockPairs);
  for (const spec of SOCKMAP_PROGRAMS) intercept.program(spec.program).attachToMap(pairs.fd, spec.kind);
}

/** `bpfmesh init` of the previous release: pins in pinDir, hooks on the pod's cgroup and netns. */
export function installPrevPod(pinDir: string, cgroup: string, netns: string, policy: PodPolicy, variant: PrevVariant = 'layout-prev'): void {
  withPrevObjects(() => {
    mkdirSync(pinDir, { recursive: true });
    const intercept = openAndLoad('intercept', pinDir);
    const inbound = openAndLoad('inbound', pinDir, c.inboundRodata.encode({ podNetnsCookie: netnsCookieOf(netns) }));
    withObjects([intercept, inbound], () => {
      writeRows(intercept, netns, policy);
      withFd(cgroup, 'cgroup', (cgFd) =>
        withFd(netns, 'network namespace', (nsFd) => {
          for (const spec of LINKS) attachOrUpdate(spec, spec.object === 'intercept' ? intercept : inbound, pinDir, spec.target === 'cgroup' ? cgFd : nsFd, spec.target === 'cgroup' ? cgroup : netns);
        }),
      );
    });
  }, variant);
}

/** The previous release's node-wide install (nodeDir = <bpffs>/bpfmesh/node) with one pod enrolled as podId. */
export function installPrevNode(nodeDir: string, cgroupRoot: string, podId: string, netns: string, policy: PodPolicy): void {
  withPrevObjects(() => {
    mkdirSync(join(nodeDir, 'pods', podId), { recursive: true });
    const intercept = openAndLoad('intercept', nodeDir);
    withObjects([intercept], () => {
      writeRows(intercept, netns, policy);
      withFd(cgroupRoot, 'cgroup', (fd) => {
        for (const spec of LINKS.filter((l) => l.target === 'cgroup')) attachOrUpdate(spec, intercept, nodeDir, fd, cgroupRoot);
      });
    });
    const inbound = openAndLoad('inbound', nodeDir, c.inboundRodata.encode({ podNetnsCookie: netnsCookieOf(netns) }));
    withObjects([inbound], () => {
      const podDir = join(nodeDir, 'pods', podId);
      inbound.map('.rodata').pin(join(podDir, 'netns_cookie'));
      const spec = LINKS.find((l) => l.target === 'netns')!;
      withFd(netns, 'network namespace', (fd) => attachOrUpdate(spec, inbound, podDir, fd, netns));
    });
  });
}
