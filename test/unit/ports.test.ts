import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePortList, rangeToPrefixes } from '../../src/util/ports.js';

function covered(lo: number, hi: number): number[] {
  const ports: number[] = [];
  for (const p of rangeToPrefixes(lo, hi)) for (let i = 0; i < 1 << (16 - p.bits); i++) ports.push(p.port + i);
  return ports;
}

test('a range decomposes into aligned blocks that cover it exactly', () => {
  for (const [lo, hi] of [[1, 1], [80, 80], [8000, 8100], [1, 65535], [1024, 2047], [3, 17], [65535, 65535]] as const) {
    const ports = covered(lo, hi);
    assert.equal(ports.length, hi - lo + 1, `${lo}-${hi}`);
    assert.equal(ports[0], lo);
    assert.equal(ports.at(-1), hi);
    assert.deepEqual([...ports].sort((a, b) => a - b), ports, 'blocks are in order and disjoint');
  }
  assert.ok(rangeToPrefixes(1, 65535).length <= 16, 'the full range costs at most 16 rows');
  assert.deepEqual(rangeToPrefixes(1024, 2047), [{ port: 1024, bits: 6 }]);
});

test('port lists accept proxy-init syntax and reject bad input with stable codes', () => {
  assert.deepEqual(parsePortList('4190, 4191,8000-8100', '--x'), [
    { lo: 4190, hi: 4190 },
    { lo: 4191, hi: 4191 },
    { lo: 8000, hi: 8100 },
  ]);
  assert.deepEqual(parsePortList('', '--x'), []);
  assert.throws(() => parsePortList('70000', '--x'), { code: 'BPFMESH_E_BAD_PORT' });
  assert.throws(() => parsePortList('0', '--x'), { code: 'BPFMESH_E_BAD_PORT' });
  assert.throws(() => parsePortList('http', '--x'), { code: 'BPFMESH_E_BAD_PORT' });
  assert.throws(() => parsePortList('90-80', '--x'), { code: 'BPFMESH_E_BAD_PORT_RANGE' });
  assert.throws(() => parsePortList('80-', '--x'), { code: 'BPFMESH_E_BAD_PORT' });
});
