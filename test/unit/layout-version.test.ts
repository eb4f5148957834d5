// The layout id of the built objects is the one the source says
// (src/intercept/versions.ts LAYOUT_ID): a change to a pinned map's
// definition fails here until LAYOUT_ID is updated and the old id is listed
// in PREVIOUS_LAYOUTS, so installs of the old layout keep upgrading.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { currentLayout, LAYOUT_ID, layoutIdOf, PREVIOUS_LAYOUTS, type MapShape } from '../../src/intercept/versions.js';

test('the built objects make layout LAYOUT_ID', () => {
  const layout = currentLayout();
  assert.equal(
    layout.id,
    LAYOUT_ID,
    `the pinned maps changed (layout ${layout.id}); set LAYOUT_ID to it and add '${LAYOUT_ID}' to PREVIOUS_LAYOUTS in src/intercept/versions.ts, with a migration in src/intercept/upgrade.ts if rows cannot be copied as they are`,
  );
  assert.ok(!(LAYOUT_ID in PREVIOUS_LAYOUTS), 'the current layout is not a previous one');
  assert.ok(layout.shapes.has('mesh_settings') && layout.shapes.has('mesh_sock_dst'), [...layout.shapes.keys()].join(' '));
  assert.ok(!layout.shapes.has('mesh_sock_addr'), 'maps that are not pinned are not part of the layout');
});

test('the id depends on every field of every map, not on their order', () => {
  const a: MapShape = { name: 'mesh_a', type: 'hash', keySize: 8, valueSize: 24, maxEntries: 1024, flags: 0 };
  const b: MapShape = { name: 'mesh_b', type: 'lru_hash', keySize: 8, valueSize: 8, maxEntries: 16, flags: 0 };
  const id = layoutIdOf([a, b]);
  assert.match(id, /^[0-9a-f]{8}$/);
  assert.equal(layoutIdOf([b, a]), id);
  for (const f of ['keySize', 'valueSize', 'maxEntries', 'flags'] as const) assert.notEqual(layoutIdOf([{ ...a, [f]: a[f] + 1 }, b]), id, f);
  assert.notEqual(layoutIdOf([{ ...a, type: 'lru_hash' }, b]), id);
  assert.notEqual(layoutIdOf([a]), id, 'a map added or removed');
});
