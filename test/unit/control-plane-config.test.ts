// mesh.yaml, the control plane's diffs, and `bpfmesh control-plane` flags.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../../src/config/paths.js';
import { parseControlPlaneFlags } from '../../src/config/control-plane-flags.js';
import { decodeTcpAddress, type UpdateMsg } from '../../src/control/protos.js';
import { diffUpdates, initialUpdates } from '../../src/controlplane/destination-service.js';
import { normalizePath, parseMeshConfig, type MeshConfig, type MeshEndpoint } from '../../src/controlplane/mesh-config.js';

const parse = (text: string): MeshConfig => parseMeshConfig(text, 'mesh.yaml', '/etc/bpfmesh');

test('a full mesh.yaml', () => {
  const c = parse(`
listen: 127.0.0.1:8086
trustDomain: Cluster.Local
identity: { issuer: { certFile: issuer.crt, keyFile: /abs/issuer.key }, leafLifetime: 20s }
tokens: { "t1": web.default.serviceaccount.identity.linkerd.cluster.local }
services:
  - name: Web.Default.svc.cluster.local.:8080
    endpoints:
      - { addr: 10.0.0.2:8080, weight: 10000, identity: web.default.serviceaccount.identity.linkerd.cluster.local, protocolHint: h2, labels: { pod: web-0, zone: 3 } }
      - { addr: "[fd00::2]:8080" }
  - name: "10.0.0.9:80"
    noEndpoints: true
`);
  assert.deepEqual(c.listen, { host: '127.0.0.1', port: 8086 });
  assert.equal(c.trustDomain, 'cluster.local');
  assert.deepEqual(c.identity, { issuer: { certFile: '/etc/bpfmesh/issuer.crt', keyFile: '/abs/issuer.key' }, trustAnchorsFile: undefined, leafLifetimeMs: 20_000 });
  assert.equal(c.tokens?.get('t1'), 'web.default.serviceaccount.identity.linkerd.cluster.local');
  const web = c.services.get('web.default.svc.cluster.local:8080');
  assert.ok(web, 'names are normalised: lower case, no root dot');
  assert.deepEqual(web.endpoints[0], {
    addr: { host: '10.0.0.2', port: 8080 },
    weight: 10000,
    identity: 'web.default.serviceaccount.identity.linkerd.cluster.local',
    protocolHint: 'h2',
    labels: { pod: 'web-0', zone: '3' },
  });
  assert.equal(web.endpoints[1]?.weight, 10000, 'default weight');
  assert.deepEqual(c.services.get('10.0.0.9:80')?.endpoints, []);
});

test('defaults: an empty file', () => {
  const c = parse('');
  assert.deepEqual(c.listen, { host: '127.0.0.1', port: 8086 });
  assert.equal(c.trustDomain, 'cluster.local');
  assert.equal(c.identity.leafLifetimeMs, 24 * 3_600_000);
  assert.equal(c.tokens, undefined, 'any token');
  assert.equal(c.services.size, 0);
  assert.equal(c.identityListen, undefined, 'Identity shares the loopback port');
  assert.deepEqual(parse('listen: 0.0.0.0:8086\nidentityListen: 0.0.0.0:8080').identityListen, { host: '0.0.0.0', port: 8080 });
  assert.equal(c.policyListen, undefined, 'no policy port of its own by default');
  assert.deepEqual(parse('listen: 0.0.0.0:8086\npolicyListen: 0.0.0.0:8090').policyListen, { host: '0.0.0.0', port: 8090 });
});

test('mistakes are errors that say where', () => {
  const cases: Array<[string, RegExp]> = [
    ['listen: localhost:1', /^listen:/],
    ['identityListen: identity:8080', /^identityListen:/],
    ['policyListen: policy:8090', /^policyListen:/],
    ['servics: []', /unknown key "servics"/],
    ['services: [ { name: web } ]', /services\[0\]\.name: "web" is not host:port/],
    ['services: [ { name: "a:1", endpoints: [ { addr: "web:80" } ] } ]', /endpoints\[0\]\.addr/],
    ['services: [ { name: "a:1", endpoints: [ { addr: "10.0.0.1:80", weight: -1 } ] } ]', /weight/],
    ['services: [ { name: "a:1", endpoints: [ { addr: "10.0.0.1:80", protocolHint: h3 } ] } ]', /h2 or opaque/],
    ['services: [ { name: "a:1", noEndpoints: true, endpoints: [ { addr: "10.0.0.1:80" } ] } ]', /noEndpoints: true and a non-empty/],
    ['services: [ { name: "a:1" }, { name: "A:1" } ]', /listed twice/],
    ['identity: { leafLifetime: 5 }', /leafLifetime/],
    ['identity: { issuer: { certFile: x } }', /keyFile/],
    ['{ bad yaml', /not YAML/],
  ];
  for (const [text, re] of cases) assert.throws(() => parse(text), (e: Error & { code?: string }) => e.code === 'BPFMESH_E_CONTROL_PLANE_CONFIG' && re.test(e.message), text);
});

test('Get paths are normalised like service names', () => {
  assert.equal(normalizePath('WEB.default.svc.cluster.local.:80'), 'web.default.svc.cluster.local:80');
  assert.equal(normalizePath('[FD00:0::1]:80'), '[fd00::1]:80');
  assert.equal(normalizePath('10.0.0.1:80'), '10.0.0.1:80');
  for (const bad of ['web', 'web:0', 'web:99999', 'bad_name:80', '[web]:80', 'fd00::1:80']) assert.equal(normalizePath(bad), null, bad);
});

