// The Node.js internals bpfmesh relies on, each tested directly on the
// runtime we ship (CI runs this file on Node 24, and again on Node 22), so a
// Node upgrade that changes one fails here, by name, before the proxy breaks:
//   - net.Socket's `_handle.fd`: the kernel socket's fd, read by the proxy
//     (src/proxy/proxy.ts) for getsockopt(SO_ORIGINAL_DST) and by the lab
//     relay; it must be the connection's own socket, and there before the
//     first read (the proxy's listeners use pauseOnConnect);
//   - TLSWrap's `_handle.verifyError()`: OpenSSL's verdict on the peer's
//     chain, read by src/tls/server.ts (a TLSSocket made with isServer outside
//     a tls.Server, whose `authorized` Node never sets) and src/tls/client.ts;
//   - a TLSSocket wrapped around a socket replays what was unshift()ed into
//     it (the bytes protocol detection peeked) before reading the handle.
// Adopting another process's listening socket (pidfd_getfd, in the node
// agent) is the kernel's and is covered by test/kernel/node-wide.test.ts.
import assert from 'node:assert/strict';
import { readFileSync, readlinkSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { connect as tlsConnect, createSecureContext, TLSSocket } from 'node:tls';
import { mintAnchor, mintIssuer, mintLeaf, type Issued } from '../helpers/tls-pki.js';

const handleOf = (s: Socket): { fd?: number; verifyError?: () => (Error & { code?: string }) | null | undefined } | undefined =>
  (s as unknown as { _handle?: { fd?: number; verifyError?: () => (Error & { code?: string }) | null | undefined } })._handle;

/** The socket inode of the TCP connection local:port <-> remote:port, from /proc/net/tcp{,6}. */
function tcpInode(localPort: number, remotePort: number): string | undefined {
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const port = (addr: string): number => parseInt(addr.split(':')[1] ?? '', 16);
      if (port(f[1]!) === localPort && port(f[2]!) === remotePort) return f[9];
    }
  }
  return undefined;
}

const listen = (server: Server): Promise<number> =>
  new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });

