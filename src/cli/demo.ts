// bpfmesh demo (npm start): two pods on a bridge, interception installed in
// both with `bpfmesh init`, a development control plane (`bpfmesh
// control-plane`: Destination + Identity from a mesh.yaml) in a third pod of
// its own, reached as in a cluster (Identity over TLS, Destination over
// mTLS), `bpfmesh proxy` in both (as the proxy uid, no capabilities) with
// certificates from it and mTLS between them, an HTTP server in one pod and
// curl in the other. Shows each request, what both proxies counted (with
// the TLS identities) and what the kernel counted, then removes everything,
// also on Ctrl-C and on error.
import { execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { REPO_ROOT } from '../config/paths.js';
import { Lab, type LabPod } from '../lab/lab.js';
import { inspectPod } from '../admin/inspect.js';
import { pinRoot } from '../intercept/pod.js';

export const usage = `bpfmesh demo [--seconds N]   two pods, interception and proxies, a request every 200 ms; needs root
`;

const PROXY = { uid: 2102, gid: 2102 };
const APP = { uid: 1000, gid: 1000 };
const cli = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
const say = (s: string): void => void process.stdout.write(s + '\n');
const identityOf = (sa: string): string => `${sa}.default.serviceaccount.identity.linkerd.cluster.local`;
const APP_JS = `require('http').createServer((q,s)=>s.end('hello from '+q.socket.localAddress.replace(/^::ffff:/,'')+':'+q.socket.localPort+'\\n')).listen(8080,'::')`;

function bpfmesh(args: string[]): string {
  return execFileSync(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

/** Sum of a Prometheus counter's samples whose labels include `match`. */
function counter(text: string, name: string, match: string): number {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) && l.includes(match))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

async function waitReady(lab: Lab, pod: LabPod, proxy: ChildProcess): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = await lab.exec(pod, 'curl', ['-s', '--max-time', '1', 'http://127.0.0.1:4191/ready'], APP);
    if (r.stdout === 'ready\n') return;
    if (proxy.exitCode !== null) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`the proxy in ${pod.name} did not become ready`);
}

/** Linkerd's names for the control plane's services (trust domain cluster.local): what the proxies' TLS expects. */
const CP_NAMES = {
  identity: 'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local',
  destination: 'linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local',
};

/**
 * One development control plane in a pod of its own: Destination over mTLS
 * on :8086, Identity over TLS on :8080, as Linkerd's. Returns the trust
 * anchors' PEM for the proxies.
 */
