// Upgrading an install folder in place from another layout (versions.ts):
// the new maps folder is filled before any program uses it, the links are
// swapped (BPF_LINK_UPDATE, by the installer), then the old maps' pins go.
//
// Per map of this build's layout:
// - reuse: an old map of the same definition is pinned into the new folder
//   as well, so it is the same kernel map: rows, sockhash members and
//   socket storage all stay, and nothing is copied;
// - copy: an old map of the same type, key and value size but another
//   max_entries or flags gets a new map and its rows are copied (hash, LRU,
//   per-CPU, LPM trie, array);
// - sockets: mesh_listeners of another definition (same key) gets a new
//   map, filled by an iterator program over the old one (bpf/upgrade.bpf.c):
//   user space cannot put a socket it has no fd of into a sockhash;
// - fresh: any other sockhash or socket storage of another definition. The
//   old one stays with the old programs that live sockets still run (their
//   psock holds them) until those sockets close; new connections use the
//   new one. Logged.
// - anything else that changed (a key or value of another size) is refused:
//   its rows would be lost, and losing a pod's settings row drops its
//   interception.
import { existsSync, mkdirSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { BpfmeshError, ErrorCodes, errorCode } from '../errors.js';
import type { LogFns } from '../log/logger.js';
import { bpfObjectPath } from '../config/paths.js';
import { native, type MapInfo } from '../bpf/native.js';
import { UpdateFlags } from '../bpf/typed-map.js';
import {
  currentLayout,
  knownLayout,
  LEGACY,
  layoutDir,
  layoutPins,
  layoutsIn,
  PREVIOUS_LAYOUTS,
  SHAPE_FIELDS,
  writeLayoutMarker,
  type FoundLayout,
  type MapShape,
} from './versions.js';

/** Map types whose rows user space can read and write back. */
const COPYABLE = new Set(['hash', 'lru_hash', 'percpu_hash', 'lru_percpu_hash', 'lpm_trie', 'array', 'percpu_array']);
/** BPF_F_WRONLY: user space cannot read the rows (mesh_sock_addr holds kernel addresses). */
const F_WRONLY = 1 << 4;
/** What an update of a full map fails with: E2BIG (hash), ENOSPC (LPM trie), ENOMEM. */
const FULL_ERRNOS = new Set([7, 28, 12]);
/** Sockhash maps copied by an iterator program of bpf/upgrade.bpf.c, by map name. */
const SOCKET_COPIERS: Readonly<Record<string, string>> = { mesh_listeners: 'mesh_copy_listeners' };

export interface LayoutPlan {
  pinDir: string;
  id: string;
  mapsDir: string;
  /** The maps folder of this layout was there before (a re-run, or an upgrade that stopped half-way). */
  existed: boolean;
  /** Folders of other layouts, to carry over and then remove. */
  others: FoundLayout[];
  reuse: Array<{ name: string; from: string }>;
  copy: Array<{ name: string; from: string }>;
  /** Sockhash members copied in the kernel (SOCKET_COPIERS). */
  sockets: Array<{ name: string; from: string }>;
  fresh: Array<{ name: string; why: string }>;
}

const upgradeHint = (): string =>
  `upgrade with the bpfmesh release that made them, or remove them (bpfmesh reset for this pod, or bpfmesh reset --node; interception stops until the next install)`;

function pinnedInfo(path: string): MapInfo {
  const m = native().openPinnedMap(path);
  try {
    return m.info();
  } finally {
    m.close();
  }
}

const diffOf = (have: MapInfo, want: MapShape): string =>
  SHAPE_FIELDS.filter((f) => have[f] !== want[f])
    .map((f) => `${f} ${have[f]} -> ${want[f]}`)
    .join(', ');

/** What an install into pinDir does with the maps found there. Throws UNKNOWN_LAYOUT / INCOMPATIBLE_PINS before touching anything. */
export function planLayout(pinDir: string): LayoutPlan {
  const layout = currentLayout();
  const mapsDir = layoutDir(pinDir, layout.id);
  const found = layoutsIn(pinDir);
  const others = found.filter((f) => f.id !== layout.id);
  const plan: LayoutPlan = { pinDir, id: layout.id, mapsDir, existed: existsSync(mapsDir), others, reuse: [], copy: [], sockets: [], fresh: [] };
  for (const o of others) {
    if (!knownLayout(o.id)) {
      throw new BpfmeshError(
        ErrorCodes.UNKNOWN_LAYOUT,
        `${o.dir} holds maps of layout ${o.id}, which this bpfmesh (layout ${layout.id}, upgrades from ${[LEGACY, ...Object.keys(PREVIOUS_LAYOUTS)].join(', ')}) does not know: a newer release made them; ${upgradeHint()}`,
      );
    }
  }
  for (const [name, want] of layout.shapes) {
    // The kernel id of the map this layout will use, once known (an upgrade that stopped half-way pinned it already).
    let usedId = existsSync(join(mapsDir, name)) ? pinnedInfo(join(mapsDir, name)).id : 0;
    const reused = (): boolean => usedId !== 0;
    for (const o of others) {
      const from = join(o.dir, name);
      if (!existsSync(from)) continue;
      const have = pinnedInfo(from);
      if (have.id === usedId) continue; // the same kernel map, pinned in both folders
      const diff = diffOf(have, want);
      if (diff === '' && !reused()) {
        plan.reuse.push({ name, from });
        usedId = have.id;
      } else if (have.type === want.type && have.keySize === want.keySize && have.valueSize === want.valueSize && COPYABLE.has(want.type) && (want.flags & F_WRONLY) === 0) {
        plan.copy.push({ name, from });
      } else if (name in SOCKET_COPIERS && have.type === want.type && have.keySize === want.keySize) {
        plan.sockets.push({ name, from });
      } else if (!COPYABLE.has(want.type) || (want.flags & F_WRONLY) !== 0) {
        if (!reused()) plan.fresh.push({ name, why: diff });
      } else {
        throw new BpfmeshError(
          ErrorCodes.INCOMPATIBLE_PINS,
          `${from}: this release cannot carry its rows over (${diff}); ${upgradeHint()}`,
        );
      }
    }
  }
  return plan;
}

/** Makes the new maps folder and pins the reused maps into it; the objects are then loaded with it as their pin root. */
export function prepareLayout(plan: LayoutPlan): void {
  mkdirSync(plan.mapsDir, { recursive: true });
  for (const r of plan.reuse) {
    const m = native().openPinnedMap(r.from);
    try {
      m.pin(join(plan.mapsDir, r.name));
    } finally {
      m.close();
    }
  }
}

/**
 * Copies the rows of the copy maps that the new maps lack (BPF_NOEXIST, so
 * a second pass after the link swap only adds what the old programs wrote
 * meanwhile). A full map leaves the rest out (logged). Returns rows added.
 */
export function copyRows(plan: LayoutPlan, log: LogFns): number {
  let added = 0;
  for (const c of plan.copy) {
    const src = native().openPinnedMap(c.from);
    const dst = native().openPinnedMap(join(plan.mapsDir, c.name));
    let full = 0;
    try {
      for (let key = src.nextKey(null); key !== null; key = src.nextKey(key)) {
        const value = src.lookup(key);
        if (value === null) continue; // deleted meanwhile
        try {
          dst.update(key, value, UpdateFlags.NOEXIST);
          added++;
        } catch (err) {
          const code = errorCode(err);
          if (code === ErrorCodes.EXISTS) continue;
          if (FULL_ERRNOS.has((err as { errno?: number }).errno ?? 0)) full++;
          else throw err;
        }
      }
    } finally {
      src.close();
      dst.close();
    }
    if (full > 0) log.warn({ map: c.name, from: c.from, left: full }, 'the new map is full: rows left out of the upgrade');
  }
  return added + copySockets(plan, log);
}

/**
 * Runs bpf/upgrade.bpf.c's iterators over the old sockhash maps; its maps
 * are the new folder's (pin root). Returns sockets copied. A kernel without
 * BPF tracing programs (iterators are tracing programs; some builds leave
 * them out) cannot: the new map starts empty, which is logged (README
 * "Upgrading": a proxy's inbound listener is then steered again once it
 * listens anew).
 */
function copySockets(plan: LayoutPlan, log: LogFns): number {
  if (plan.sockets.length === 0) return 0;
  const maps = plan.sockets.map((x) => x.name);
  if (!native().probeProgType('tracing')) {
    log.warn({ maps }, 'this kernel has no BPF tracing programs, so no iterator can carry sockets over: the new maps start empty; proxies register their inbound listeners again when they listen anew (restart them)');
    return 0;
  }
  const obj = native().openObject(bpfObjectPath('upgrade'), { pinRoot: plan.mapsDir });
  let copied = 0;
  try {
    obj.load();
    for (const s of plan.sockets) {
      const old = native().openPinnedMap(s.from);
      try {
        copied += obj.program(SOCKET_COPIERS[s.name]!).runMapIter(old.fd);
      } finally {
        old.close();
      }
    }
  } finally {
    obj.close();
  }
  return copied;
}

/** Removes the pins of an upgrade that swapped no link yet (the old layout still serves everything). */
export function abortLayout(plan: LayoutPlan): void {
  if (plan.existed || !existsSync(plan.mapsDir)) return;
  for (const n of readdirSync(plan.mapsDir)) native().unpin(join(plan.mapsDir, n));
  rmdirSync(plan.mapsDir);
}

/** Marks the new folder and removes the old layouts' map pins (their maps live on while old programs hold them). */
export function finishLayout(plan: LayoutPlan, log: LogFns): void {
  writeLayoutMarker(plan.mapsDir, plan.id);
  for (const o of plan.others) {
    for (const n of layoutPins(o)) {
      try {
        native().unpin(join(o.dir, n));
      } catch (err) {
        if (errorCode(err) !== ErrorCodes.NOT_FOUND) throw err;
      }
    }
    if (o.id !== LEGACY) rmdirSync(o.dir);
  }
  if (plan.others.length > 0) {
    log.info(
      {
        pinDir: plan.pinDir,
        from: plan.others.map((o) => o.id),
        to: plan.id,
        reused: plan.reuse.map((r) => r.name),
        copied: [...new Set([...plan.copy, ...plan.sockets].map((c) => c.name))],
        fresh: plan.fresh.map((f) => `${f.name} (${f.why})`),
      },
      'pins upgraded in place',
    );
  }
}