describe('Node internals bpfmesh relies on', () => {
  test(`net.Socket _handle.fd is the connection's own socket, before any read (pauseOnConnect), on both ends (Node ${process.version})`, async () => {
    let accepted: Socket | undefined;
    const server = createServer({ pauseOnConnect: true, allowHalfOpen: true }, (s) => (accepted = s));
    const port = await listen(server);
    const client = connect(port, '127.0.0.1');
    try {
      await new Promise<void>((resolve, reject) => client.once('connect', resolve).once('error', reject));
      while (accepted === undefined) await new Promise((r) => setTimeout(r, 5));
      for (const [s, local, remote] of [
        [accepted, port, client.localPort!],
        [client, client.localPort!, port],
      ] as const) {
        const fd = handleOf(s)?.fd;
        assert.equal(typeof fd, 'number', '_handle.fd is a number');
        assert.ok(fd! > 2, `_handle.fd ${fd} is a real descriptor`);
        const inode = tcpInode(local, remote);
        assert.ok(inode !== undefined, `the connection ${local} -> ${remote} is in /proc/net/tcp`);
        assert.equal(readlinkSync(`/proc/self/fd/${fd}`), `socket:[${inode}]`, 'the fd is that connection, not another socket');
      }
      assert.equal(accepted.bytesRead, 0, 'nothing was read to get it');
    } finally {
      client.destroy();
      accepted?.destroy();
      server.close();
    }
  });

  describe('TLS: _handle.verifyError(), and a TLSSocket over peeked bytes', async () => {
    const anchor = await mintAnchor();
    const issuer = await mintIssuer(anchor);
    const stranger = await mintIssuer(await mintAnchor('other.root'), 'other.issuer');
    const trusted = await mintLeaf(issuer, 'a.ns.serviceaccount.identity.linkerd.cluster.local');
    const untrusted = await mintLeaf(stranger, 'b.ns.serviceaccount.identity.linkerd.cluster.local');
    const ctx = (leaf: Issued, iss: Issued) => createSecureContext({ key: leaf.keyPem, cert: leaf.certPem + iss.certPem, ca: anchor.certPem, minVersion: 'TLSv1.3' });

    /**
     * A server as src/tls/server.ts builds it: a paused accepted socket whose
     * first bytes are read (the ClientHello's start), unshift()ed back, then a
     * TLSSocket with isServer over it. Resolves with the server side's verdict.
     */
    async function serverSide(serverLeaf: Issued, serverIssuer: Issued, clientLeaf: Issued, clientIssuer: Issued) {
      let result: { verifyError: string | null; authorized: boolean; peeked: number } | undefined;
      let failure: unknown;
      const server = createServer({ pauseOnConnect: true }, (sock) => {
        sock.once('readable', () => {
          const peeked = sock.read() as Buffer | null;
          if (peeked === null) return;
          sock.unshift(peeked);
          const tls = new TLSSocket(sock, { isServer: true, secureContext: ctx(serverLeaf, serverIssuer), requestCert: true, rejectUnauthorized: false });
          tls.once('secure', () => {
            const h = handleOf(tls);
            if (typeof h?.verifyError !== 'function') {
              failure = new Error('no _handle.verifyError on a server TLSSocket');
            } else {
              const err = h.verifyError();
              result = { verifyError: err === null || err === undefined ? null : (err.code ?? err.message), authorized: tls.authorized, peeked: peeked.length };
            }
            tls.end('ok');
          });
          tls.once('error', (e: Error) => {
            failure = e;
          });
        });
        sock.resume();
      });
      const port = await listen(server);
      try {
        const client = tlsConnect({ port, host: '127.0.0.1', secureContext: ctx(clientLeaf, clientIssuer), rejectUnauthorized: false, servername: serverLeaf.name });
        const reply = await new Promise<string>((resolve, reject) => {
          let text = '';
          client.on('data', (d: Buffer) => (text += d.toString()));
          client.once('end', () => resolve(text));
          client.once('error', reject);
        });
        client.destroy();
        assert.equal(failure, undefined);
        assert.equal(reply, 'ok', 'the handshake completed over the replayed bytes');
        assert.ok(result !== undefined && result.peeked > 0, 'bytes were peeked and replayed');
        return result;
      } finally {
        server.close();
      }
    }

    test('server side (TLSSocket isServer outside tls.Server): null for a chain to the anchors, a verify code otherwise; `authorized` is never set', async () => {
      const good = await serverSide(trusted, issuer, trusted, issuer);
      assert.equal(good.verifyError, null);
      assert.equal(good.authorized, false, 'Node sets authorized only inside tls.Server: hence verifyError()');
      const bad = await serverSide(trusted, issuer, untrusted, stranger);
      assert.match(bad.verifyError ?? '', /^[A-Z_]+$/, `a verify code for an untrusted client chain (got ${bad.verifyError})`);
      assert.notEqual(bad.verifyError, null);
    });

    test('client side: null for a server chain to the anchors, a verify code with rejectUnauthorized false otherwise', async () => {
      const verdict = async (leaf: Issued, iss: Issued): Promise<string | null> => {
        const server = createServer((sock) => {
          const tls = new TLSSocket(sock, { isServer: true, secureContext: ctx(leaf, iss) });
          tls.on('error', () => tls.destroy());
          tls.once('secure', () => tls.end());
        });
        const port = await listen(server);
        try {
          const client = tlsConnect({ port, host: '127.0.0.1', secureContext: ctx(trusted, issuer), rejectUnauthorized: false, servername: leaf.name });
          return await new Promise<string | null>((resolve, reject) => {
            client.once('secureConnect', () => {
              const h = handleOf(client);
              client.destroy();
              if (typeof h?.verifyError !== 'function') return reject(new Error('no _handle.verifyError on a client TLSSocket'));
              const err = h.verifyError();
              resolve(err === null || err === undefined ? null : (err.code ?? err.message));
            });
            client.once('error', reject);
          });
        } finally {
          server.close();
        }
      };
      assert.equal(await verdict(trusted, issuer), null);
      const bad = await verdict(untrusted, stranger);
      assert.match(bad ?? '', /^[A-Z_]+$/, `a verify code for an untrusted server chain (got ${bad})`);
    });
  });
});