async function startControlPlane(lab: Lab, dir: string, cp: LabPod, server: LabPod): Promise<string> {
  chmodSync(dir, 0o755);
  const yaml = [
    'services:',
    `  - name: "${server.ip4}:8080"`,
    '    endpoints:',
    `      - { addr: "${server.ip4}:8080", weight: 10000, identity: ${identityOf(server.name)} }`,
    '',
  ].join('\n');
  writeFileSync(join(dir, 'mesh.yaml'), yaml);
  writeFileSync(join(dir, 'token'), 'demo-token', { mode: 0o644 });
  const anchorsFile = join(dir, 'state', 'trust-anchors.pem');
  const args = ['control-plane', '--config', join(dir, 'mesh.yaml'), '--state-dir', join(dir, 'state'), '--listen', `${cp.ip4}:8086`, '--identity-listen', `${cp.ip4}:8080`, '--log-format', 'json'];
  const p = lab.spawn(cp, process.execPath, [cli, ...args], {});
  let logs = '';
  p.stderr?.on('data', (d: Buffer) => (logs += d.toString()));
  p.stdout?.resume();
  for (let i = 0; i < 200 && !logs.includes('"control plane listening"'); i++) {
    if (p.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!logs.includes('"control plane listening"')) throw new Error(`the control plane did not start: ${logs.slice(-2000)}`);
  say(`  bpfmesh control-plane in ${cp.name} (${cp.ip4}): Destination over mTLS on :8086, Identity over TLS on :8080, trust anchor ${anchorsFile}`);
  return readFileSync(anchorsFile, 'utf8');
}

export async function run(argv: string[]): Promise<number> {
  const i = argv.indexOf('--seconds');
  const seconds = i >= 0 ? Number(argv[i + 1]) || 5 : 5;
  if (process.getuid?.() !== 0) {
    throw new BpfmeshError(ErrorCodes.NOT_ROOT, 'the demo creates network namespaces, cgroups and BPF programs: run it as root (sudo npm start)');
  }
  const lab = new Lab(undefined, 78);
  const dir = mkdtempSync(join(tmpdir(), 'bpfmesh-demo-'));
  const cleanup = (): void => {
    rmSync(dir, { recursive: true, force: true });
    for (const pod of lab.pods) {
      try {
        bpfmesh(['reset', '--netns', pod.netns, '--log-level', 'error']);
      } catch {
        /* not installed */
      }
    }
    lab.cleanup();
  };
  try {
    const client = lab.addPod('client');
    const server = lab.addPod('server');
    const cp = lab.addPod('linkerd');
    say(`pods: ${client.netnsName} (${client.ip4}), ${server.netnsName} (${server.ip4}) and the control plane's ${cp.netnsName} (${cp.ip4}), each a netns + cgroup, on a bridge of their own`);
    for (const pod of [client, server]) {
      bpfmesh(['init', '--netns', pod.netns, '--cgroup', pod.cgroup, '--log-level', 'warn']);
      say(`  bpfmesh init --netns ${pod.netns} --cgroup ${pod.cgroup}`);
    }
    const anchors = await startControlPlane(lab, dir, cp, server);
    for (const pod of [client, server]) {
      const env = {
        ...process.env,
        LINKERD2_PROXY_LOG: 'warn',
        // deploy/base/sidecar.yaml's variables, pointed at the control plane's pod.
        LINKERD2_PROXY_DESTINATION_SVC_ADDR: `${cp.ip4}:8086`,
        LINKERD2_PROXY_DESTINATION_SVC_NAME: CP_NAMES.destination,
        LINKERD2_PROXY_IDENTITY_SVC_ADDR: `${cp.ip4}:8080`,
        LINKERD2_PROXY_IDENTITY_SVC_NAME: CP_NAMES.identity,
        LINKERD2_PROXY_IDENTITY_LOCAL_NAME: identityOf(pod.name),
        LINKERD2_PROXY_IDENTITY_TOKEN_FILE: join(dir, 'token'),
        LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS: anchors,
      };
      const p = lab.spawn(pod, process.execPath, [cli, 'proxy'], PROXY, { env });
      await waitReady(lab, pod, p);
      say(`  bpfmesh proxy in ${pod.name}: uid 2102, no capabilities, identity ${identityOf(pod.name)} (certificate from the control plane over TLS, discovery over mTLS)`);
    }
    lab.spawn(server, process.execPath, ['-e', APP_JS], APP);
    await new Promise((r) => setTimeout(r, 300));
    say(`\ncurl in ${client.name} -> http://${server.ip4}:8080/ (the apps know nothing of the mesh):`);
    const deadline = Date.now() + seconds * 1000;
    let n = 0;
    while (Date.now() < deadline && n < 100) {
      const r = await lab.exec(client, 'curl', ['-sS', '--max-time', '2', '-w', ' (%{time_total}s)', `http://${server.ip4}:8080/`], APP);
      n++;
      say(`  #${n} ${r.code === 0 ? r.stdout.replace('\n', '') : `failed: ${r.stderr.trim()}`}`);
      await new Promise((r2) => setTimeout(r2, 200));
    }
    say('\nwhat the proxies counted (their /metrics, Linkerd names):');
    for (const [pod, dir] of [[client, 'outbound'], [server, 'inbound']] as const) {
      const m = (await lab.exec(pod, 'curl', ['-s', 'http://127.0.0.1:4191/metrics'], APP)).stdout;
      say(`  ${pod.name} proxy: request_total{direction="${dir}"} ${counter(m, 'request_total', `direction="${dir}"`)}, ` +
        `over mTLS ${counter(m, 'request_total', 'tls="true"')}, ` +
        `response_total{classification="success"} ${counter(m, 'response_total', 'classification="success"')}`);
    }
    say('\nwhat the kernel counted (BPF per-CPU counters):');
    for (const pod of [client, server]) {
      const c = inspectPod(join(pinRoot('/sys/fs/bpf'), pod.netnsName), pod.netnsName).counters;
      const nonzero = Object.entries(c).filter(([, v]) => v !== '0').map(([k, v]) => `${k}=${v}`);
      say(`  ${pod.name}: ${nonzero.join(' ')}`);
    }
    say('\nLook further (while pods exist): sudo ./bin/bpfmesh.js inspect; bpftool cgroup tree; bpftool link show;');
    say('  curl http://127.0.0.1:4191/metrics inside a pod: nsenter --net=/run/netns/<pod> curl -s 127.0.0.1:4191/metrics');
    return 0;
  } finally {
    cleanup();
    say('cleaned up: pods, cgroups, programs and pins removed');
  }
}
