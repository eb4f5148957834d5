// Layering: identity and discovery (src/control), mTLS (src/tls), inbound
// policy (src/policy) and the helpers (src/util) sit below the proxy. No
// module there may reach src/proxy, directly or through another module,
// type-only imports included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { REPO_ROOT } from '../../src/config/paths.js';

const SRC = join(REPO_ROOT, 'src');
const BELOW_PROXY = ['control', 'tls', 'util', 'policy'];
const PROXY = join(SRC, 'proxy') + '/';

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? tsFiles(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

// `import … from`, `export … from`, `import '…'` and `import('…')` (type positions too).
const SPECIFIER = /(?:^|[\s;])(?:import|export)\s[^;'"]*?from\s*['"]([^'"]+)['"]|(?:^|[\s;])import\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

/** The source files a module imports (relative specifiers only; packages and node: are not ours). */
export function importsOf(file: string, text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(SPECIFIER)) {
    const spec = m[1] ?? m[2] ?? m[3] ?? '';
    if (!spec.startsWith('.')) continue;
    const base = resolve(dirname(file), spec);
    const candidates = [base.replace(/\.js$/, '.ts'), `${base}.ts`, join(base, 'index.ts')];
    const hit = candidates.find((c) => c.endsWith('.ts') && existsSync(c));
    assert.ok(hit !== undefined, `${relative(REPO_ROOT, file)}: cannot resolve ${spec}`);
    out.push(hit);
  }
  return out;
}

const graph = new Map<string, string[]>();
const edges = (file: string): string[] => {
  let e = graph.get(file);
  if (e === undefined) graph.set(file, (e = importsOf(file, readFileSync(file, 'utf8'))));
  return e;
};

/** The first import chain from `start` into src/proxy, or null. */
function pathIntoProxy(start: string): string[] | null {
  const prev = new Map<string, string | null>([[start, null]]);
  const queue = [start];
  while (queue.length > 0) {
    const f = queue.shift()!;
    if (f.startsWith(PROXY)) {
      const chain: string[] = [];
      for (let at: string | null = f; at !== null; at = prev.get(at) ?? null) chain.unshift(relative(REPO_ROOT, at));
      return chain;
    }
    for (const next of edges(f)) {
      if (!prev.has(next)) {
        prev.set(next, f);
        queue.push(next);
      }
    }
  }
  return null;
}

test('the import scanner sees every form of import (or the layering check below could pass on a blind scan)', () => {
  const f = join(SRC, 'tls', 'x.ts');
  const text = [
    "import { a } from '../util/addr.js';",
    "import type { B } from '../util/endpoint.js';",
    "export { c } from '../errors.js';",
    "import '../control/x509.js';",
    "type S = import('../proxy/types.js').Addr;",
    "import {\n  d,\n  e,\n} from './client.js';",
    "import { f } from 'node:net';",
  ].join('\n');
  assert.deepEqual(importsOf(f, text).map((p) => relative(SRC, p)), [
    'util/addr.ts',
    'util/endpoint.ts',
    'errors.ts',
    'control/x509.ts',
    'proxy/types.ts',
    'tls/client.ts',
  ]);
});

test('src/control, src/tls, src/util and src/policy do not reach src/proxy', () => {
  const offenders: string[] = [];
  let scanned = 0;
  for (const dir of BELOW_PROXY) {
    for (const f of tsFiles(join(SRC, dir))) {
      if (f.includes(`${join(SRC, 'control', 'gen')}/`)) continue; // generated protobuf types, no imports of ours
      scanned++;
      const chain = pathIntoProxy(f);
      if (chain !== null) offenders.push(chain.join(' -> '));
    }
  }
  assert.ok(scanned >= 20, `scanned ${scanned} modules`);
  assert.deepEqual(offenders, [], 'import chains into src/proxy from a layer below it');
});
