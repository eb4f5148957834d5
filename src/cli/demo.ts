// bpfmesh demo (npm start): two pods on a bridge, interception installed in
// both with `bpfmesh init`, a minimal transparent relay as each pod's proxy,
// an HTTP server in one and curl in the other. Shows what each hop saw and
// what `bpfmesh inspect` reports, then removes everything.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { once } from 'node:events';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { REPO_ROOT } from '../config/paths.js';
import { Lab, type LabPod } from '../lab/lab.js';

export const usage = `bpfmesh demo [--seconds N]   two pods, interception, a request every 200 ms; needs root
`;

const PROXY_UID = 2102;
const APP_UID = 1000;
const cli = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
const relay = join(REPO_ROOT, 'dist', 'src', 'lab', 'relay.js');
const say = (s: string): void => void process.stdout.write(s + '\n');

function bpfmesh(args: string[]): string {
  return execFileSync(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

async function startProxy(lab: Lab, pod: LabPod, lines: string[]): Promise<void> {
  const p = lab.spawn(pod, process.execPath, [relay, '--mode', 'relay', '--inbound-port', '4143'], { uid: PROXY_UID, gid: PROXY_UID });
  p.stdout!.setEncoding('utf8');
  let buf = '';
  p.stdout!.on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const rec = JSON.parse(buf.slice(0, i)) as { event: string; direction?: string; peer?: string; orig?: string };
      buf = buf.slice(i + 1);
      if (rec.event === 'accept') lines.push(`${pod.name} proxy ${rec.direction}: ${rec.peer} -> original destination ${rec.orig}`);
    }
  });
  const [line] = (await once(p.stdout!, 'data')) as [string];
  if (!line.includes('listening')) throw new Error(`proxy in ${pod.name} did not start: ${line}`);
}

export async function run(argv: string[]): Promise<number> {
  const seconds = Number(argv[argv.indexOf('--seconds') + 1] ?? 3) || 3;
  if (process.getuid?.() !== 0) {
    throw new BpfmeshError(ErrorCodes.NOT_ROOT, 'the demo creates network namespaces, cgroups and BPF programs: run it as root (sudo npm start)');
  }
  const lab = new Lab(undefined, 78);
  const cleanup = (): void => {
    for (const pod of lab.pods) {
      try {
        bpfmesh(['reset', '--netns', pod.netns]);
      } catch {
        /* not installed */
      }
    }
    lab.cleanup();
  };
  const onSignal = (): void => {
    cleanup();
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const client = lab.addPod('client');
    const server = lab.addPod('server');
    say(`pods: ${client.netnsName} (${client.ip4}) and ${server.netnsName} (${server.ip4}) on a bridge in their own namespaces`);
    for (const pod of [client, server]) {
      bpfmesh(['init', '--netns', pod.netns, '--cgroup', pod.cgroup, '--proxy-uid', String(PROXY_UID), '--log-level', 'warn']);
      say(`bpfmesh init --netns ${pod.netns} --cgroup ${pod.cgroup}: done`);
    }
    const seen: string[] = [];
    await startProxy(lab, client, seen);
    await startProxy(lab, server, seen);
    const app = lab.spawn(server, process.execPath, ['-e', `require('http').createServer((q,s)=>s.end('hello from '+q.socket.localAddress+':'+q.socket.localPort+'\\n')).listen(8080)`], { uid: APP_UID, gid: APP_UID });
    await new Promise((r) => setTimeout(r, 300));
    const deadline = Date.now() + seconds * 1000;
    let n = 0;
    while (Date.now() < deadline && n < 50) {
      const r = await lab.exec(client, 'curl', ['-sS', '--max-time', '2', `http://${server.ip4}:8080/`], { uid: APP_UID, gid: APP_UID });
      n++;
      say(`curl #${n} from ${client.name} to ${server.ip4}:8080 -> ${r.code === 0 ? r.stdout.trim() : `failed: ${r.stderr.trim()}`}`);
      for (const line of seen.splice(0)) say(`  ${line}`);
      await new Promise((r2) => setTimeout(r2, 200));
    }
    app.kill();
    say('\n$ bpfmesh inspect');
    say(bpfmesh(['inspect']));
    say('Look further while it runs: bpftool cgroup tree; bpftool link show; bpftool map dump pinned /sys/fs/bpf/bpfmesh/<pod>/mesh_counters');
    return 0;
  } finally {
    cleanup();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    say('cleaned up: pods, cgroups, programs and pins removed');
  }
}
