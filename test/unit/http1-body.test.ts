import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChunkedDecoder } from '../../src/proxy/http1/body.js';

const body = Buffer.from('5;ext=1\r\nhello\r\n0000B\r\n world here\r\n0\r\nX-Sum: 1\r\nX-More: 2\r\n\r\n', 'latin1');
const tail = Buffer.from('GET /next', 'latin1');

/** Feed `parts`; returns the end offset (in the concatenation) and the de-chunked data. */
function run(parts: Buffer[]): { end: number; data: string } {
  const dec = new ChunkedDecoder();
  const data: Buffer[] = [];
  let offset = 0;
  for (const p of parts) {
    const used = dec.feed(p, 0, data);
    if (dec.done) return { end: offset + used, data: Buffer.concat(data).toString() };
    assert.equal(used, p.length);
    offset += p.length;
  }
  return { end: -1, data: Buffer.concat(data).toString() };
}

test('chunked: the end is found at every split, data extracted, trailers skipped', () => {
  const all = Buffer.concat([body, tail]);
  for (let cut = 0; cut <= all.length; cut++) {
    const r = run([all.subarray(0, cut), all.subarray(cut)]);
    assert.equal(r.end, body.length, `cut ${cut}`);
    assert.equal(r.data, 'hello world here', `cut ${cut}`);
  }
  // One byte at a time.
  const r = run([...all].map((x) => Buffer.from([x])));
  assert.equal(r.end, body.length);
});

test('chunked: an empty body and a body not yet complete', () => {
  assert.equal(run([Buffer.from('0\r\n\r\n')]).end, 5);
  assert.equal(run([Buffer.from('3\r\nab')]).end, -1);
});

test('chunked: framing errors are refused', () => {
  const bad = ['x\r\n', '\r\n', '5\r\nhelloXX', '5\nhello\r\n', '3\r\nabc\r\n0\r\nX\ny\r\n\r\n', `${'1'.repeat(17)}\r\n`, 'fffffffffffffff\r\n', '0\r\n\rX'];
  for (const t of bad) {
    assert.throws(() => new ChunkedDecoder().feed(Buffer.from(t, 'latin1')), { code: 'BPFMESH_E_HTTP_MALFORMED' }, JSON.stringify(t));
  }
  // A chunk-size line may not grow without bound (extensions).
  const dec = new ChunkedDecoder();
  assert.throws(() => dec.feed(Buffer.from(`1;${'e'.repeat(5000)}`)), { code: 'BPFMESH_E_HTTP_MALFORMED' });
});
