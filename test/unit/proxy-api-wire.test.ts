// proto/*.proto against the pinned linkerd2-proxy-api release, and the wire
// against an independent implementation: bytes built by protoc (`protoc
// --encode` from a text-format message) are decoded by our loader, and our
// bytes are decoded by protoc. Also: src/control/gen/ is what `npm run
// gen:protos` makes of proto/ now.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import * as protobuf from 'protobufjs';
import { REPO_ROOT } from '../../src/config/paths.js';
import { decodeTcpAddress, destinationService, encodeTcpAddress, inboundPolicyService, PROTO_DIR, tapService, type ObserveRequestMsg, type ServerMsg, type UpdateMsg } from '../../src/control/protos.js';
import { ENUMS, FIELDS } from '../fixtures/proxy-api-v0.20.0.js';

const WKT = join(REPO_ROOT, 'test', 'fixtures', 'protoc-wkt');
// Skipped without protoc, except under CI=true, where it must be there.
const protocSkip =
  spawnSync('protoc', ['--version']).status === 0 || process.env['CI'] === 'true' ? false : 'protoc not installed (apt-get install protobuf-compiler; scripts/install-deps.sh does)';

function protoc(args: string[], input: Buffer | string): Buffer {
  const r = spawnSync('protoc', [`-I${PROTO_DIR}`, `-I${WKT}`, ...args], { input });
  assert.equal(r.status, 0, `protoc ${args.join(' ')}: ${r.stderr?.toString()}`);
  return r.stdout;
}

function describeField(f: protobuf.Field): string {
  if (f.map) return `${f.name} ${f.id} map`;
  const type = f.type.slice(f.type.lastIndexOf('.') + 1);
  return `${f.name} ${f.id} ${f.repeated ? 'repeated ' : ''}${type}`;
}

test('every declared message matches the release: field names, numbers, types', () => {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (target.startsWith('google/') ? join(WKT, target) : join(PROTO_DIR, target));
  root.loadSync(['destination.proto', 'identity.proto', 'inbound.proto', 'tap.proto'], { keepCase: true }).resolveAll();
  for (const [name, fields] of Object.entries(FIELDS)) {
    const t = root.lookupType(name);
    assert.deepEqual(t.fieldsArray.map(describeField).sort(), [...fields].sort(), name);
  }
  for (const [name, values] of Object.entries(ENUMS)) assert.deepEqual({ ...root.lookupEnum(name).values }, values, name);
  // Every message we declare with fields is checked (empty ones only skip bytes).
  const declared: string[] = [];
  const walk = (ns: protobuf.NamespaceBase): void => {
    for (const n of ns.nestedArray) {
      if (n instanceof protobuf.Type && n.fieldsArray.length > 0 && !n.fullName.startsWith('.google')) declared.push(n.fullName.slice(1));
      if (n instanceof protobuf.Namespace || n instanceof protobuf.Type) walk(n);
    }
  };
  walk(root);
  assert.deepEqual(declared.filter((d) => FIELDS[d] === undefined), [], 'declared messages missing from the release table');
});

const SERVER_TEXT = `
protocol { detect { timeout { seconds: 10 } http_routes {
  metadata { resource { group: "policy.linkerd.io" kind: "HTTPRoute" name: "health" } }
  hosts { exact: "web.ns.svc.cluster.local" }
  hosts { suffix { reverse_labels: "com" reverse_labels: "example" } }
  authorizations { networks { net { ip { ipv4: 167772160 } prefix_len: 8 } } authentication { unauthenticated {} } }
  rules { matches { path { prefix: "/healthz" } method { registered: GET } headers { name: "x-env" exact: "prod" } } }
} } }
server_ips { ipv6 { first: 18374686479671623680 last: 1 } }
authorizations {
  networks { net { ip { ipv4: 0 } prefix_len: 0 } except { ip { ipv4: 3232235777 } prefix_len: 32 } }
  authentication { meshTLS { identities {
    identities { name: "web.ns.serviceaccount.identity.linkerd.cluster.local" }
    suffixes { parts: "ns" parts: "serviceaccount" parts: "identity" parts: "linkerd" parts: "cluster" parts: "local" }
    suffixes { }
  } } }
  labels { key: "kind" value: "default" }
  metadata { default: "all-authenticated" }
}
authorizations { networks { net { ip { ipv4: 0 } prefix_len: 0 } } authentication { meshTLS { unauthenticated {} } } }
labels { key: "name" value: "web-http" }
`;

