// Versioned pin folders (README "Upgrading"). An install folder (a pod's
// <bpffs>/bpfmesh/<pod>/, or node/) keeps its link pins (link_*) at the top:
// they outlive releases, BPF_LINK_UPDATE swaps their programs. Its maps live
// in v<layout>/ below it, where <layout> is a hash of the definitions (type,
// key and value size, max_entries, flags) of every map the built objects pin.
// So the name changes exactly when libbpf would refuse to reuse a pin, and
// nobody has to remember a bump. Each maps folder also holds layout_version,
// a pinned one-element ARRAY with the same id as a u32, for readers that
// only see a map (check, bpftool). Releases before this one pinned the maps
// flat in the install folder, with no marker: layout "legacy".
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { bpfObjectPath } from '../config/paths.js';
import { native, type MapInfo } from '../bpf/native.js';
import { sha256Hex } from '../util/sha256.js';

export const LAYOUT_MARKER = 'layout_version';
/** The folder of the node-wide lock under <bpffs>/bpfmesh (node-lock.ts). */
export const LOCK_NAME = 'node_lock';
/** Maps pinned flat in the install folder by releases before versioned folders. */
export const LEGACY = 'legacy';

/**
 * This tree's layout id. test/unit/layout-version.test.ts fails when the
 * built objects' maps hash to another id: set the new id here and add this
 * one to PREVIOUS_LAYOUTS, so that installs of it keep upgrading.
 */
export const LAYOUT_ID = 'e825af86';

/** Versioned layouts of earlier releases this one upgrades from, with what changed since. */
export const PREVIOUS_LAYOUTS: Readonly<Record<string, string>> = {
  '586d304a': 'before the observe maps (mesh_obs_cfg, mesh_events, mesh_obs_drops): created empty on upgrade',
};

/** What of a map the layout id covers: its definition, not where it is pinned. */
export type MapShape = Pick<MapInfo, 'name' | 'type' | 'keySize' | 'valueSize' | 'maxEntries' | 'flags'>;

export const SHAPE_FIELDS = ['type', 'keySize', 'valueSize', 'maxEntries', 'flags'] as const;

export interface Layout {
  id: string;
  /** The pinned maps, by name. */
  shapes: Map<string, MapShape>;
}

const LAYOUT_DIR = /^v([0-9a-f]{8})$/;

/** The maps an object pins (LIBBPF_PIN_BY_NAME), read from its ELF without loading it. */
export function pinnedShapes(objectPath: string): MapShape[] {
  const obj = native().openObject(objectPath);
  try {
    return obj
      .maps()
      .filter((m) => m.pinPath !== null && m.pinPath !== undefined)
      .map((m) => ({ name: m.name, type: m.type, keySize: m.keySize, valueSize: m.valueSize, maxEntries: m.maxEntries, flags: m.flags }));
  } finally {
    obj.close();
  }
}

export function layoutIdOf(shapes: Iterable<MapShape>): string {
  const lines = [...shapes].map((s) => [s.name, ...SHAPE_FIELDS.map((f) => String(s[f]))].join(' ')).sort();
  return sha256Hex(lines.join('\n')).slice(0, 8);
}

let cached: { key: string; layout: Layout } | undefined;

/** The layout of the built objects (intercept and inbound share their pinned maps). */
export function currentLayout(): Layout {
  const paths = [bpfObjectPath('intercept'), bpfObjectPath('inbound')];
  const key = paths.join('\0');
  if (cached?.key === key) return cached.layout;
  const shapes = new Map<string, MapShape>();
  for (const p of paths) for (const s of pinnedShapes(p)) shapes.set(s.name, s);
  const layout = { id: layoutIdOf(shapes.values()), shapes };
  cached = { key, layout };
  return layout;
}

export const layoutDir = (pinDir: string, id: string): string => (id === LEGACY ? pinDir : join(pinDir, `v${id}`));

export const isLayoutDirName = (name: string): boolean => LAYOUT_DIR.test(name);

export const knownLayout = (id: string): boolean => id === LEGACY || id === currentLayout().id || id in PREVIOUS_LAYOUTS;

export interface FoundLayout {
  /** 8 hex digits, or LEGACY. */
  id: string;
  /** Where its maps are pinned. */
  dir: string;
}

/** Maps pinned flat in an install folder: a legacy install. */
const legacyMapNames = (pinDir: string): string[] => readdirSync(pinDir).filter((n) => n.startsWith('mesh_') || n === LAYOUT_MARKER);

/** Every layout with maps in an install folder: v<id>/ folders, and the legacy flat maps. */
export function layoutsIn(pinDir: string): FoundLayout[] {
  if (!existsSync(pinDir)) return [];
  const found: FoundLayout[] = [];
  for (const n of readdirSync(pinDir).sort()) {
    const m = LAYOUT_DIR.exec(n);
    if (m !== null) found.push({ id: m[1]!, dir: join(pinDir, n) });
  }
  if (legacyMapNames(pinDir).length > 0) found.push({ id: LEGACY, dir: pinDir });
  return found;
}

/** Pin names of a layout's maps folder (for a legacy one: only the maps, not the links beside them). */
export function layoutPins(found: FoundLayout): string[] {
  return found.id === LEGACY ? legacyMapNames(found.dir) : readdirSync(found.dir);
}

/** Where an install folder's maps are: this build's layout when present, else the one that is there (before its upgrade). */
export function mapsDirOf(pinDir: string): string {
  const current = layoutDir(pinDir, currentLayout().id);
  if (existsSync(current)) return current;
  return layoutsIn(pinDir)[0]?.dir ?? current;
}

export const hasMaps = (pinDir: string): boolean => existsSync(join(mapsDirOf(pinDir), 'mesh_settings'));

/** Pins the marker in a maps folder unless it is there. */
export function writeLayoutMarker(mapsDir: string, id: string): void {
  const path = join(mapsDir, LAYOUT_MARKER);
  if (!existsSync(path)) native().pinLayoutMarker(path, parseInt(id, 16));
}

/** The marker's layout id (8 hex digits), or null when there is none. */
export function readLayoutMarker(mapsDir: string): string | null {
  const path = join(mapsDir, LAYOUT_MARKER);
  if (!existsSync(path)) return null;
  const map = native().openPinnedMap(path);
  try {
    const v = map.lookup(Buffer.alloc(4));
    return v === null ? null : v.readUInt32LE(0).toString(16).padStart(8, '0');
  } finally {
    map.close();
  }
}
