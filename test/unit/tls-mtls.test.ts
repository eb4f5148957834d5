// mTLS between proxies over real sockets on 127.0.0.1: a server side built
// like the inbound accept path (net.Server -> peekClientHello ->
// shouldTerminate -> acceptTls -> echo) and a client side built with
// tlsConnector, plus openssl s_client as a foreign client.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { connector } from '../../src/proxy/tcp.js';
import { detectProtocol } from '../../src/proxy/detect.js';
import { TlsStore } from '../../src/tls/tls-store.js';
import { tlsConnector } from '../../src/tls/client.js';
import { acceptTls, peekClientHello, shouldTerminate, type AcceptTlsOptions, type AcceptedTls, type ClientHelloPeek } from '../../src/tls/server.js';
import { parseClientHello } from '../../src/tls/client-hello.js';
import { inboundTls, serverTlsLabels } from '../../src/tls/labels.js';
import { materialOf, mintAnchor, mintIssuer, mintLeaf, type Issued } from '../helpers/tls-pki.js';

const A = 'a.ns.serviceaccount.identity.linkerd.cluster.local';
const B = 'b.ns.serviceaccount.identity.linkerd.cluster.local';
const C = 'c.ns.serviceaccount.identity.linkerd.cluster.local';
const HOUR = 3600 * 1000;

let anchor: Issued;
let issuer: Issued;
let leafA: Issued;
let leafB: Issued;
let dir: string;

const servers: Server[] = [];
const sockets: Socket[] = [];

before(async () => {
  anchor = await mintAnchor();
  issuer = await mintIssuer(anchor);
  leafA = await mintLeaf(issuer, A);
  leafB = await mintLeaf(issuer, B);
  dir = await mkdtemp(join(tmpdir(), 'bpfmesh-tls-'));
});

after(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  await rm(dir, { recursive: true, force: true });
});

function storeFor(leaf: Issued, iss: Issued, anchorsPem: string, opts: { now?: () => Date } = {}): TlsStore {
  const store = new TlsStore({ trustAnchorsPem: anchorsPem, identity: leaf.name, ...opts });
  store.update(materialOf(leaf, iss));
  return store;
}

interface Served {
  sock: Socket;
  peek: ClientHelloPeek;
  accepted?: AcceptedTls;
  error?: Error & { code?: string };
}

interface TestServer {
  port: number;
  /** What the server side made of the next connection, in accept order. */
  next(): Promise<Served>;
}

/** The inbound path: peek, terminate our SNI and echo over TLS; anything else is reported and left to the test. */
async function startServer(store: TlsStore, opts: AcceptTlsOptions = {}): Promise<TestServer> {
  const done: Served[] = [];
  const waiting: Array<(s: Served) => void> = [];
  const report = (s: Served): void => {
    const w = waiting.shift();
    if (w) w(s);
    else done.push(s);
  };
  const server = createServer({ pauseOnConnect: true, allowHalfOpen: true }, (sock) => {
    sockets.push(sock);
    sock.on('error', () => {});
    void (async () => {
      const peek = await peekClientHello(sock, 2000);
      if (!(peek.isTls && shouldTerminate(peek.sni, store))) return report({ sock, peek });
      try {
        const accepted = await acceptTls(sock, peek.buffered, store, { handshakeTimeoutMs: 2000, ...opts });
        accepted.tlsSocket.on('error', () => {});
        sockets.push(accepted.tlsSocket);
        accepted.tlsSocket.pipe(accepted.tlsSocket);
        accepted.tlsSocket.resume();
        report({ sock, peek, accepted });
      } catch (err) {
        sock.destroy();
        report({ sock, peek, error: err as Error });
      }
    })();
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as { port: number }).port,
    next: () => {
      const s = done.shift();
      return s ? Promise.resolve(s) : new Promise((r) => waiting.push(r));
    },
  };
}

const to = (port: number): { host: string; port: number } => ({ host: '127.0.0.1', port });

/** Writes `msg` and reads the echo. */
async function echo(s: TLSSocket, msg: string): Promise<string> {
  s.write(msg);
  let got = '';
  while (got.length < msg.length) {
    const [chunk] = (await once(s, 'data')) as [Buffer];
    got += chunk.toString();
  }
  return got;
}

function track(s: TLSSocket): TLSSocket {
  sockets.push(s);
  s.on('error', () => {});
  return s;
}

