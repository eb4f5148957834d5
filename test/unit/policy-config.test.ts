// The policy parts of configuration: mesh.yaml's `policy:` (what the dev
// control plane serves, and what it answers for a PortSpec) and the proxy's
// LINKERD2_PROXY_POLICY_* / _INBOUND_DEFAULT_POLICY environment.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { REPO_ROOT } from '../../src/config/paths.js';
import { parseProxyEnv } from '../../src/config/proxy-env.js';
import { inboundPolicyService, type ServerMsg } from '../../src/control/protos.js';
import { parseMeshConfig } from '../../src/controlplane/mesh-config.js';
import { parsePolicySection } from '../../src/controlplane/policy-config.js';
import { serverFor, workloadKey } from '../../src/controlplane/policy-service.js';
import { findAuthorization, findRoute } from '../../src/policy/authorize.js';
import { serverPolicyOf } from '../../src/policy/model.js';

/** The README's example, as a user would copy it. */
function readmeExample(): string {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const m = /```yaml\n(policy:\n[\s\S]*?)```/.exec(readme);
  assert.ok(m, 'README has the policy example');
  return m[1] ?? '';
}

test("the README's policy example parses, and what the control plane sends for it decodes to the same decisions", () => {
  const cfg = parseMeshConfig(readmeExample(), 'mesh.yaml', '/tmp');
  const wire = inboundPolicyService().WatchPort.responseSerialize(serverFor(cfg.policy, '{"ns":"default","pod":"web"}', 8080));
  const policy = serverPolicyOf(inboundPolicyService().WatchPort.responseDeserialize(wire) as ServerMsg);
  assert.deepEqual(policy.meta, { group: 'policy.linkerd.io', kind: 'server', name: 'web' });
  const health = { method: 'GET', path: '/healthz', query: '', host: 'web', header: () => undefined };
  const route = findRoute(policy, health);
  assert.equal(route?.meta.name, 'health');
  assert.ok(findAuthorization(route?.authorizations ?? [], { ip: '203.0.113.1', tls: false, identity: undefined }));
  assert.equal(findRoute(policy, { ...health, path: '/' }), null, 'the server has routes: others are 404');
  // Another pod, or another port: the default policy.
  const other = serverPolicyOf(inboundPolicyService().WatchPort.responseDeserialize(inboundPolicyService().WatchPort.responseSerialize(serverFor(cfg.policy, 'default:api', 8080))) as ServerMsg);
  assert.deepEqual(other.meta, { group: '', kind: 'default', name: 'all-unauthenticated' });
  assert.equal(findRoute(other, { ...health, path: '/' })?.meta.name, 'default');
});

test('mesh.yaml policy errors name the place and the expected form', () => {
  const bad = (policy: unknown, where: RegExp): void =>
    assert.throws(() => parsePolicySection(policy), (e: Error & { code?: string }) => e.code === 'BPFMESH_E_CONTROL_PLANE_CONFIG' && where.test(e.message), JSON.stringify(policy));
  bad({ defaultPolicy: 'allow-all' }, /policy.defaultPolicy: expected one of all-unauthenticated/);
  bad({ servers: [{ name: 'x', port: 70000 }] }, /policy.servers\[0\].port: expected a port/);
  bad({ servers: [{ name: 'x', port: 80, authorizations: [{ name: 'a', networks: ['10.0.0.300/8'] }] }] }, /authorizations\[0\].networks\[0\]: .* not a CIDR/);
  bad({ servers: [{ name: 'x', port: 80, authorizations: [{ name: 'a', authentication: 'mtls' }] }] }, /authentication: expected a mapping/);
  bad({ servers: [{ name: 'x', port: 80, routes: [{ name: 'r', matches: [{ path: { exact: '/a', prefix: '/' } }] }] }] }, /path: exactly one of exact, prefix, regex/);
  bad({ servers: [{ name: 'x', port: 80 }, { name: 'y', port: 80 }] }, /port 80 of every workload is listed twice/);
  bad({ servers: [{ name: 'x', port: 80, protocl: 'http1' }] }, /unknown key "protocl"/);
  assert.equal(workloadKey('{"ns":"default","pod":"web"}'), 'default:web');
  assert.equal(workloadKey('default:web'), 'default:web');
  assert.ok(parseYaml(readmeExample()));
});

test('proxy environment: policy API, workload, default policy, cluster networks, ports', () => {
  const p = parseProxyEnv({}).policy;
  assert.equal(p?.svc, undefined);
  assert.equal(p?.defaultPolicy, 'all-unauthenticated');
  assert.equal(p?.clusterNetworks.length, 5);
  const q = parseProxyEnv({
    LINKERD2_PROXY_POLICY_SVC_ADDR: '127.0.0.1:8090',
    LINKERD2_PROXY_POLICY_WORKLOAD: '{"ns":"a","pod":"b"}',
    LINKERD2_PROXY_INBOUND_DEFAULT_POLICY: 'cluster-authenticated',
    LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS: '10.1.0.0/16, fd00::/8',
    LINKERD2_PROXY_INBOUND_PORTS: '8080,9090,8080',
  }).policy;
  assert.deepEqual([q?.svc?.loopback, q?.workload, q?.defaultPolicy, q?.clusterNetworks.map((c) => c.prefix), q?.ports], [true, '{"ns":"a","pod":"b"}', 'cluster-authenticated', [16, 8], [8080, 9090]]);
  const bad = (env: NodeJS.ProcessEnv, re: RegExp): void => assert.throws(() => parseProxyEnv(env), (e: Error & { code?: string }) => e.code === 'BPFMESH_E_BAD_ENV' && re.test(e.message));
  bad({ LINKERD2_PROXY_INBOUND_DEFAULT_POLICY: 'allow' }, /LINKERD2_PROXY_INBOUND_DEFAULT_POLICY: "allow" is not valid; expected all-unauthenticated/);
  bad({ LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS: '10.0.0.0/33' }, /LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS/);
  bad({ LINKERD2_PROXY_POLICY_SVC_ADDR: '127.0.0.1:8090' }, /LINKERD2_PROXY_POLICY_WORKLOAD is required/);
  bad({ LINKERD2_PROXY_POLICY_SVC_ADDR: 'linkerd-policy.linkerd.svc:8090', LINKERD2_PROXY_POLICY_WORKLOAD: 'a:b' }, /LINKERD2_PROXY_POLICY_SVC_NAME is required/);
  bad({ LINKERD2_PROXY_INBOUND_PORTS: '80,x' }, /LINKERD2_PROXY_INBOUND_PORTS/);
});
