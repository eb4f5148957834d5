// bpfmesh demo (npm start): two pods on a bridge, interception installed in
// both with `bpfmesh init`, a development control plane (`bpfmesh
// control-plane`: Destination + Identity from a mesh.yaml) beside each
// proxy, `bpfmesh proxy` in both (as the proxy uid, no capabilities) with
// certificates from it and mTLS between them, an HTTP server in one pod and
// curl in the other. Shows each request, what both proxies counted (with
// the TLS identities) and what the kernel counted, then removes everything,
// also on Ctrl-C and on error.
import { execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

/**
 * One development control plane per pod, on loopback beside its proxy (a
 * pod has no route to the host), sharing one issuer: the first generates it.
 * Returns the trust anchors' PEM for the proxies.
 */
async function startControlPlanes(lab: Lab, dir: string, pods: LabPod[], server: LabPod): Promise<string> {
  chmodSync(dir, 0o755);
  const yaml = [
    'listen: 127.0.0.1:8086',
    'services:',
    `  - name: "${server.ip4}:8080"`,
    '    endpoints:',
    `      - { addr: "${server.ip4}:8080", weight: 10000, identity: ${identityOf(server.name)} }`,
    '',
  ].join('\n');
  writeFileSync(join(dir, 'mesh.yaml'), yaml);
  writeFileSync(join(dir, 'token'), 'demo-token', { mode: 0o644 });
  const anchorsFile = join(dir, 'state', 'trust-anchors.pem');
  for (const pod of pods) {
    lab.spawn(pod, process.execPath, [cli, 'control-plane', '--config', join(dir, 'mesh.yaml'), '--state-dir', join(dir, 'state'), '--log-level', 'warn'], {});
    for (let i = 0; i < 100 && !existsSync(anchorsFile); i++) await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => setTimeout(r, 300));
  }
  say(`  bpfmesh control-plane --config mesh.yaml beside each proxy: Destination + Identity, trust anchor ${anchorsFile}`);
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
    say(`pods: ${client.netnsName} (${client.ip4}) and ${server.netnsName} (${server.ip4}), each a netns + cgroup, on a bridge of their own`);
    for (const pod of [client, server]) {
      bpfmesh(['init', '--netns', pod.netns, '--cgroup', pod.cgroup, '--log-level', 'warn']);
      say(`  bpfmesh init --netns ${pod.netns} --cgroup ${pod.cgroup}`);
    }
    const anchors = await startControlPlanes(lab, dir, [client, server], server);
    for (const pod of [client, server]) {
      const env = {
        ...process.env,
        LINKERD2_PROXY_LOG: 'warn',
        LINKERD2_PROXY_DESTINATION_SVC_ADDR: '127.0.0.1:8086',
        LINKERD2_PROXY_IDENTITY_SVC_ADDR: '127.0.0.1:8086',
        LINKERD2_PROXY_IDENTITY_LOCAL_NAME: identityOf(pod.name),
        LINKERD2_PROXY_IDENTITY_TOKEN_FILE: join(dir, 'token'),
        LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS: anchors,
      };
      const p = lab.spawn(pod, process.execPath, [cli, 'proxy'], PROXY, { env });
      await waitReady(lab, pod, p);
      say(`  bpfmesh proxy in ${pod.name}: uid 2102, no capabilities, identity ${identityOf(pod.name)} (certificate from the control plane)`);
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