const fingerprint = (pem: string): string => new X509Certificate(pem).fingerprint256;

function run(cmd: string, args: string[], input = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: 10_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      resolve({ code, stdout, stderr });
    });
    child.stdin?.end(input);
  });
}

test('mTLS: TLS 1.3, the client identity from its SAN, the server identity checked', async () => {
  const srv = await startServer(storeFor(leafB, issuer, anchor.certPem));
  const dial = tlsConnector(connector(2000), storeFor(leafA, issuer, anchor.certPem));
  const s = track(await dial(to(srv.port), { identity: B, serverName: B }));
  assert.equal(s.getProtocol(), 'TLSv1.3');
  assert.equal(s.authorized, true);
  assert.equal(await echo(s, 'ping'), 'ping');
  const served = await srv.next();
  assert.equal(served.peek.isTls, true);
  assert.equal(served.peek.sni, B);
  assert.equal(served.accepted?.clientIdentity, A);
  assert.equal(served.accepted?.tlsSocket.getProtocol(), 'TLSv1.3');
  assert.equal(served.accepted?.tlsSocket.authorized, true);
  assert.deepEqual(serverTlsLabels(inboundTls(served.peek, served.accepted)), { tls: 'true', client_id: A });
  // Tearing down the TLS socket closes the TCP socket under it.
  const closed = once(served.sock, 'close');
  served.accepted?.tlsSocket.destroy();
  await closed;
});

test('mTLS: openssl s_client sees TLS 1.3 and the server SAN; TLS 1.2 is refused', async () => {
  const store = storeFor(leafB, issuer, anchor.certPem);
  const srv = await startServer(store);
  const caFile = join(dir, 'anchor.pem');
  await writeFile(caFile, anchor.certPem);

  const ok = await run('openssl', ['s_client', '-connect', `127.0.0.1:${srv.port}`, '-servername', B, '-tls1_3', '-CAfile', caFile, '-verify_return_error']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /New, TLSv1\.3, Cipher is/);
  assert.match(ok.stdout, /Verify return code: 0 \(ok\)/);
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(ok.stdout)?.[0];
  assert.ok(pem, 'server certificate in the output');
  assert.equal(new X509Certificate(pem).subjectAltName, `DNS:${B}`);
  // s_client has no certificate: accepted without a client identity.
  const served = await srv.next();
  assert.ok(served.accepted, String(served.error));
  assert.equal(served.accepted.clientIdentity, undefined);
  assert.equal(served.accepted.clientCertError, undefined);

  const old = await run('openssl', ['s_client', '-connect', `127.0.0.1:${srv.port}`, '-servername', B, '-tls1_2', '-CAfile', caFile]);
  assert.notEqual(old.code, 0);
  assert.doesNotMatch(old.stdout, /New, TLSv1\.2, Cipher is/);
  assert.match(old.stdout + old.stderr, /alert protocol version|unsupported protocol|no protocols available/i);
  const refused = await srv.next();
  assert.equal(refused.peek.sni, B);
  assert.equal(refused.error?.code, 'BPFMESH_E_TLS_HANDSHAKE');
});

test('mTLS: a trusted server with another identity -> BPFMESH_E_IDENTITY_MISMATCH', async () => {
  const srv = await startServer(storeFor(leafB, issuer, anchor.certPem));
  const dial = tlsConnector(connector(2000), storeFor(leafA, issuer, anchor.certPem));
  await assert.rejects(dial(to(srv.port), { identity: C, serverName: B }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'BPFMESH_E_IDENTITY_MISMATCH');
    assert.match(err.message, new RegExp(`expected ${C}, got \\[${B}\\]`));
    return true;
  });
  await srv.next();
});

test('mTLS: a server from another trust anchor -> BPFMESH_E_TLS_VERIFY', async () => {
  const otherAnchor = await mintAnchor('other-root');
  const otherIssuer = await mintIssuer(otherAnchor, 'other-issuer');
  const foreignB = await mintLeaf(otherIssuer, B);
  const srv = await startServer(storeFor(foreignB, otherIssuer, otherAnchor.certPem));
  const dial = tlsConnector(connector(2000), storeFor(leafA, issuer, anchor.certPem));
  await assert.rejects(dial(to(srv.port), { identity: B, serverName: B }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'BPFMESH_E_TLS_VERIFY');
    assert.match(err.message, /UNABLE_TO_GET_ISSUER_CERT_LOCALLY|UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN/);
    return true;
  });
  await srv.next();
});

