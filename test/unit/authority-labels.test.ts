// The per-connection authority label cache: two slots, one per base labels
// object, so the two bases a request derives from never evict each other.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AuthorityLabels } from '../../src/proxy/http1/authority-labels.js';
import { newConnLabels } from '../../src/proxy/types.js';

test('the same (base, authority) gives the same object, for both bases a request uses', () => {
  const conn = newConnLabels('outbound', '10.0.0.1:80', 'no_identity');
  const endpoint = { ...conn, server_id: 'web.ns.serviceaccount.identity.linkerd.cluster.local' };
  const cache = new AuthorityLabels();
  const a = cache.get(conn, 'web:80');
  const b = cache.get(endpoint, 'web:80');
  assert.equal(a.authority, 'web:80');
  assert.equal(b.server_id, endpoint.server_id);
  assert.equal(conn.authority, undefined, 'the base is not changed');
  for (let i = 0; i < 3; i++) {
    assert.equal(cache.get(conn, 'web:80'), a);
    assert.equal(cache.get(endpoint, 'web:80'), b);
  }
});

test('a new authority on a base replaces that base slot only; a third base takes the first slot', () => {
  const conn = newConnLabels('inbound', '10.0.0.2:8080', 'no_identity');
  const endpoint = { ...conn, tls: 'true' };
  const cache = new AuthorityLabels();
  cache.get(conn, 'a');
  const e = cache.get(endpoint, 'a');
  const c2 = cache.get(conn, 'b');
  assert.equal(c2.authority, 'b');
  assert.equal(cache.get(endpoint, 'a'), e, 'the other base keeps its slot');
  const third = { ...conn, tls: 'no_identity', sni: 'x' };
  cache.get(third, 'a');
  assert.equal(cache.get(endpoint, 'a'), e);
  assert.notEqual(cache.get(conn, 'b'), c2, 'the first slot went to the third base');
});
