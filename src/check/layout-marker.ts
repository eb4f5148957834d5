// The pin layout marker: a pinned one-element ARRAY map, layout_version,
// in each pin folder (<bpffs>/bpfmesh/<pod>/, <bpffs>/bpfmesh/node/), whose
// u32 says which layout of pins and maps the folder holds. A pinned map
// rather than a file (bpffs holds only pins and folders), and inside the
// folder so that every reader that lists <bpffs>/bpfmesh/ still sees only
// pods. Bump LAYOUT_VERSION when a map's type, key, value or size changes.
//
// Folders made before the marker existed carry none; for them, and always
// as well, each pinned map is compared with the built object's definition
// (what libbpf would refuse to reuse at the next install).
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, errorCode } from '../errors.js';
import { bpfObjectPath } from '../config/paths.js';
import { native, type MapInfo } from '../bpf/native.js';
import { MapNames } from '../intercept/layout.js';
import { NODE_DIR_NAME, NODE_LOCK_NAME } from '../intercept/node-wide.js';
import { pinRoot } from '../intercept/pod.js';
import { fail, pass, type CheckLine } from './types.js';

export const LAYOUT_VERSION = 1;
export const LAYOUT_MARKER = 'layout_version';

/** Pins the marker in a pin folder unless it is there. For installers (not wired in yet: see docs/check.md). */
export function writeLayoutMarker(pinDir: string, version = LAYOUT_VERSION): void {
  const path = join(pinDir, LAYOUT_MARKER);
  if (!existsSync(path)) native().pinLayoutMarker(path, version);
}

/** The folder's layout version, or null when it has no marker. */
export function readLayoutMarker(pinDir: string): number | null {
  const path = join(pinDir, LAYOUT_MARKER);
  if (!existsSync(path)) return null;
  const map = native().openPinnedMap(path);
  try {
    const v = map.lookup(Buffer.alloc(4));
    return v === null ? null : v.readUInt32LE(0);
  } finally {
    map.close();
  }
}

/** The pin folders under <bpffs>/bpfmesh: pod installs and node/. */
export function pinFolders(bpffs: string): string[] {
  const root = pinRoot(bpffs);
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((n) => n !== NODE_LOCK_NAME)
    .sort()
    .map((n) => join(root, n));
}

type Shape = Pick<MapInfo, 'type' | 'keySize' | 'valueSize' | 'maxEntries'>;

function expectedShapes(): Map<string, Shape> {
  const shapes = new Map<string, Shape>();
  const obj = native().openObject(bpfObjectPath('intercept'));
  try {
    for (const m of obj.maps()) shapes.set(m.name, m);
  } finally {
    obj.close();
  }
  return shapes;
}

/** Why a folder is incompatible, or null when it is not. */
function incompatibility(dir: string, shapes: Map<string, Shape>): string | null {
  const version = readLayoutMarker(dir);
  if (version !== null && version !== LAYOUT_VERSION) return `layout ${version}, this build uses layout ${LAYOUT_VERSION}`;
  for (const name of Object.values(MapNames)) {
    const path = join(dir, name);
    const want = shapes.get(name);
    if (!existsSync(path) || want === undefined) continue;
    const map = native().openPinnedMap(path);
    let have: MapInfo;
    try {
      have = map.info();
    } finally {
      map.close();
    }
    const diff = (['type', 'keySize', 'valueSize', 'maxEntries'] as const).filter((f) => have[f] !== want[f]);
    if (diff.length > 0) return `${name}: ${diff.map((f) => `${f} ${have[f]}, expected ${want[f]}`).join(', ')}`;
  }
  return null;
}

export function checkPinLayout(bpffs: string): CheckLine[] {
  const title = 'pins from this version';
  const folders = pinFolders(bpffs);
  if (folders.length === 0) return [pass('pins', title, `nothing pinned under ${pinRoot(bpffs)}`)];
  let shapes: Map<string, Shape>;
  try {
    shapes = expectedShapes();
  } catch (err) {
    return [fail('pins', title, (err as Error).message, errorCode(err) ?? ErrorCodes.OBJECT_MISSING, 'build the BPF objects: npm install')];
  }
  const lines: CheckLine[] = [];
  for (const dir of folders) {
    let why: string | null;
    try {
      why = incompatibility(dir, shapes);
    } catch (err) {
      why = `cannot read: ${(err as Error).message}`;
    }
    if (why === null) continue;
    const name = dir.slice(pinRoot(bpffs).length + 1);
    const reset = name === NODE_DIR_NAME ? 'bpfmesh reset --node' : `bpfmesh reset --pod-name ${name}`;
    lines.push(fail(`pins.${name}`, `${title}: ${dir}`, why, ErrorCodes.INCOMPATIBLE_PINS, `remove them with the bpfmesh that made them (or ${reset}), then install again`));
  }
  if (lines.length === 0) lines.push(pass('pins', title, `${folders.length} pin folder(s) under ${pinRoot(bpffs)} match layout ${LAYOUT_VERSION}`));
  return lines;
}
