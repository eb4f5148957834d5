// `bpfmesh proxy` loads its control-plane clients (gRPC, protobuf, X.509)
// only when configured (src/cli/proxy.ts): without a control plane none of
// that code is in the process; with one, identity, discovery, policy and tap
// load on first use and work (the proxy turns ready only once the identity
// client got its certificate from the real development control plane).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.js';

const MAIN = join(__dirname, '..', '..', 'src', 'cli', 'main.js');
const WEB = 'web.default.serviceaccount.identity.linkerd.cluster.local';
const HEAVY = /node_modules[/\\](@grpc|protobufjs|@peculiar)[/\\]|[/\\]src[/\\](control|controlplane)[/\\]|[/\\]policy[/\\]watcher\.js$|[/\\]tap[/\\](hub|server)\.js$/;

/** The proxy in a child process; on 'modules' it answers with the files it has loaded. */
const CHILD = `
const { main } = require(process.argv[1]);
process.on('message', () => process.send(Object.keys(require.cache)));
main(['proxy']).then((code) => process.exit(code));
`;

let cp: TestControlPlane;
const children: ChildProcess[] = [];

before(async () => {
  cp = await startTestControlPlane(`
trustDomain: cluster.local
tokens:
  token-a: ${WEB}
`);
});

after(async () => {
  for (const c of children) c.kill('SIGKILL');
  await cp.cleanup();
});

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as { port: number };
  await new Promise((r) => srv.close(r));
  return port;
}

/** Starts the proxy with `env` on free loopback ports; resolves once /ready says ready, with the files it loaded. */
async function readyProxy(env: NodeJS.ProcessEnv): Promise<{ loaded: string[]; metrics: string }> {
  const admin = await freePort();
  const child = fork('-e', [CHILD, MAIN], {
    execArgv: [],
    env: {
      PATH: process.env['PATH'],
      LINKERD2_PROXY_LOG: 'warn',
      LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR: '127.0.0.1:0',
      LINKERD2_PROXY_INBOUND_LISTEN_ADDR: '127.0.0.1:0',
      LINKERD2_PROXY_ADMIN_LISTEN_ADDR: `127.0.0.1:${admin}`,
      LINKERD2_PROXY_CONTROL_LISTEN_ADDR: '127.0.0.1:0',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  children.push(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) assert.fail(`the proxy exited (${child.exitCode}): ${stderr}`);
    const body = await fetch(`http://127.0.0.1:${admin}/ready`).then((r) => r.text(), () => '');
    if (body === 'ready\n') break;
    if (Date.now() > deadline) assert.fail(`the proxy did not become ready within 20 s: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const metrics = await fetch(`http://127.0.0.1:${admin}/metrics`).then((r) => r.text());
  const loaded = await new Promise<string[]>((resolve) => {
    child.once('message', (m) => resolve(m as string[]));
    child.send('modules');
  });
  child.kill('SIGTERM');
  return { loaded, metrics };
}

test('without a control plane the proxy loads no gRPC, protobuf, X.509 or control-plane client code', async () => {
  const { loaded, metrics } = await readyProxy({});
  assert.ok(loaded.some((p) => p.endsWith(join('proxy', 'proxy.js'))), 'the probe saw the proxy load its own modules');
  assert.deepEqual(loaded.filter((p) => HEAVY.test(p)), []);
  assert.match(metrics, /^process_cpu_seconds_total /m);
});

test('with a control plane, identity, discovery, policy and tap load on first use and work', async () => {
  const tokenFile = join(cp.dir, 'token-lazy');
  writeFileSync(tokenFile, 'token-a');
  const addr = `127.0.0.1:${cp.cp.address.port}`;
  const { loaded, metrics } = await readyProxy({
    LINKERD2_PROXY_IDENTITY_SVC_ADDR: addr,
    LINKERD2_PROXY_IDENTITY_LOCAL_NAME: WEB,
    LINKERD2_PROXY_IDENTITY_TOKEN_FILE: tokenFile,
    LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS: cp.cp.trustAnchorsPem,
    LINKERD2_PROXY_IDENTITY_DIR: join(cp.dir, 'identity-lazy'),
    LINKERD2_PROXY_DESTINATION_SVC_ADDR: addr,
    LINKERD2_PROXY_POLICY_SVC_ADDR: addr,
    LINKERD2_PROXY_POLICY_WORKLOAD: 'default:web',
    LINKERD2_PROXY_TAP_SVC_NAME: 'tap.linkerd-viz.serviceaccount.identity.linkerd.cluster.local',
  });
  for (const file of [join('control', 'identity.js'), join('control', 'destination.js'), join('policy', 'authorizer.js'), join('tap', 'hub.js'), join('tap', 'server.js')]) {
    assert.ok(loaded.some((p) => p.endsWith(file)), `${file} loaded`);
  }
  // Ready means the lazily loaded identity client fetched a certificate from the control plane.
  assert.match(metrics, /^bpfmesh_identity_cert_expiry_timestamp_seconds [1-9]/m);
});