test('mTLS: an expired server certificate -> BPFMESH_E_TLS_VERIFY; an expired client certificate -> no identity', async () => {
  const past = { notBefore: new Date(Date.now() - 3 * HOUR), notAfter: new Date(Date.now() - HOUR) };
  // The stores check validity when material is installed: install it "two hours ago".
  const then = { now: () => new Date(Date.now() - 2 * HOUR) };
  const expiredB = await mintLeaf(issuer, B, past);
  const expiredA = await mintLeaf(issuer, A, past);

  const srv = await startServer(storeFor(expiredB, issuer, anchor.certPem, then));
  const dial = tlsConnector(connector(2000), storeFor(leafA, issuer, anchor.certPem));
  await assert.rejects(dial(to(srv.port), { identity: B, serverName: B }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'BPFMESH_E_TLS_VERIFY');
    assert.match(err.message, /CERT_HAS_EXPIRED: certificate has expired/);
    return true;
  });
  await srv.next();

  const good = await startServer(storeFor(leafB, issuer, anchor.certPem));
  const dialExpired = tlsConnector(connector(2000), storeFor(expiredA, issuer, anchor.certPem, then));
  const s = track(await dialExpired(to(good.port), { identity: B, serverName: B }));
  assert.equal(await echo(s, 'still served'), 'still served');
  const served = await good.next();
  assert.equal(served.accepted?.clientIdentity, undefined);
  assert.equal(served.accepted?.clientCertError, 'CERT_HAS_EXPIRED');
  assert.deepEqual(serverTlsLabels(inboundTls(served.peek, served.accepted)), { tls: 'true', client_id: '' });
});

test('mTLS: a client certificate from an untrusted CA gives no identity, or a refusal when asked', async () => {
  const otherAnchor = await mintAnchor('other-root');
  const otherIssuer = await mintIssuer(otherAnchor, 'other-issuer');
  const foreignA = await mintLeaf(otherIssuer, A);
  // The client trusts our anchor (to accept B) but carries a certificate from elsewhere.
  const client = new TlsStore({ trustAnchorsPem: anchor.certPem + otherAnchor.certPem });
  client.update(materialOf(foreignA, otherIssuer));
  const dial = tlsConnector(connector(2000), client);

  const lenient = await startServer(storeFor(leafB, issuer, anchor.certPem));
  const s = track(await dial(to(lenient.port), { identity: B, serverName: B }));
  assert.equal(await echo(s, 'x'), 'x');
  const served = await lenient.next();
  assert.equal(served.accepted?.clientIdentity, undefined);
  assert.match(served.accepted?.clientCertError ?? '', /UNABLE_TO_GET_ISSUER_CERT_LOCALLY|UNABLE_TO_VERIFY_LEAF_SIGNATURE/);

  const strict = await startServer(storeFor(leafB, issuer, anchor.certPem), { rejectUnverifiedClientCert: true });
  // TLS 1.3: the client is done before the server has looked at its certificate; the server then closes.
  const attempt = dial(to(strict.port), { identity: B, serverName: B }).then(track, (e: Error) => e);
  const refused = await strict.next();
  assert.equal(refused.error?.code, 'BPFMESH_E_TLS_VERIFY');
  const s2 = await attempt;
  if (s2 instanceof Error) return;
  // The client's sockets allow half-open connections: the server's close shows as 'end'.
  s2.resume();
  if (!s2.readableEnded && !s2.closed) await Promise.race([once(s2, 'end'), once(s2, 'close')]);
});

test('mTLS: a client without a certificate is accepted without identity', async () => {
  const srv = await startServer(storeFor(leafB, issuer, anchor.certPem));
  const s = track(tlsConnect({ host: '127.0.0.1', port: srv.port, servername: B, ca: anchor.certPem, checkServerIdentity: () => undefined, minVersion: 'TLSv1.3' }));
  await once(s, 'secureConnect');
  assert.equal(s.authorized, true);
  assert.equal(await echo(s, 'anon'), 'anon');
  const served = await srv.next();
  assert.ok(served.accepted);
  assert.equal(served.accepted.clientIdentity, undefined);
  assert.equal(served.accepted.clientCertError, undefined);
});