const ep = (host: string, extra: Partial<MeshEndpoint> = {}): MeshEndpoint => ({
  addr: { host, port: 80 },
  weight: 10000,
  identity: undefined,
  protocolHint: undefined,
  labels: {},
  ...extra,
});
const snap = (exists: boolean, eps: MeshEndpoint[], labels: Record<string, string> = {}) => ({
  exists,
  labels,
  endpoints: new Map(eps.map((e) => [`${e.addr.host}:80`, e])),
});
const summary = (us: UpdateMsg[]): string[] =>
  us.map((u) =>
    u.add !== undefined
      ? `add ${u.add.addrs.map((a) => decodeTcpAddress(a.addr)?.host).join(',')}`
      : u.remove !== undefined
        ? `remove ${u.remove.addrs.map((a) => decodeTcpAddress(a)?.host).join(',')}`
        : `none ${String(u.no_endpoints?.exists)}`,
  );

test('initial state and diffs', () => {
  assert.deepEqual(summary(initialUpdates(snap(false, []))), ['none false']);
  assert.deepEqual(summary(initialUpdates(snap(true, []))), ['none true']);
  assert.deepEqual(summary(initialUpdates(snap(true, [ep('10.0.0.1'), ep('10.0.0.2')]))), ['add 10.0.0.1,10.0.0.2']);

  const a = snap(true, [ep('10.0.0.1'), ep('10.0.0.2')]);
  assert.deepEqual(summary(diffUpdates(a, a)), [], 'no change, no message');
  assert.deepEqual(summary(diffUpdates(a, snap(true, [ep('10.0.0.2'), ep('10.0.0.3')]))), ['remove 10.0.0.1', 'add 10.0.0.3']);
  assert.deepEqual(summary(diffUpdates(a, snap(true, [ep('10.0.0.1', { weight: 5 }), ep('10.0.0.2')]))), ['add 10.0.0.1'], 'a changed endpoint is sent again');
  assert.deepEqual(summary(diffUpdates(a, snap(true, [ep('10.0.0.1'), ep('10.0.0.2')], { svc: 'x' }))), ['add 10.0.0.1,10.0.0.2'], 'set labels changed');
  assert.deepEqual(summary(diffUpdates(a, snap(true, []))), ['none true']);
  assert.deepEqual(summary(diffUpdates(a, snap(false, []))), ['none false']);
  assert.deepEqual(summary(diffUpdates(snap(false, []), snap(true, []))), ['none true']);
  assert.deepEqual(summary(diffUpdates(snap(true, []), a)), ['add 10.0.0.1,10.0.0.2']);
  const identity = diffUpdates(snap(false, []), snap(true, [ep('10.0.0.1', { identity: 'w.ns.serviceaccount.identity.linkerd.cluster.local', protocolHint: 'opaque' })]))[0];
  assert.deepEqual(identity?.add?.addrs[0]?.tls_identity, {
    dns_like_identity: { name: 'w.ns.serviceaccount.identity.linkerd.cluster.local' },
    server_name: { name: 'w.ns.serviceaccount.identity.linkerd.cluster.local' },
  });
  assert.deepEqual(identity?.add?.addrs[0]?.protocol_hint, { opaque: {} });
});

test('control-plane flags', () => {
  assert.deepEqual(parseControlPlaneFlags(['--config', 'mesh.yaml']), {
    config: 'mesh.yaml',
    stateDir: '.bpfmesh-cp',
    listen: undefined,
    identityListen: undefined,
    policyListen: undefined,
    adminAddr: undefined,
    logFormat: 'plain',
    logLevel: 'info',
  });
  const f = parseControlPlaneFlags(['--config=m.yaml', '--state-dir', '/var/lib/cp', '--listen', '[::1]:9000', '--admin-addr', '127.0.0.1:9990', '--log-level', 'DEBUG', '--log-format', 'json']);
  assert.deepEqual(f.listen, { host: '::1', port: 9000 });
  assert.deepEqual(parseControlPlaneFlags(['--config', 'm.yaml', '--policy-listen', '10.0.0.1:8090']).policyListen, { host: '10.0.0.1', port: 8090 });
  assert.deepEqual(f.adminAddr, { host: '127.0.0.1', port: 9990 });
  assert.equal(f.stateDir, '/var/lib/cp');
  assert.equal(f.logLevel, 'debug');
  for (const argv of [[], ['--config', 'm', '--listen', 'localhost:1'], ['--config', 'm', '--nope'], ['--config', 'm', '--log-level', 'loud'], ['--config', 'm', 'extra']]) {
    assert.throws(() => parseControlPlaneFlags(argv), { code: 'BPFMESH_E_BAD_FLAG' }, argv.join(' '));
  }
});

test('bpfmesh control-plane runs from the CLI, logs where it listens and stops on SIGTERM', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bpfmesh-cp-cli-'));
  try {
    writeFileSync(join(dir, 'mesh.yaml'), 'services: [ { name: "web.default.svc.cluster.local:80", endpoints: [ { addr: "10.0.0.1:80" } ] } ]\n');
    const child = spawn(process.execPath, [join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js'), 'control-plane', '--config', join(dir, 'mesh.yaml'), '--state-dir', join(dir, 'state'), '--listen', '127.0.0.1:0'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "listening" line: ${stderr}`)), 10_000);
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (/control plane listening listen=127\.0\.0\.1:\d+/.test(stderr)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    assert.ok(existsSync(join(dir, 'state', 'trust-anchors.pem')));
    child.kill('SIGTERM');
    assert.equal(await exited, 0, stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