test('inbound.Server built by protoc decodes field for field', { skip: protocSkip }, () => {
  const bytes = protoc(['--encode=io.linkerd.proxy.inbound.Server', 'inbound.proto'], SERVER_TEXT);
  const s = inboundPolicyService().WatchPort.responseDeserialize(bytes) as ServerMsg;
  assert.equal(s.protocol?.kind, 'detect');
  const d = s.protocol?.detect;
  assert.equal(d?.timeout?.seconds, '10');
  const route = d?.http_routes[0];
  assert.deepEqual(route?.metadata?.resource, { group: 'policy.linkerd.io', kind: 'HTTPRoute', name: 'health' });
  assert.equal(route?.hosts[0]?.exact, 'web.ns.svc.cluster.local');
  assert.deepEqual(route?.hosts[1]?.suffix?.reverse_labels, ['com', 'example']);
  assert.equal(route?.authorizations[0]?.networks[0]?.net?.ip?.ipv4, 0x0a000000);
  assert.equal(route?.authorizations[0]?.networks[0]?.net?.prefix_len, 8);
  assert.equal(route?.authorizations[0]?.authentication?.permit, 'unauthenticated');
  const m = route?.rules[0]?.matches[0];
  assert.equal(m?.path?.prefix, '/healthz');
  assert.equal(m?.method?.registered, 'GET');
  assert.deepEqual([m?.headers[0]?.name, m?.headers[0]?.exact], ['x-env', 'prod']);
  assert.equal(decodeTcpAddress({ ip: s.server_ips[0] ?? null, port: 1 })?.host, 'ff00::1');
  const a = s.authorizations[0];
  assert.equal(a?.networks[0]?.except[0]?.ip?.ipv4, 0xc0a80101);
  const ids = a?.authentication?.meshTLS?.identities;
  assert.equal(a?.authentication?.meshTLS?.clients, 'identities');
  assert.equal(ids?.identities[0]?.name, 'web.ns.serviceaccount.identity.linkerd.cluster.local');
  assert.deepEqual(ids?.suffixes.map((x) => x.parts.length), [6, 0]);
  assert.deepEqual(a?.labels, { kind: 'default' });
  assert.equal(a?.metadata?.default, 'all-authenticated');
  assert.equal(s.authorizations[1]?.authentication?.meshTLS?.clients, 'unauthenticated');
  assert.deepEqual(s.labels, { name: 'web-http' });
});

test('fields of the release that bpfmesh does not declare are skipped, not misread', { skip: protocSkip }, () => {
  // Detect field 4 (a rate limit in newer releases) and an unknown Authz field 9: appended as raw bytes.
  const known = protoc(['--encode=io.linkerd.proxy.inbound.Server', 'inbound.proto'], 'authorizations { metadata { default: "x" } }');
  const extra = Buffer.concat([known, Buffer.from([0x0a, 0x04, 0x0a, 0x02, 0x22, 0x00]), Buffer.from([0x1a, 0x03, 0x4a, 0x01, 0x41])]);
  const s = inboundPolicyService().WatchPort.responseDeserialize(extra) as ServerMsg;
  assert.equal(s.protocol?.kind, 'detect');
  assert.equal(s.authorizations.length, 2);
  assert.equal(s.authorizations[0]?.metadata?.default, 'x');
});

test('destination.Update built by protoc decodes; ours decodes in protoc', { skip: protocSkip }, () => {
  const text = `add { addrs { addr { ip { ipv4: 167837954 } port: 8080 } weight: 10000 metric_labels { key: "pod" value: "web-0" }
    tls_identity { dns_like_identity { name: "web.ns.serviceaccount.identity.linkerd.cluster.local" } server_name { name: "web.sni" } }
    protocol_hint { h2 {} opaque_transport { inbound_port: 4143 } } } metric_labels { key: "service" value: "web" } }`;
  const bytes = protoc(['--encode=io.linkerd.proxy.destination.Update', 'destination.proto'], text);
  const u = destinationService().Get.responseDeserialize(bytes) as UpdateMsg;
  const w = u.add?.addrs[0];
  assert.deepEqual(decodeTcpAddress(w?.addr), { host: '10.1.1.2', port: 8080 });
  assert.equal(w?.weight, 10000);
  assert.equal(w?.tls_identity?.server_name?.name, 'web.sni');
  assert.equal(w?.protocol_hint?.protocol, 'h2');
  assert.equal(w?.protocol_hint?.opaque_transport?.inbound_port, 4143);
  assert.deepEqual(u.add?.metric_labels, { service: 'web' });
  // The other way: our encoding, protoc's decoding.
  const ours = destinationService().Get.responseSerialize({ remove: { addrs: [encodeTcpAddress({ host: '2001:db8::1', port: 443 })] } });
  const decoded = protoc(['--decode=io.linkerd.proxy.destination.Update', 'destination.proto'], ours).toString();
  assert.match(decoded, /first: 2306139568115548160/);
  assert.match(decoded, /last: 1\b/);
  assert.match(decoded, /port: 443/);
});

