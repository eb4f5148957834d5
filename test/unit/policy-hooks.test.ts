// The proxy's authorization hooks over real sockets and real clients: an
// HTTP/1 route wrapped by authorizeRequestH1 (curl sees 403 and
// l5d-proxy-error), an HTTP/2 route wrapped by authorizeRequestH2 (a
// grpc-js client gets PERMISSION_DENIED, curl --http2 a 403), and
// admitConnection on accepted TCP sockets (denied: closed, nothing read).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { parseCidrList, type DefaultPolicyName } from '../../src/config/policy-env.js';
import { createLogger } from '../../src/log/logger.js';
import { admitConnection, authorizeRequestH1, authorizeRequestH2, inboundConn, type InboundConn } from '../../src/policy/index.js';
import { InboundAuthorizer } from '../../src/policy/authorizer.js';
import { curl, startProxy as startH1Proxy } from '../helpers/http1.js';
import { startProxy as startH2Proxy } from '../helpers/h2.js';

const silent = createLogger({ logLevel: 'silent', logFormat: 'json' });
const authorizer = (defaultPolicy: DefaultPolicyName): InboundAuthorizer =>
  new InboundAuthorizer({
    config: { svc: undefined, workload: '', defaultPolicy, clusterNetworks: parseCidrList('10.0.0.0/8', 't'), ports: [] },
    registry: new Registry(),
    log: silent,
    readyTimeoutMs: 100,
  });
// Loopback clients are outside the "cluster" (10/8): denied by cluster-unauthenticated, allowed by all-unauthenticated.
const deny = authorizer('cluster-unauthenticated');
const allow = authorizer('all-unauthenticated');
const loopback: InboundConn = { targetIp: '127.0.0.1', targetPort: 8080, targetAddr: '127.0.0.1:8080', client: { ip: '127.0.0.1', tls: false, identity: undefined } };

let app: http.Server;
let appPort: number;
before(async () => {
  app = http.createServer((_q, s) => s.end('app'));
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  appPort = (app.address() as AddressInfo).port;
});
after(() => app.close());

test('HTTP/1: a denied request gets 403 with l5d-proxy-error and never reaches the app; an allowed one does', async () => {
  const to = { host: '127.0.0.1', port: appPort };
  const denied = await startH1Proxy({ route: authorizeRequestH1(deny, loopback, () => to) });
  const allowed = await startH1Proxy({ route: authorizeRequestH1(allow, loopback, () => to) });
  try {
    const r = await curl(['-i', `http://127.0.0.1:${denied.port}/x`]);
    assert.match(r.stdout, /^HTTP\/1\.1 403 /);
    assert.match(r.stdout, /l5d-proxy-error: unauthenticated client 127\.0\.0\.1 is not authorized for route default\/default on server default\/cluster-unauthenticated/);
    assert.equal(r.stdout.endsWith('\r\n\r\n'), true, 'no body from the app');
    const ok = await curl([`http://127.0.0.1:${allowed.port}/x`]);
    assert.equal(ok.stdout, 'app');
  } finally {
    await denied.close();
    await allowed.close();
  }
});

test('HTTP/2: gRPC gets PERMISSION_DENIED (a trailers-only 200), plain HTTP/2 a 403', async () => {
  const proxy = await startH2Proxy({ route: authorizeRequestH2(deny, loopback, () => ({ host: '127.0.0.1', port: 1 })) });
  const Client = grpc.makeGenericClientConstructor({}, 'test');
  const client = new Client(`127.0.0.1:${proxy.port}`, grpc.credentials.createInsecure());
  try {
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      client.makeUnaryRequest('/test.Echo/Echo', (v: unknown) => Buffer.from(JSON.stringify(v)), (b: Buffer) => b, {}, (e) => resolve(e as grpc.ServiceError));
    });
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    assert.match(err.details, /not authorized/);
    const r = await curl(['-i', '--http2-prior-knowledge', `http://127.0.0.1:${proxy.port}/y`]);
    assert.match(r.stdout, /^HTTP\/2 403/);
    assert.match(r.stdout, /l5d-proxy-error: /);
  } finally {
    client.close();
    await proxy.close();
  }
});

test('opaque TCP: a denied connection is closed before any byte is read; an allowed one is served', async () => {
  const serve = (authz: InboundAuthorizer): Promise<Server> =>
    new Promise((resolve) => {
      const s = createServer((sock) => {
        const conn = inboundConn(sock, { host: '127.0.0.1', port: 9000 }, false, undefined);
        if (admitConnection(authz, conn, sock)) sock.pipe(sock);
      });
      s.listen(0, '127.0.0.1', () => resolve(s));
    });
  const exchange = (s: Server): Promise<string> =>
    new Promise((resolve) => {
      const c = connect((s.address() as AddressInfo).port, '127.0.0.1', () => c.write('hello'));
      let got = '';
      c.on('data', (d: Buffer) => {
        got += d.toString();
        c.end();
      });
      c.on('error', () => {});
      c.on('close', () => resolve(got));
    });
  const denied = await serve(deny);
  const allowed = await serve(allow);
  try {
    assert.equal(await exchange(denied), '');
    assert.equal(await exchange(allowed), 'hello');
  } finally {
    denied.close();
    allowed.close();
  }
});
