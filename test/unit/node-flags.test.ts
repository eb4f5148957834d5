// The proxy's check for the image's V8 flag, in every form Node accepts it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { maxSemiSpaceSize, uncappedYoungGenerationWarning } from '../../src/util/node-flags.js';

test('--max-semi-space-size is found in NODE_OPTIONS and in Node flags, in the forms V8 takes', () => {
  assert.equal(maxSemiSpaceSize([], '--max-semi-space-size=4'), '4');
  assert.equal(maxSemiSpaceSize([], '--enable-source-maps  --max_semi_space_size=8'), '8');
  assert.equal(maxSemiSpaceSize(['--max-semi-space-size', '2'], undefined), '2');
  assert.equal(maxSemiSpaceSize(['--max-semi-space-size=16'], '--max-semi-space-size=4'), '16', 'a flag on the command line wins');
  assert.equal(maxSemiSpaceSize([], undefined), undefined);
  assert.equal(maxSemiSpaceSize(['--max-old-space-size=64'], '--max-semi-space-sizes=4'), undefined, 'other flags do not count');
});

test('the start-up warning names the flag, and is silent when it is set', () => {
  assert.match(uncappedYoungGenerationWarning([], undefined) ?? '', /NODE_OPTIONS=--max-semi-space-size=4/);
  assert.equal(uncappedYoungGenerationWarning([], '--max-semi-space-size=4'), undefined);
});
