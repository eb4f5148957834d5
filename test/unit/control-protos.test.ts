// The proxy API's wire format: field numbers checked against bytes built by
// hand (not through our .proto files), and the TcpAddress codecs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeTcpAddress,
  destinationService,
  encodeTcpAddress,
  identityService,
  msToTimestamp,
  timestampToMs,
  type UpdateMsg,
} from '../../src/control/protos.js';

// A minimal protobuf writer: varint, fixed32/64 (little-endian), length-delimited.
function varint(n: number | bigint): Buffer {
  let v = BigInt(n);
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return Buffer.from(out);
}
const tag = (field: number, wire: number): Buffer => varint((field << 3) | wire);
const vfield = (field: number, n: number): Buffer => Buffer.concat([tag(field, 0), varint(n)]);
const lfield = (field: number, ...parts: Array<Buffer | string>): Buffer => {
  const body = Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));
  return Buffer.concat([tag(field, 2), varint(body.length), body]);
};
const f32 = (field: number, n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return Buffer.concat([tag(field, 5), b]);
};
const f64 = (field: number, n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return Buffer.concat([tag(field, 1), b]);
};

const get = destinationService().Get;
const certify = identityService().Certify;

test('GetDestination: scheme 1, path 2, context_token 3', () => {
  const bytes = get.requestSerialize({ scheme: 'x', path: 'web:80', context_token: '{"ns":"a"}' });
  assert.deepEqual(bytes, Buffer.concat([lfield(1, 'x'), lfield(2, 'web:80'), lfield(3, '{"ns":"a"}')]));
});

test('Update.add decodes: addr (ipv4 fixed32 big-endian value), weight 3, labels 4, tls_identity 5, protocol_hint 6', () => {
  const tcp = lfield(1, lfield(1, f32(1, 0x0a000102)), vfield(2, 8080)); // 10.0.1.2:8080
  const addr = Buffer.concat([
    tcp,
    vfield(3, 10000),
    lfield(4, lfield(1, 'pod'), lfield(2, 'web-0')),
    lfield(5, lfield(1, lfield(1, 'web.ns.serviceaccount.identity.linkerd.cluster.local')), lfield(4, lfield(1, 'web.sni'))),
    lfield(6, lfield(1)),
  ]);
  const update = Buffer.concat([lfield(1, lfield(1, addr), lfield(2, lfield(1, 'service'), lfield(2, 'web')))]);
  const u = get.responseDeserialize(update) as UpdateMsg;
  assert.equal(u.update, 'add');
  const w = u.add?.addrs[0];
  assert.ok(w);
  assert.deepEqual(decodeTcpAddress(w.addr), { host: '10.0.1.2', port: 8080 });
  assert.equal(w.weight, 10000);
  assert.deepEqual(w.metric_labels, { pod: 'web-0' });
  assert.deepEqual(u.add?.metric_labels, { service: 'web' });
  assert.equal(w.tls_identity?.strategy, 'dns_like_identity');
  assert.equal(w.tls_identity?.dns_like_identity?.name, 'web.ns.serviceaccount.identity.linkerd.cluster.local');
  assert.equal(w.tls_identity?.server_name?.name, 'web.sni');
  assert.equal(w.protocol_hint?.protocol, 'h2');
});

test('Update.remove 2 (ipv6 first/last fixed64) and no_endpoints 3', () => {
  const v6 = lfield(1, lfield(2, f64(1, 0xfd00_0000_0000_0000n), f64(2, 0x0000_0000_0000_0003n)));
  const r = get.responseDeserialize(lfield(2, lfield(1, v6, vfield(2, 80)))) as UpdateMsg;
  assert.equal(r.update, 'remove');
  assert.deepEqual(decodeTcpAddress(r.remove?.addrs[0]), { host: 'fd00::3', port: 80 });
  const n = get.responseDeserialize(lfield(3, vfield(1, 1))) as UpdateMsg;
  assert.equal(n.update, 'no_endpoints');
  assert.equal(n.no_endpoints?.exists, true);
  const f = get.responseDeserialize(lfield(3)) as UpdateMsg;
  assert.equal(f.no_endpoints?.exists, false, 'exists:false is the empty message');
  // protocol_hint.opaque is field 3 of the oneof, opaque_transport field 2.
  const hint = get.responseDeserialize(lfield(1, lfield(1, lfield(6, lfield(3), lfield(2, vfield(1, 4143)))))) as UpdateMsg;
  assert.equal(hint.add?.addrs[0]?.protocol_hint?.protocol, 'opaque');
  assert.equal(hint.add?.addrs[0]?.protocol_hint?.opaque_transport?.inbound_port, 4143);
});

test('TcpAddress codecs: ipv4 as a big-endian value, ipv6 as two halves, round trips through the wire', () => {
  assert.deepEqual(encodeTcpAddress({ host: '10.0.0.1', port: 80 }), { ip: { ipv4: 0x0a000001 }, port: 80 });
  assert.deepEqual(encodeTcpAddress({ host: '255.255.255.255', port: 1 }).ip, { ipv4: 0xffffffff });
  assert.deepEqual(encodeTcpAddress({ host: '2001:db8::1', port: 443 }).ip, {
    ipv6: { first: (0x20010db8n << 32n).toString(), last: '1' },
  });
  for (const host of ['10.0.0.1', '0.0.0.0', '255.255.255.255', '2001:db8::1', '::1', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff']) {
    const u: UpdateMsg = { remove: { addrs: [encodeTcpAddress({ host, port: 4143 })] } };
    const back = get.responseDeserialize(get.responseSerialize(u)) as UpdateMsg;
    assert.deepEqual(decodeTcpAddress(back.remove?.addrs[0]), { host, port: 4143 }, host);
  }
  // The wire bytes of 10.0.0.1: fixed32 little-endian on the wire, so 01 00 00 0a.
  const wire = get.responseSerialize({ remove: { addrs: [encodeTcpAddress({ host: '10.0.0.1', port: 80 })] } });
  assert.ok(wire.includes(Buffer.from([0x0d, 0x01, 0x00, 0x00, 0x0a])));
  assert.equal(decodeTcpAddress({ ip: null, port: 1 }), null);
  assert.throws(() => encodeTcpAddress({ host: 'web', port: 80 }), { code: 'BPFMESH_E_BAD_ARGUMENT' });
});

test('Certify: request identity 1, token 2, csr 3; response leaf 1, intermediates 2, valid_until 3', () => {
  const req = certify.requestSerialize({ identity: 'a.b', token: Buffer.from('tok'), certificate_signing_request: Buffer.from([1, 2]) });
  assert.deepEqual(req, Buffer.concat([lfield(1, 'a.b'), lfield(2, 'tok'), lfield(3, Buffer.from([1, 2]))]));
  const res = certify.responseDeserialize(
    Buffer.concat([lfield(1, Buffer.from([0xaa])), lfield(2, Buffer.from([0xbb])), lfield(2, Buffer.from([0xcc])), lfield(3, vfield(1, 1_700_000_000), vfield(2, 500_000_000))]),
  ) as { leaf_certificate: Buffer; intermediate_certificates: Buffer[]; valid_until: { seconds: string; nanos: number } };
  assert.deepEqual(res.leaf_certificate, Buffer.from([0xaa]));
  assert.deepEqual(res.intermediate_certificates, [Buffer.from([0xbb]), Buffer.from([0xcc])]);
  assert.equal(timestampToMs(res.valid_until), 1_700_000_000_500);
  assert.deepEqual(msToTimestamp(1_700_000_000_500), { seconds: '1700000000', nanos: 500_000_000 });
});
