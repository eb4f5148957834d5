// Inbound authorization against the real policy API: `bpfmesh
// control-plane`'s InboundServerPolicies on a loopback port, the proxy's
// InboundAuthorizer watching it over gRPC. Identities (exact, suffix),
// networks, routes, the controller's default for unknown ports, changes
// under traffic, and the policy API going away and coming back.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { parseCidrList, DEFAULT_CLUSTER_NETWORKS, DEFAULT_POLICIES, type DefaultPolicyName } from '../../src/config/policy-env.js';
import { startControlPlane, type ControlPlane } from '../../src/controlplane/server.js';
import { createLogger } from '../../src/log/logger.js';
import { findAuthorization, findRoute, type RequestInfo } from '../../src/policy/authorize.js';
import { InboundAuthorizer, type InboundConn } from '../../src/policy/authorizer.js';
import { defaultServerPolicy } from '../../src/policy/model.js';
import { requestInfoOfH1, splitTarget } from '../../src/policy/http-request.js';
import { parseRequestHead } from '../../src/proxy/http1/head-parser.js';

const silent = createLogger({ logLevel: 'silent', logFormat: 'json' });
const id = (sa: string, ns = 'default'): string => `${sa}.${ns}.serviceaccount.identity.linkerd.cluster.local`;
const WORKLOAD = '{"ns":"default","pod":"web"}';
const CLUSTER = parseCidrList(DEFAULT_CLUSTER_NETWORKS, 'test');

