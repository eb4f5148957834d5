// TlsStore: what material it accepts, readiness, and that a refused update
// keeps the previous material.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { TlsStore } from '../../src/tls/tls-store.js';
import { materialOf, mintAnchor, mintIssuer, mintLeaf, type Issued } from '../helpers/tls-pki.js';

const A = 'a.ns.serviceaccount.identity.linkerd.cluster.local';
const B = 'b.ns.serviceaccount.identity.linkerd.cluster.local';
const HOUR = 3600 * 1000;

let anchor: Issued;
let issuer: Issued;
let leafA: Issued;
let leafB: Issued;

before(async () => {
  anchor = await mintAnchor();
  issuer = await mintIssuer(anchor);
  leafA = await mintLeaf(issuer, A);
  leafB = await mintLeaf(issuer, B);
});

const material = { code: 'BPFMESH_E_TLS_MATERIAL' };
// A call, so that TypeScript does not keep its narrowing of `store.leaf` across updates.
const serialOf = (s: TlsStore): string | undefined => s.leaf?.serialNumber;

test('store: trust anchors must be CA certificates in PEM', () => {
  assert.throws(() => new TlsStore({ trustAnchorsPem: '' }), material);
  assert.throws(() => new TlsStore({ trustAnchorsPem: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n' }), material);
  assert.throws(() => new TlsStore({ trustAnchorsPem: leafA.certPem }), /not a CA certificate/);
  const both = new TlsStore({ trustAnchorsPem: anchor.certPem + issuer.certPem });
  assert.equal(both.ready, false);
});

test('store: not ready until the first update; then contexts, identity and leaf; listeners told', () => {
  const store = new TlsStore({ trustAnchorsPem: anchor.certPem, identity: A });
  assert.equal(store.ready, false);
  assert.equal(store.identity, A);
  assert.equal(store.leaf, undefined);
  assert.throws(() => store.serverContext, { code: 'BPFMESH_E_TLS_NOT_READY' });
  assert.throws(() => store.clientContext, { code: 'BPFMESH_E_TLS_NOT_READY' });
  let told = 0;
  const off = store.onUpdate(() => told++);
  store.update(materialOf(leafA, issuer));
  assert.equal(store.ready, true);
  assert.ok(store.serverContext);
  assert.notEqual(store.serverContext, store.clientContext);
  assert.equal(serialOf(store), leafA.cert.serialNumber.toUpperCase());
  assert.equal(told, 1);
  off();
  store.update(materialOf(leafA, issuer));
  assert.equal(told, 1);

  // Without a configured name, the material's identity is ours.
  const unnamed = new TlsStore({ trustAnchorsPem: anchor.certPem });
  assert.equal(unnamed.identity, undefined);
  unnamed.update(materialOf(leafB, issuer));
  assert.equal(unnamed.identity, B);
});

test('store: refused material leaves the previous one in place', async () => {
  const store = new TlsStore({ trustAnchorsPem: anchor.certPem, identity: A });
  store.update(materialOf(leafA, issuer));
  const ctx = store.serverContext;
  const leafA2 = await mintLeaf(issuer, A);

  // The key of another certificate.
  assert.throws(() => store.update({ ...materialOf(leafA2, issuer), keyPem: leafA.keyPem }), /private key does not match/);
  // Not our configured name.
  assert.throws(() => store.update(materialOf(leafB, issuer)), /not the configured identity/);
  // A certificate for another name than the one claimed.
  assert.throws(() => store.update({ ...materialOf(leafB, issuer), identity: A }), /leaf certificate is for \[b\.ns/);
  // Unreadable.
  assert.throws(() => store.update({ identity: A, keyPem: 'nope', certChainPem: leafA.certPem }), material);
  assert.throws(() => store.update({ identity: A, keyPem: leafA.keyPem, certChainPem: '' }), /no certificate/);
  // The intermediate missing: no path to the anchor.
  assert.throws(() => store.update({ identity: A, keyPem: leafA2.keyPem, certChainPem: leafA2.certPem }), /no issuer/);
  // From another trust anchor.
  const otherIssuer = await mintIssuer(await mintAnchor('other-root'), 'other-issuer');
  const foreign = await mintLeaf(otherIssuer, A);
  assert.throws(() => store.update(materialOf(foreign, otherIssuer)), /no issuer/);
  // Outside the validity period.
  const expired = await mintLeaf(issuer, A, { notBefore: new Date(Date.now() - 3 * HOUR), notAfter: new Date(Date.now() - HOUR) });
  assert.throws(() => store.update(materialOf(expired, issuer)), /expired/);
  const future = await mintLeaf(issuer, A, { notBefore: new Date(Date.now() + HOUR), notAfter: new Date(Date.now() + 2 * HOUR) });
  assert.throws(() => store.update(materialOf(future, issuer)), /not valid before/);

  assert.equal(store.serverContext, ctx);
  assert.equal(serialOf(store), leafA.cert.serialNumber.toUpperCase());
});

test('store: chains with the root included, or a leaf signed by the anchor itself', async () => {
  const store = new TlsStore({ trustAnchorsPem: anchor.certPem });
  const m = materialOf(leafA, issuer);
  store.update({ ...m, certChainPem: m.certChainPem + anchor.certPem });
  const direct = await mintLeaf(anchor, B);
  store.update({ identity: B, keyPem: direct.keyPem, certChainPem: direct.certPem });
  assert.equal(store.identity, B);
});
