import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatAddr, stripMapped } from '../../src/util/addr.js';

test('formatAddr brackets IPv6 hosts only', () => {
  assert.equal(formatAddr({ host: '10.0.0.1', port: 80 }), '10.0.0.1:80');
  assert.equal(formatAddr({ host: 'web.ns.svc.cluster.local', port: 8080 }), 'web.ns.svc.cluster.local:8080');
  assert.equal(formatAddr({ host: '::1', port: 4143 }), '[::1]:4143');
  assert.equal(formatAddr({ host: 'fd00::1', port: 0 }), '[fd00::1]:0');
});

test('stripMapped turns IPv4-mapped IPv6 into IPv4 and leaves everything else', () => {
  assert.equal(stripMapped('::ffff:10.1.2.3'), '10.1.2.3');
  assert.equal(stripMapped('10.1.2.3'), '10.1.2.3');
  assert.equal(stripMapped('::1'), '::1');
  assert.equal(stripMapped('fd00::ffff:1.2.3.4'), 'fd00::ffff:1.2.3.4');
  assert.equal(stripMapped(''), '');
});