/** Sums the samples of `name` whose labels include `labels`. */
function sample(text: string, name: string, labels: Record<string, string>): number {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

const conn = (port: number, ip: string, identity?: string, tls = identity !== undefined): InboundConn => ({
  targetIp: '10.0.0.5',
  targetPort: port,
  targetAddr: `10.0.0.5:${port}`,
  client: { ip, tls, identity },
});

const req = (method: string, target: string, host = 'web', headers: Record<string, string> = {}): RequestInfo => {
  const { path, query } = splitTarget(target);
  return { method, path, query, host, header: (n) => headers[n] };
};

function meshYaml(serverAuthn: string): string {
  return [
    'listen: 127.0.0.1:0',
    'policy:',
    '  defaultPolicy: all-unauthenticated',
    '  servers:',
    '    - name: web-tcp',
    '      workload: default:web',
    '      port: 8080',
    '      authorizations:',
    '        - name: ids',
    '          networks: [10.0.0.0/8, { cidr: "fd00::/8", except: ["fd00::bad/128"] }]',
    `          authentication: ${serverAuthn}`,
    '    - name: web-http',
    '      port: 8081',
    '      authorizations:',
    `        - { name: only-a, authentication: { identities: [${id('a')}] } }`,
    '      routes:',
    '        - name: health',
    '          matches: [{ path: { prefix: /healthz }, method: GET }]',
    '          authorizations: [{ name: probes, networks: [10.0.0.0/8], authentication: unauthenticated }]',
    '        - name: admin',
    '          hosts: ["*.example.com"]',
    '          matches: [{ path: { exact: /admin }, headers: [{ name: x-env, value: prod }] }]',
    '',
  ].join('\n');
}
const FIRST = `{ identities: [${id('a')}], suffixes: [other.serviceaccount.identity.linkerd.cluster.local] }`;

describe('inbound authorizer over the policy API', { timeout: 60_000 }, () => {
  let dir: string;
  let cp: ControlPlane;
  let registry: Registry;
  let authz: InboundAuthorizer;
  const authorizers: InboundAuthorizer[] = [];

  const newAuthorizer = (defaultPolicy: DefaultPolicyName, port: number, readyTimeoutMs = 1000, reg = new Registry()): InboundAuthorizer => {
    const a = new InboundAuthorizer({
      config: { svc: { addr: { host: '127.0.0.1', port }, name: undefined, loopback: true }, workload: WORKLOAD, defaultPolicy, clusterNetworks: CLUSTER, ports: [8080] },
      registry: reg,
      log: silent,
      readyTimeoutMs,
      backoff: { minMs: 50, maxMs: 200 },
    });
    authorizers.push(a);
    return a;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bpfmesh-policy-'));
    writeFileSync(join(dir, 'mesh.yaml'), meshYaml(FIRST));
    cp = await startControlPlane({ configPath: join(dir, 'mesh.yaml'), stateDir: join(dir, 'state'), log: silent, registry: new Registry(), listen: { host: '127.0.0.1', port: 0 }, watch: false });
    registry = new Registry();
    // The proxy's own default is deny: anything allowed below came from the API.
    authz = newAuthorizer('deny', cp.address.port, 1000, registry);
  });

  after(async () => {
    for (const a of authorizers) a.close();
    await cp.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('TCP: identities exact and by suffix, networks and their exceptions, plaintext', async () => {
    await authz.ready(8080);
    assert.equal(authz.policy(8080).meta.name, 'web-tcp');
    assert.equal(authz.connection(conn(8080, '10.1.1.1', id('a'))), null, 'exact identity');
    assert.equal(authz.connection(conn(8080, '10.1.1.1', id('x', 'other'))), null, 'identity by suffix');
    assert.equal(authz.connection(conn(8080, 'fd00::1', id('a'))), null, 'IPv6 network');
    assert.equal(authz.connection(conn(8080, '10.1.1.1', id('b')))?.code, 'BPFMESH_E_FORBIDDEN', 'another identity');
    assert.equal(authz.connection(conn(8080, '10.1.1.1', id('x', 'another')))?.code, 'BPFMESH_E_FORBIDDEN', 'suffix is whole labels');
    assert.equal(authz.connection(conn(8080, '192.168.1.1', id('a')))?.code, 'BPFMESH_E_FORBIDDEN', 'outside the networks');
    assert.equal(authz.connection(conn(8080, 'fd00::bad', id('a')))?.code, 'BPFMESH_E_FORBIDDEN', 'an excepted address');
    assert.equal(authz.connection(conn(8080, '10.1.1.1'))?.code, 'BPFMESH_E_FORBIDDEN', 'no mesh TLS');
    assert.equal(authz.connection(conn(8080, '10.1.1.1', undefined, true))?.code, 'BPFMESH_E_FORBIDDEN', 'TLS without a client certificate');
    const text = await registry.metrics();
    const srv = { srv_group: 'policy.linkerd.io', srv_kind: 'server', srv_name: 'web-tcp', target_port: '8080' };
    const authzIds = { authz_group: 'policy.linkerd.io', authz_kind: 'AuthorizationPolicy', authz_name: 'ids' };
    assert.equal(sample(text, 'inbound_tcp_authz_allow_total', { ...srv, ...authzIds, tls: 'true', client_id: id('a') }), 2);
    assert.equal(sample(text, 'inbound_tcp_authz_allow_total', { ...srv, ...authzIds, client_id: id('x', 'other') }), 1);
    assert.equal(sample(text, 'inbound_tcp_authz_deny_total', { ...srv, tls: 'no_identity' }), 1);
    assert.equal(sample(text, 'inbound_tcp_authz_deny_total', { ...srv, tls: 'true' }), 5);
  });

  test('HTTP: routes by path, method, host and header; route authorizations extend the server\'s; 404 when none matches', async () => {
    await authz.ready(8081);
    assert.equal(authz.request(conn(8081, '10.2.0.1'), req('GET', '/healthz/ready')), null, 'the health route admits plaintext from 10/8');
    assert.equal(authz.request(conn(8081, '192.168.0.1'), req('GET', '/healthz'))?.code, 'BPFMESH_E_FORBIDDEN', 'not from another network');
    assert.equal(authz.request(conn(8081, '192.168.0.1', id('a')), req('GET', '/healthz')), null, "the server's authorization holds on the route");
    assert.equal(authz.request(conn(8081, '10.2.0.1'), req('GET', '/healthzz'))?.code, 'BPFMESH_E_ROUTE_NOT_FOUND', 'a prefix is whole segments');
    assert.equal(authz.request(conn(8081, '10.2.0.1'), req('POST', '/healthz'))?.code, 'BPFMESH_E_ROUTE_NOT_FOUND', 'method');
    assert.equal(authz.request(conn(8081, '10.2.0.1', id('a')), req('GET', '/admin', 'x.example.com', { 'x-env': 'prod' })), null);
    assert.equal(authz.request(conn(8081, '10.2.0.1', id('b')), req('GET', '/admin', 'x.example.com', { 'x-env': 'prod' }))?.code, 'BPFMESH_E_FORBIDDEN');
    assert.equal(authz.request(conn(8081, '10.2.0.1', id('a')), req('GET', '/admin', 'example.com', { 'x-env': 'prod' }))?.code, 'BPFMESH_E_ROUTE_NOT_FOUND', 'host suffix');
    assert.equal(authz.request(conn(8081, '10.2.0.1', id('a')), req('GET', '/admin?x=1', 'a.example.com', { 'x-env': 'dev' }))?.code, 'BPFMESH_E_ROUTE_NOT_FOUND', 'header');
    const text = await registry.metrics();
    const health = { srv_name: 'web-http', route_group: 'policy.linkerd.io', route_kind: 'HTTPRoute', route_name: 'health' };
    assert.equal(sample(text, 'inbound_http_authz_allow_total', { ...health, authz_kind: 'AuthorizationPolicy', authz_name: 'probes', tls: 'no_identity' }), 1);
    assert.equal(sample(text, 'inbound_http_authz_allow_total', { ...health, authz_name: 'only-a', client_id: id('a') }), 1);
    assert.equal(sample(text, 'inbound_http_authz_deny_total', { ...health, tls: 'no_identity' }), 1);
    assert.equal(sample(text, 'inbound_http_authz_deny_total', { route_name: 'admin', tls: 'true', client_id: id('b') }), 1);
    assert.equal(sample(text, 'bpfmesh_inbound_http_route_not_found_total', { srv_name: 'web-http' }), 4);
  });

  test('a port without a server gets the controller\'s default policy (all-unauthenticated here), not the proxy\'s (deny)', async () => {
    await authz.ready(9000);
    assert.deepEqual(authz.policy(9000).meta, { group: '', kind: 'default', name: 'all-unauthenticated' });
    assert.equal(authz.connection(conn(9000, '203.0.113.9')), null);
    assert.equal(authz.request(conn(9000, '203.0.113.9'), req('DELETE', '/anything')), null);
  });

  test('a keep-alive connection: each request counted, and its next request after a policy change follows the new policy', async () => {
    await authz.ready(8080);
    const keepAlive = conn(8080, '10.1.1.7', id('a'));
    const series = { srv_name: 'web-tcp', target_port: '8080', client_id: id('a') };
    const changed = async (from: unknown): Promise<void> => {
      assert.equal(await cp.reload(), true);
      const deadline = Date.now() + 2000;
      while (authz.policy(8080) === from && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      assert.notEqual(authz.policy(8080), from, 'the policy change did not arrive');
    };
    for (let i = 0; i < 3; i++) assert.equal(authz.request(keepAlive, req('GET', `/r${i}`)), null);
    assert.equal(sample(await registry.metrics(), 'inbound_http_authz_allow_total', series), 3, 'one count per request, not per connection');
    writeFileSync(join(dir, 'mesh.yaml'), meshYaml(`{ suffixes: [other.serviceaccount.identity.linkerd.cluster.local] }`));
    await changed(authz.policy(8080));
    assert.equal(authz.request(keepAlive, req('GET', '/r3'))?.code, 'BPFMESH_E_FORBIDDEN', 'the decision kept for the connection outlived its policy');
    assert.equal(sample(await registry.metrics(), 'inbound_http_authz_deny_total', series), 1);
    writeFileSync(join(dir, 'mesh.yaml'), meshYaml(FIRST));
    await changed(authz.policy(8080));
    assert.equal(authz.request(keepAlive, req('GET', '/r4')), null, 'allowed again once the policy allows it again');
    assert.equal(sample(await registry.metrics(), 'inbound_http_authz_allow_total', series), 4);
  });

  test('a policy change reaches the proxy within 1 s and closes the TCP connections it no longer allows', async () => {
    const allowedA = conn(8080, '10.1.1.1', id('a'));
    const allowedX = conn(8080, '10.1.1.2', id('x', 'other'));
    assert.equal(authz.connection(allowedA), null);
    assert.equal(authz.connection(allowedX), null);
    let revokedAt = 0;
    let revokedX = false;
    authz.watch(allowedA, () => (revokedAt = performance.now()));
    authz.watch(allowedX, () => (revokedX = true));
    writeFileSync(join(dir, 'mesh.yaml'), meshYaml(`{ suffixes: [other.serviceaccount.identity.linkerd.cluster.local] }`));
    const t0 = performance.now();
    assert.equal(await cp.reload(), true);
    while (revokedAt === 0 && performance.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 5));
    assert.ok(revokedAt > 0, 'the connection of the identity no longer listed was not closed');
    assert.ok(revokedAt - t0 < 1000, `applied after ${Math.round(revokedAt - t0)} ms`);
    assert.equal(revokedX, false, 'a connection still allowed stays open');
    assert.equal(authz.connection(conn(8080, '10.1.1.1', id('a')))?.code, 'BPFMESH_E_FORBIDDEN');
    assert.equal(sample(await registry.metrics(), 'inbound_tcp_authz_terminate_total', { srv_name: 'web-tcp', client_id: id('a') }), 1);
  });

  test('the policy API down: the last policy holds; a proxy started meanwhile follows its default; both catch up when it returns', async () => {
    const port = cp.address.port;
    await cp.close();
    await new Promise((r) => setTimeout(r, 300)); // streams ended, reconnects failing
    assert.equal(authz.connection(conn(8080, '10.1.1.2', id('x', 'other'))), null, 'last known policy');
    assert.equal(authz.connection(conn(8080, '10.1.1.1', id('a')))?.code, 'BPFMESH_E_FORBIDDEN', 'last known policy');
    const denyByDefault = newAuthorizer('deny', port, 300);
    const t0 = performance.now();
    await denyByDefault.ready(8080);
    assert.ok(performance.now() - t0 >= 250, 'waited for the first policy');
    assert.equal(denyByDefault.policy(8080).meta.name, 'deny');
    assert.equal(denyByDefault.connection(conn(8080, '10.1.1.2', id('x', 'other')))?.code, 'BPFMESH_E_FORBIDDEN');
    const openByDefault = newAuthorizer('cluster-unauthenticated', port, 300);
    await openByDefault.ready(8080);
    assert.equal(openByDefault.connection(conn(8080, '10.9.9.9')), null, 'cluster-unauthenticated: a cluster address');
    assert.equal(openByDefault.connection(conn(8080, '203.0.113.9'))?.code, 'BPFMESH_E_FORBIDDEN', 'cluster-unauthenticated: not outside');
    // The control plane returns on the same port.
    cp = await startControlPlane({ configPath: join(dir, 'mesh.yaml'), stateDir: join(dir, 'state'), log: silent, registry: new Registry(), listen: { host: '127.0.0.1', port }, watch: false });
    const deadline = Date.now() + 5000;
    while (denyByDefault.policy(8080).meta.name !== 'web-tcp' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(denyByDefault.policy(8080).meta.name, 'web-tcp', 'the API policy replaced the default when the API returned');
    assert.equal(denyByDefault.connection(conn(8080, '10.1.1.2', id('x', 'other'))), null);
  });
});

describe('default policies (LINKERD2_PROXY_INBOUND_DEFAULT_POLICY)', () => {
  const clients = {
    clusterPlain: { ip: '10.3.0.1', tls: false, identity: undefined },
    clusterMeshed: { ip: '10.3.0.1', tls: true, identity: id('a') },
    outsidePlain: { ip: '203.0.113.1', tls: false, identity: undefined },
    outsideMeshed: { ip: '2001:db8::1', tls: true, identity: id('a') },
  };
  const expected: Record<DefaultPolicyName, Array<keyof typeof clients>> = {
    'all-unauthenticated': ['clusterPlain', 'clusterMeshed', 'outsidePlain', 'outsideMeshed'],
    audit: ['clusterPlain', 'clusterMeshed', 'outsidePlain', 'outsideMeshed'],
    'all-authenticated': ['clusterMeshed', 'outsideMeshed'],
    'cluster-unauthenticated': ['clusterPlain', 'clusterMeshed'],
    'cluster-authenticated': ['clusterMeshed'],
    deny: [],
  };
  for (const name of DEFAULT_POLICIES) {
    test(name, () => {
      const p = defaultServerPolicy(name, CLUSTER);
      const allowed = (Object.keys(clients) as Array<keyof typeof clients>).filter((k) => findAuthorization(p.authorizations, clients[k]) !== null);
      assert.deepEqual(allowed, expected[name]);
      const route = findRoute(p, req('GET', '/'));
      assert.equal(route?.meta.name, 'default');
    });
  }
});

test('request info from an HTTP/1 head: path, query, host without port, headers by lower-case name', () => {
  const head = parseRequestHead(Buffer.from('GET http://Web.NS:8080/a/b?x=1&y=2 HTTP/1.1\r\nHost: ignored\r\nX-Env: prod\r\n\r\n', 'latin1'));
  const r = requestInfoOfH1(head);
  assert.deepEqual([r.method, r.path, r.query, r.host, r.header('x-env')], ['GET', '/a/b', 'x=1&y=2', 'web.ns', 'prod']);
});
