// One registry of error codes (src/errors.ts ErrorCodes): every BPFMESH_E_*
// code named in the product (TypeScript, the C++ addon, the launchers)
// is registered, the README's table lists every registered code, and no
// TypeScript module outside the registry spells a code out itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../../src/config/paths.js';
import { ErrorCodes } from '../../src/errors.js';

// Whole codes only: `BPFMESH_E_*` and `BPFMESH_E_CONTROL_*` in prose are
// families, not codes, and end in "_" here.
const CODE = /BPFMESH_E_[A-Z0-9_]*[A-Z0-9]\b/g;

function files(dir: string, keep: (name: string) => boolean): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(REPO_ROOT, dir), { withFileTypes: true })) {
    const rel = join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== 'gen' && e.name !== 'node_modules') out.push(...files(rel, keep));
    } else if (keep(e.name)) out.push(rel);
  }
  return out;
}

const registered = new Set<string>(Object.values(ErrorCodes));
const read = (rel: string): string => readFileSync(join(REPO_ROOT, rel), 'utf8');

const sources = [
  ...files('src', (n) => n.endsWith('.ts')),
  ...files('native', (n) => /\.(cc|c|h)$/.test(n)),
  ...files('bin', () => true),
];

test('the registry has one name per code and every value is its name with the prefix', () => {
  for (const [name, code] of Object.entries(ErrorCodes)) assert.equal(code, `BPFMESH_E_${name}`);
  assert.equal(registered.size, Object.keys(ErrorCodes).length);
});

test('every code used in src, native and bin is in src/errors.ts ErrorCodes', () => {
  assert.ok(sources.some((f) => f === join('native', 'errors.cc')), 'native/errors.cc is scanned');
  const missing: string[] = [];
  for (const f of sources) {
    for (const [i, line] of read(f).split('\n').entries()) {
      for (const m of line.matchAll(CODE)) if (!registered.has(m[0])) missing.push(`${f}:${i + 1}: ${m[0]}`);
    }
  }
  assert.deepEqual(missing, [], 'codes not in ErrorCodes');
});

test('the native addon throws only registered codes, and the TS contract names them all', () => {
  const native = new Set([...read('native/errors.cc').matchAll(/"(BPFMESH_E_[A-Z0-9_]+)"/g)].map((m) => m[1]!));
  assert.ok(native.size >= 9, `native/errors.cc declares its codes as string constants (found ${native.size})`);
  for (const c of native) assert.ok(registered.has(c), `${c} (native/errors.cc) is not in ErrorCodes`);
});

test("README's error-code table lists every registered code", () => {
  const readme = read('README.md');
  const start = readme.indexOf('\n## Error codes\n');
  assert.ok(start >= 0, 'README has an "Error codes" section');
  const end = readme.indexOf('\n## ', start + 1);
  const rows = readme.slice(start, end < 0 ? undefined : end).split('\n').filter((l) => l.startsWith('| `BPFMESH_E_'));
  const listed = new Set(rows.flatMap((l) => [...(l.split(' | ')[0] ?? '').matchAll(CODE)].map((m) => m[0])));
  const unlisted = [...registered].filter((c) => !listed.has(c));
  assert.deepEqual(unlisted, [], 'registered codes missing from README "Error codes"');
});

test('TypeScript modules take codes from the registry instead of spelling them out', () => {
  const spelled: string[] = [];
  for (const f of sources.filter((s) => s.startsWith('src') && s.endsWith('.ts'))) {
    if (f === join('src', 'errors.ts')) continue;
    for (const [i, line] of read(f).split('\n').entries()) {
      const t = line.trim();
      if (t.startsWith('//') || t.startsWith('*') || t.startsWith('/*')) continue;
      const code = line.replace(/\s\/\/.*$/, '').match(CODE);
      if (code !== null) spelled.push(`${f}:${i + 1}: ${code[0]}`);
    }
  }
  assert.deepEqual(spelled, [], 'use ErrorCodes.X (src/errors.ts) for these');
});
