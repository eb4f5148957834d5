// The ClientHello/SNI parser (pure), Node's SAN text parser, and the TLS
// labels and l5d-client-id helpers.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { parseClientHello } from '../../src/tls/client-hello.js';
import { nameMatches, parseSubjectAltName } from '../../src/tls/certs.js';
import { clientIdHeaderLine, clientTlsLabels, L5D_CLIENT_ID, serverTlsLabels, setClientIdHeader } from '../../src/tls/labels.js';

const SNI = 'b.ns.serviceaccount.identity.linkerd.cluster.local';
const servers: Server[] = [];
const clients: TLSSocket[] = [];
let hello: Buffer;
let helloNoSni: Buffer;

/** The first bytes a Node TLS client sends (its ClientHello), captured on a plain TCP server. */
async function capture(servername: string | undefined): Promise<Buffer> {
  const server = createServer((sock) => {
    let got = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      // One record: 5-byte header + its length.
      if (got.length >= 5 && got.length >= 5 + got.readUInt16BE(3)) {
        server.emit('hello', got);
        sock.destroy();
      }
    });
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const got = once(server, 'hello') as Promise<[Buffer]>;
  const c = tlsConnect({ host: '127.0.0.1', port: (server.address() as { port: number }).port, rejectUnauthorized: false, ...(servername ? { servername } : {}) });
  c.on('error', () => {});
  clients.push(c);
  return (await got)[0];
}

before(async () => {
  hello = await capture(SNI);
  helloNoSni = await capture(undefined); // an IP address as host: Node sends no SNI
});

after(async () => {
  for (const c of clients) c.destroy();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

test('client hello: a real one, byte by byte: "more" until complete, then the SNI', () => {
  let i = 0;
  while (i <= hello.length && parseClientHello(hello.subarray(0, i)).kind === 'more') i++;
  assert.equal(i, hello.length, 'decided only once the whole record is there');
  assert.deepEqual(parseClientHello(hello), { kind: 'client_hello', sni: SNI });
  // Bytes after the hello (the next layer's) change nothing.
  assert.deepEqual(parseClientHello(Buffer.concat([hello, Buffer.from('trailing')])), { kind: 'client_hello', sni: SNI });
  assert.deepEqual(parseClientHello(helloNoSni), { kind: 'client_hello', sni: undefined });
});

test('client hello: plaintext is told apart on its first bytes', () => {
  assert.deepEqual(parseClientHello(Buffer.alloc(0)), { kind: 'more' });
  assert.deepEqual(parseClientHello(Buffer.from('G')), { kind: 'not_tls' });
  assert.deepEqual(parseClientHello(Buffer.from('GET /TheProject.html HTTP/1.0\r\n\r\n')), { kind: 'not_tls' });
  assert.deepEqual(parseClientHello(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')), { kind: 'not_tls' });
  assert.deepEqual(parseClientHello(Buffer.from([0x16])), { kind: 'more' });
  assert.deepEqual(parseClientHello(Buffer.from([0x16, 0x02])), { kind: 'not_tls' });
  assert.deepEqual(parseClientHello(Buffer.from([0x16, 0x03, 0x07])), { kind: 'not_tls' });
  assert.deepEqual(parseClientHello(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00])), { kind: 'not_tls' }, 'empty record');
  // A handshake record that holds a ServerHello, not a ClientHello.
  assert.deepEqual(parseClientHello(Buffer.from([0x16, 0x03, 0x03, 0x00, 0x10, 0x02])), { kind: 'not_tls' });
});

/** A minimal well-formed ClientHello with the given extensions. */
function buildHello(extensions: Buffer | null): Buffer {
  const parts: Buffer[] = [
    Buffer.from([0x03, 0x03]),
    Buffer.alloc(32, 7), // random
    Buffer.from([0]), // session_id
    Buffer.from([0x00, 0x02, 0x13, 0x01]), // one cipher suite
    Buffer.from([0x01, 0x00]), // compression: null
  ];
  if (extensions !== null) parts.push(u16(extensions.length), extensions);
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([0x01, 0, body.length >> 8, body.length & 0xff]), body]);
}
const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
const sniExt = (name: string, nameType = 0): Buffer => {
  const n = Buffer.from(name, 'latin1');
  const entry = Buffer.concat([Buffer.from([nameType]), u16(n.length), n]);
  const list = Buffer.concat([u16(entry.length), entry]);
  return Buffer.concat([u16(0), u16(list.length), list]);
};
const otherExt = (type: number, len: number): Buffer => Buffer.concat([u16(type), u16(len), Buffer.alloc(len, 1)]);
const record = (hs: Buffer): Buffer => Buffer.concat([Buffer.from([0x16, 0x03, 0x01]), u16(hs.length), hs]);

