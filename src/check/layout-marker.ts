// Pins of this version (versions.ts): each install folder's maps sit in the
// folder of this build's layout (v<layout>/, with its layout_version marker)
// and match the built objects' definitions. Maps of another layout are
// either upgradable (the next install carries them over in place) or
// refused (a layout this release does not know: a newer one made them).
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, errorCode } from '../errors.js';
import { native, type MapInfo } from '../bpf/native.js';
import { NODE_DIR_NAME, NODE_LOCK_NAME } from '../intercept/node-wide.js';
import { pinRoot } from '../intercept/pod.js';
import { planLayout } from '../intercept/upgrade.js';
import { currentLayout, layoutDir, layoutsIn, readLayoutMarker, SHAPE_FIELDS, type Layout } from '../intercept/versions.js';
import { fail, pass, type CheckLine } from './types.js';

export { LAYOUT_MARKER, readLayoutMarker, writeLayoutMarker } from '../intercept/versions.js';

/** The pin folders under <bpffs>/bpfmesh: pod installs and node/. */
export function pinFolders(bpffs: string): string[] {
  const root = pinRoot(bpffs);
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((n) => n !== NODE_LOCK_NAME)
    .sort()
    .map((n) => join(root, n));
}

interface Problem {
  why: string;
  code: string;
  fix: string;
}

/** What is wrong with an install folder's maps, or null when nothing is. */
function problemOf(dir: string, name: string, layout: Layout): Problem | null {
  const found = layoutsIn(dir);
  if (found.length === 0) return null;
  const reset = name === NODE_DIR_NAME ? 'bpfmesh reset --node' : `bpfmesh reset --pod-name ${name}`;
  const others = found.filter((f) => f.id !== layout.id);
  if (others.length > 0) {
    const ids = others.map((o) => o.id).join(', ');
    try {
      planLayout(dir);
    } catch (err) {
      return { why: `maps of layout ${ids}: ${(err as Error).message}`, code: errorCode(err) ?? ErrorCodes.INCOMPATIBLE_PINS, fix: `use the bpfmesh that made them (or ${reset}), then install again` };
    }
    const rerun = name === NODE_DIR_NAME ? 'restart bpfmesh node (or the next CNI ADD)' : 'run bpfmesh init for this pod again';
    return { why: `maps of layout ${ids}, this build uses layout ${layout.id}`, code: ErrorCodes.INCOMPATIBLE_PINS, fix: `${rerun}: it upgrades them in place, live connections kept` };
  }
  const mapsDir = layoutDir(dir, layout.id);
  const marker = readLayoutMarker(mapsDir);
  if (marker !== layout.id) {
    return { why: `${mapsDir} has ${marker === null ? 'no layout marker (an install that stopped half-way)' : `the marker of layout ${marker}`}`, code: ErrorCodes.INCOMPATIBLE_PINS, fix: `install again, or ${reset}` };
  }
  for (const [map, want] of layout.shapes) {
    const path = join(mapsDir, map);
    if (!existsSync(path)) continue;
    const m = native().openPinnedMap(path);
    let have: MapInfo;
    try {
      have = m.info();
    } finally {
      m.close();
    }
    const diff = SHAPE_FIELDS.filter((f) => have[f] !== want[f]);
    if (diff.length > 0) {
      return { why: `${map}: ${diff.map((f) => `${f} ${have[f]}, expected ${want[f]}`).join(', ')}`, code: ErrorCodes.INCOMPATIBLE_PINS, fix: `remove them with the bpfmesh that made them (or ${reset}), then install again` };
    }
  }
  return null;
}

export function checkPinLayout(bpffs: string): CheckLine[] {
  const title = 'pins from this version';
  const folders = pinFolders(bpffs);
  if (folders.length === 0) return [pass('pins', title, `nothing pinned under ${pinRoot(bpffs)}`)];
  let layout: Layout;
  try {
    layout = currentLayout();
  } catch (err) {
    return [fail('pins', title, (err as Error).message, errorCode(err) ?? ErrorCodes.OBJECT_MISSING, 'build the BPF objects: npm install')];
  }
  const lines: CheckLine[] = [];
  for (const dir of folders) {
    const name = dir.slice(pinRoot(bpffs).length + 1);
    let p: Problem | null;
    try {
      p = problemOf(dir, name, layout);
    } catch (err) {
      p = { why: `cannot read: ${(err as Error).message}`, code: errorCode(err) ?? ErrorCodes.INCOMPATIBLE_PINS, fix: 'run bpfmesh check as root' };
    }
    if (p !== null) lines.push(fail(`pins.${name}`, `${title}: ${dir}`, p.why, p.code, p.fix));
  }
  if (lines.length === 0) lines.push(pass('pins', title, `${folders.length} pin folder(s) under ${pinRoot(bpffs)} match layout ${layout.id}`));
  return lines;
}