test('our inbound.Server decodes in protoc with the same values', { skip: protocSkip }, () => {
  const ours = inboundPolicyService().WatchPort.responseSerialize({
    protocol: { http1: { routes: [{ metadata: { default: 'default' }, rules: [{ matches: [{ path: { exact: '/x' }, method: { unregistered: 'PURGE' } }] }] }] } },
    authorizations: [{ networks: [{ net: { ip: { ipv4: 0x0a000000 }, prefix_len: 8 } }], authentication: { meshTLS: { identities: { suffixes: [{ parts: ['ns'] }] } } } }],
  });
  const text = protoc(['--decode=io.linkerd.proxy.inbound.Server', 'inbound.proto'], ours).toString().replace(/\s+/g, ' ');
  assert.match(text, /http1 \{ routes \{ metadata \{ default: "default" \} rules \{ matches \{ path \{ exact: "\/x" \} method \{ unregistered: "PURGE" \} \} \} \} \}/);
  assert.match(text, /net \{ ip \{ ipv4: 167772160 \} prefix_len: 8 \}/);
  assert.match(text, /meshTLS \{ identities \{ suffixes \{ parts: "ns" \} \} \}/);
});

test('tap.ObserveRequest built by protoc decodes; our TapEvent decodes in protoc', { skip: protocSkip }, () => {
  const text = `limit: 5 match { all { matches { destination { netmask { ip { ipv4: 167772162 } mask: 32 } } }
    matches { http { path { prefix: "/api" } } } matches { not { http { method { registered: POST } } } }
    matches { source { ports { min: 80 max: 90 } } } } } extract { http { headers {} } }`;
  const bytes = protoc(['--encode=io.linkerd.proxy.tap.ObserveRequest', 'tap.proto'], text);
  const req = tapService().Observe.requestDeserialize(bytes) as ObserveRequestMsg;
  assert.equal(req.limit, 5);
  const all = req.match?.all?.matches ?? [];
  assert.equal(all[0]?.destination?.netmask?.ip?.ipv4, 0x0a000002);
  assert.equal(all[0]?.destination?.netmask?.mask, 32);
  assert.equal(all[1]?.http?.path?.prefix, '/api');
  assert.equal(all[2]?.not?.http?.method?.registered, 'POST');
  assert.deepEqual([all[3]?.source?.ports?.min, all[3]?.source?.ports?.max], [80, 90]);
  assert.equal(req.extract?.http?.extract, 'headers');
  const ours = tapService().Observe.responseSerialize({
    source: encodeTcpAddress({ host: '10.0.0.1', port: 4321 }),
    destination: encodeTcpAddress({ host: '10.0.0.2', port: 8080 }),
    source_meta: { labels: { tls: 'true', client_id: 'a.ns.serviceaccount.identity.linkerd.cluster.local' } },
    proxy_direction: 'INBOUND',
    http: { response_end: { id: { base: 3, stream: '7' }, since_response_init: { seconds: '0', nanos: 1500000 }, response_bytes: '42', eos: { grpc_status_code: 0 } } },
  });
  const decoded = protoc(['--decode=io.linkerd.proxy.tap.TapEvent', 'tap.proto'], ours).toString().replace(/\s+/g, ' ');
  assert.match(decoded, /proxy_direction: INBOUND/);
  assert.match(decoded, /key: "client_id" value: "a\.ns\.serviceaccount\.identity\.linkerd\.cluster\.local"/);
  assert.match(decoded, /response_end \{ id \{ base: 3 stream: 7 \} since_response_init \{ nanos: 1500000 \} response_bytes: 42 eos \{ grpc_status_code: 0 \} \}/);
  assert.match(decoded, /port: 4321/);
});

function listFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? listFiles(p) : [p];
  });
}

test('src/control/gen is current: npm run gen:protos makes the same files', () => {
  const out = mkdtempSync(join(tmpdir(), 'bpfmesh-gen-'));
  try {
    const bin = join(REPO_ROOT, 'node_modules', '@grpc', 'proto-loader', 'build', 'bin', 'proto-loader-gen-types.js');
    const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    const args = (pkg.scripts['gen:protos'] ?? '').split(' ').slice(1).map((a) => (a === 'src/control/gen' ? out : a));
    const r = spawnSync(process.execPath, [bin, ...args], { cwd: REPO_ROOT });
    assert.equal(r.status, 0, r.stderr.toString());
    const committed = join(REPO_ROOT, 'src', 'control', 'gen');
    const want = listFiles(out).map((f) => relative(out, f)).sort();
    assert.deepEqual(listFiles(committed).map((f) => relative(committed, f)).sort(), want, 'run npm run gen:protos');
    for (const f of want) assert.equal(readFileSync(join(committed, f), 'utf8'), readFileSync(join(out, f), 'utf8'), `${f} is stale: run npm run gen:protos`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