test('client hello: synthetic ones (extension order, no extensions, other names, split records, bounds)', () => {
  assert.deepEqual(parseClientHello(record(buildHello(Buffer.concat([otherExt(10, 4), sniExt('x.example'), otherExt(43, 3)])))), {
    kind: 'client_hello',
    sni: 'x.example',
  });
  assert.deepEqual(parseClientHello(record(buildHello(null))), { kind: 'client_hello', sni: undefined });
  assert.deepEqual(parseClientHello(record(buildHello(otherExt(10, 4)))), { kind: 'client_hello', sni: undefined });
  // Not a host name: no SNI, as Linkerd does.
  assert.deepEqual(parseClientHello(record(buildHello(sniExt('bad name')))), { kind: 'client_hello', sni: undefined });
  assert.deepEqual(parseClientHello(record(buildHello(sniExt('x.example', 1)))), { kind: 'client_hello', sni: undefined });
  // Lengths that overrun their container: malformed, so not TLS we can use.
  const broken = buildHello(sniExt('x.example'));
  broken.writeUInt16BE(0xffff, broken.length - sniExt('x.example').length - 2);
  assert.deepEqual(parseClientHello(record(broken)), { kind: 'not_tls' });

  // One ClientHello over two handshake records.
  const hs = buildHello(sniExt('split.example'));
  const twoRecords = Buffer.concat([record(hs.subarray(0, 20)), record(hs.subarray(20))]);
  assert.deepEqual(parseClientHello(twoRecords.subarray(0, 30)), { kind: 'more' });
  assert.deepEqual(parseClientHello(twoRecords), { kind: 'client_hello', sni: 'split.example' });

  // Larger than the limit: TLS, SNI unknown, without waiting for the rest.
  const big = record(buildHello(Buffer.concat([otherExt(21, 3000), sniExt('late.example')])));
  assert.deepEqual(parseClientHello(big.subarray(0, 100), 1024), { kind: 'client_hello', sni: undefined });
  assert.deepEqual(parseClientHello(big), { kind: 'client_hello', sni: 'late.example' });
});

test('SAN text: Node quotes values with commas, so entries cannot be forged', () => {
  assert.deepEqual(parseSubjectAltName('DNS:a.example, URI:spiffe://td/ns/x/sa/y, IP Address:10.0.0.1'), [
    { type: 'DNS', value: 'a.example' },
    { type: 'URI', value: 'spiffe://td/ns/x/sa/y' },
    { type: 'IP Address', value: '10.0.0.1' },
  ]);
  assert.deepEqual(parseSubjectAltName('DNS:"a.example, DNS:evil.example", DNS:b.example'), [
    { type: 'DNS', value: 'a.example, DNS:evil.example' },
    { type: 'DNS', value: 'b.example' },
  ]);
  assert.deepEqual(parseSubjectAltName('URI:"x\\"y"'), [{ type: 'URI', value: 'x"y' }]);
  assert.deepEqual(parseSubjectAltName(undefined), []);
  assert.equal(nameMatches({ type: 'DNS', value: 'A.Example' }, 'a.example'), true);
  assert.equal(nameMatches({ type: 'URI', value: 'spiffe://A' }, 'spiffe://a'), false);
});

test('labels: Linkerd\'s TLS label sets', () => {
  assert.deepEqual(serverTlsLabels({ kind: 'established', clientId: 'a.id' }), { tls: 'true', client_id: 'a.id' });
  assert.deepEqual(serverTlsLabels({ kind: 'established' }), { tls: 'true', client_id: '' });
  assert.deepEqual(serverTlsLabels({ kind: 'passthru', sni: 'x.id' }), { tls: 'opaque', sni: 'x.id' });
  assert.deepEqual(serverTlsLabels({ kind: 'none', reason: 'no_tls_from_remote' }), { tls: 'no_identity', no_tls_reason: 'no_tls_from_remote' });
  assert.deepEqual(serverTlsLabels({ kind: 'none', reason: 'loopback' }), { tls: 'no_identity', no_tls_reason: 'loopback' });
  assert.deepEqual(serverTlsLabels({ kind: 'none', reason: 'disabled' }), { tls: 'disabled' });
  assert.deepEqual(clientTlsLabels({ kind: 'established', serverId: 'b.id' }), { tls: 'true', server_id: 'b.id' });
  assert.deepEqual(clientTlsLabels({ kind: 'none', reason: 'not_provided_by_service_discovery' }), {
    tls: 'no_identity',
    no_tls_reason: 'not_provided_by_service_discovery',
  });
});

test('l5d-client-id: a client\'s own value is dropped; the verified identity is set', () => {
  assert.deepEqual(setClientIdHeader({ ':path': '/', 'L5D-Client-Id': 'forged', [L5D_CLIENT_ID]: 'forged' }, 'a.id'), { ':path': '/', 'l5d-client-id': 'a.id' });
  assert.deepEqual(setClientIdHeader({ 'l5d-client-id': 'forged' }, undefined), {});
  assert.equal(clientIdHeaderLine('a.id'), 'l5d-client-id: a.id\r\n');
  assert.equal(clientIdHeaderLine(undefined), '');
});
