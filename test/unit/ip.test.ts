import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatCidr, formatIp, parseCidr, parseIp } from '../../src/util/ip.js';

test('IPv4 and IPv6 addresses round-trip through bytes', () => {
  for (const a of ['10.0.3.7', '0.0.0.0', '255.255.255.255', '::1', '::', 'fd77::2', '2001:db8::8:800:200c:417a', '1:2:3:4:5:6:7:8', '::ffff:10.1.2.3']) {
    const p = parseIp(a);
    assert.ok(p, a);
    const back = formatIp(p.bytes, p.family);
    assert.deepEqual(parseIp(back)?.bytes, p.bytes, `${a} -> ${back}`);
  }
  assert.equal(formatIp(parseIp('fd77:0:0:0:0:0:0:2')!.bytes, 6), 'fd77::2');
  assert.equal(parseIp('10.0.0.256'), null);
  assert.equal(parseIp('nope'), null);
});

test('CIDRs are parsed, host bits masked, bad ones rejected', () => {
  assert.equal(formatCidr(parseCidr('10.1.2.3/8')!), '10.0.0.0/8');
  assert.equal(formatCidr(parseCidr('fd00::1/8')!), 'fd00::/8');
  assert.equal(formatCidr(parseCidr('192.168.1.1')!), '192.168.1.1/32');
  for (const bad of ['10.0.0.0/33', '10.0.0.0/-1', '10.0.0/8', 'fd00::/129', '10.0.0.0/8/8', '']) assert.equal(parseCidr(bad), null, bad);
});