/** A ClientHello as a Node client sends it, captured from the wire. */
async function captureHello(servername: string): Promise<Buffer> {
  const server = createServer((sock) => {
    sock.once('data', (d: Buffer) => {
      server.emit('hello', d);
      sock.destroy();
    });
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const got = once(server, 'hello') as Promise<[Buffer]>;
  track(tlsConnect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false, minVersion: 'TLSv1.3' }));
  const [hello] = await got;
  return hello;
}

test('inbound: TLS for another name is not terminated; its bytes come back intact, and later ones stay queued', async () => {
  const store = storeFor(leafB, issuer, anchor.certPem);
  const srv = await startServer(store);
  const other = 'web.other.svc.cluster.local';
  const hello = await captureHello(other);
  assert.equal(parseClientHello(hello).kind, 'client_hello');

  const c = connect(srv.port, '127.0.0.1');
  sockets.push(c);
  c.on('error', () => {});
  await once(c, 'connect');
  // The hello in two pieces (several reads), then more bytes.
  c.write(hello.subarray(0, 7));
  await new Promise((r) => setTimeout(r, 30));
  c.write(hello.subarray(7));
  const served = await srv.next();
  assert.equal(served.peek.isTls, true);
  assert.equal(served.peek.sni, other);
  assert.equal(shouldTerminate(served.peek.sni, store), false);
  assert.deepEqual(served.peek.buffered, hello);
  assert.deepEqual(serverTlsLabels(inboundTls(served.peek)), { tls: 'opaque', sni: other });

  // What arrives after the peek waits in the (paused) socket for the opaque relay.
  c.write('tail');
  await new Promise((r) => setTimeout(r, 30));
  served.sock.resume();
  const [rest] = (await once(served.sock, 'data')) as [Buffer];
  assert.equal(rest.toString(), 'tail');
});

test('inbound: plaintext is not TLS; the bytes replay into protocol detection', async () => {
  const srv = await startServer(storeFor(leafB, issuer, anchor.certPem));
  const c = connect(srv.port, '127.0.0.1');
  sockets.push(c);
  c.on('error', () => {});
  await once(c, 'connect');
  c.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
  const served = await srv.next();
  assert.equal(served.peek.isTls, false);
  assert.equal(served.peek.timedOut, false);
  assert.match(served.peek.buffered.toString(), /^GET /);
  assert.deepEqual(serverTlsLabels(inboundTls(served.peek)), { tls: 'no_identity', no_tls_reason: 'no_tls_from_remote' });
  served.sock.unshift(served.peek.buffered);
  const detected = await detectProtocol(served.sock, { timeoutMs: 1000 });
  assert.equal(detected.protocol, 'http1');
  assert.equal(detected.buffered.toString(), 'GET / HTTP/1.1\r\nhost: x\r\n\r\n');
});

test('inbound: a silent client times the peek out', async () => {
  const server = createServer({ pauseOnConnect: true }, (sock) => {
    sockets.push(sock);
    void peekClientHello(sock, 100).then((p) => server.emit('peeked', p));
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const peeked = once(server, 'peeked') as Promise<[ClientHelloPeek]>;
  const c = connect((server.address() as { port: number }).port, '127.0.0.1');
  sockets.push(c);
  const [p] = await peeked;
  assert.equal(p.isTls, false);
  assert.equal(p.timedOut, true);
  assert.equal(p.buffered.length, 0);
});

test('rotation: open connections keep working; new ones present the new certificates', async () => {
  const serverStore = storeFor(leafB, issuer, anchor.certPem);
  const clientStore = storeFor(leafA, issuer, anchor.certPem);
  const srv = await startServer(serverStore);
  const dial = tlsConnector(connector(2000), clientStore);
  // Each side's own certificate (getX509Certificate): the peer's is gone from a
  // Node client once TLS 1.3 session tickets arrive, the local one stays.
  const presented = (s: TLSSocket): string => s.getX509Certificate()!.fingerprint256;

  const first = track(await dial(to(srv.port), { identity: B, serverName: B }));
  assert.equal(await echo(first, 'before'), 'before');
  const firstServed = await srv.next();
  assert.equal(presented(firstServed.accepted!.tlsSocket), fingerprint(leafB.certPem));
  assert.equal(presented(first), fingerprint(leafA.certPem));

  const leafB2 = await mintLeaf(issuer, B);
  const leafA2 = await mintLeaf(issuer, A);
  let updates = 0;
  serverStore.onUpdate(() => updates++);
  serverStore.update(materialOf(leafB2, issuer));
  clientStore.update(materialOf(leafA2, issuer));
  assert.equal(updates, 1);

  // The open connection is untouched, in both directions.
  assert.equal(await echo(first, 'after rotation'), 'after rotation');
  assert.equal(first.destroyed, false);
  assert.equal(presented(firstServed.accepted!.tlsSocket), fingerprint(leafB.certPem));

  const second = track(await dial(to(srv.port), { identity: B, serverName: B }));
  assert.equal(await echo(second, 'new'), 'new');
  const secondServed = await srv.next();
  assert.equal(presented(secondServed.accepted!.tlsSocket), fingerprint(leafB2.certPem));
  assert.equal(presented(second), fingerprint(leafA2.certPem));
  assert.equal(secondServed.accepted?.clientIdentity, A);
  assert.equal(await echo(first, 'still'), 'still');
});

test('no session resumption: a client offering a session gets a full handshake', async () => {
  const srv = await startServer(storeFor(leafB, issuer, anchor.certPem));
  const clientStore = storeFor(leafA, issuer, anchor.certPem);
  const opts = { host: '127.0.0.1', port: srv.port, servername: B, secureContext: clientStore.clientContext, checkServerIdentity: () => undefined };
  const s1 = track(tlsConnect(opts));
  const session = new Promise<Buffer>((r) => s1.once('session', r));
  await once(s1, 'secureConnect');
  assert.equal(await echo(s1, 'one'), 'one');
  // TLS 1.3 servers under OpenSSL still send (stateful) tickets; none can be redeemed.
  const offered = await session;
  s1.end();
  await srv.next();
  const s2 = track(tlsConnect({ ...opts, session: offered }));
  await once(s2, 'secureConnect');
  assert.equal(s2.isSessionReused(), false);
  assert.equal(await echo(s2, 'two'), 'two');
  const served = await srv.next();
  assert.equal(served.accepted?.clientIdentity, A);
});

test('not ready: no certificate yet -> BPFMESH_E_TLS_NOT_READY on both sides; our SNI is still ours', async () => {
  const empty = new TlsStore({ trustAnchorsPem: anchor.certPem, identity: B });
  assert.equal(empty.ready, false);
  assert.equal(shouldTerminate(B, empty), true);
  assert.equal(shouldTerminate(B.toUpperCase(), empty), true);
  assert.equal(shouldTerminate(A, empty), false);
  assert.equal(shouldTerminate(undefined, empty), false);
  assert.throws(() => empty.serverContext, { code: 'BPFMESH_E_TLS_NOT_READY' });
  let connected = false;
  const dial = tlsConnector(async (a) => {
    connected = true;
    return connector(1000)(a);
  }, empty);
  await assert.rejects(dial(to(1), { identity: B, serverName: B }), { code: 'BPFMESH_E_TLS_NOT_READY' });
  assert.equal(connected, false);

  const srv = await startServer(empty);
  const ready = storeFor(leafA, issuer, anchor.certPem);
  await assert.rejects(tlsConnector(connector(2000), ready)(to(srv.port), { identity: B, serverName: B }), { code: 'BPFMESH_E_TLS_HANDSHAKE' });
  const served = await srv.next();
  assert.equal(served.error?.code, 'BPFMESH_E_TLS_NOT_READY');
});

test('client: a server that never answers the ClientHello -> BPFMESH_E_TLS_TIMEOUT', async () => {
  const server = createServer((sock) => {
    sockets.push(sock);
    sock.on('error', () => {});
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const dial = tlsConnector(connector(2000), storeFor(leafA, issuer, anchor.certPem), { handshakeTimeoutMs: 150 });
  const t0 = Date.now();
  await assert.rejects(dial(to((server.address() as { port: number }).port), { identity: B, serverName: B }), { code: 'BPFMESH_E_TLS_TIMEOUT' });
  assert.ok(Date.now() - t0 < 2000);
});

test('client: connect errors pass through from the base connector', async () => {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  await new Promise((r) => server.close(r));
  const dial = tlsConnector(connector(1000), storeFor(leafA, issuer, anchor.certPem));
  await assert.rejects(dial(to(port), { identity: B, serverName: B }), { code: 'BPFMESH_E_CONNECT' });
});
