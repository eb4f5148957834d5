// A real container runtime runs the CNI chain: podman (Debian's 4.3, with
// runc and its CNI network backend) creates a container on a conflist of
// bridge + host-local + bpfmesh-cni (linkerd-cni's entry), the container's
// traffic is steered to its proxy both ways, and removing the container
// (podman rm, CNI DEL) withdraws it. Nothing is pulled: the container's root
// is a busybox folder made here (--rootfs). podman runs under
// `nsenter --net=` a namespace this test makes, so the bridge lives there;
// its storage, run folder, IPAM state, bpffs and conflist are the test's own
// (CONTAINERS_CONF). Its cgroups go under a test cgroup (--cgroup-parent),
// which is bpfmesh's cgroup_root. This machine's hybrid cgroup layout and
// missing rlimit capability need runc (crun refuses the layout), `--ulimit
// host` and `default_ulimits = []`.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSkipReason } from '../helpers/root.js';
import { PodProcess, PROXY, RELAY, RESPONDER } from '../helpers/mesh.js';
import { REPO_ROOT } from '../../src/config/paths.js';
import { cgroup2Mount, ensureBpffs } from '../../src/intercept/mounts.js';
import { nodePinDir, uninstallNode, type NodeScope } from '../../src/intercept/node-wide.js';
import { cleanupOnExit, uniquePrefix } from '../../src/lab/lab.js';
import { createLogger } from '../../src/log/logger.js';

const CNI_PLUGINS = '/usr/lib/cni';

function which(tool: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

function skipReason(): string | false {
  const k = kernelSkipReason();
  if (k !== false) return k;
  const missing = ['podman', 'runc', 'nsenter', 'busybox'].filter((t) => which(t) === undefined);
  if (!existsSync(join(CNI_PLUGINS, 'bridge')) || !existsSync(join(CNI_PLUGINS, 'host-local'))) missing.push('containernetworking-plugins');
  if (missing.length === 0) return false;
  const reason = `${missing.join(', ')} missing: scripts/install-deps.sh installs them`;
  if (process.env['CI'] === 'true') throw new Error(`kernel tests cannot run under CI=true: ${reason}`);
  return reason;
}

const skip = skipReason();
const log = createLogger({ logFormat: 'plain', logLevel: 'error' });
const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
const quiet = (fn: () => unknown): void => {
  try {
    fn();
  } catch {
    /* best effort during cleanup */
  }
};

/** Removes a cgroup folder and what runc left below it, deepest first. */
function removeTree(dir: string): void {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeTree(join(dir, e.name));
  quiet(() => writeFileSync(join(dir, 'cgroup.kill'), '1'));
  for (let i = 0; i < 40 && existsSync(dir); i++) {
    try {
      rmdirSync(dir);
    } catch {
      execFileSync('sleep', ['0.05']);
    }
  }
}

describe('podman runs bridge + host-local + bpfmesh-cni for a container', { skip, timeout: 240_000 }, () => {
  const prefix = uniquePrefix('pm');
  const hostNs = `${prefix}-host`;
  const net = `${prefix}-net`;
  const name = `${prefix}-c`;
  const gateway = '10.94.0.1';
  const cg2 = skip === false ? cgroup2Mount() : '/nonexistent';
  const cgroupRoot = join(cg2, prefix);
  const children = new Set<ChildProcess>();
  let tmp: string;
  let bpffs: string;
  let scope: NodeScope;
  let env: NodeJS.ProcessEnv;
  let containerId = '';
  let containerIp = '';
  let containerNetns = '';
  let unregister: () => void = () => {};

  /** podman inside the test's host netns, with the test's containers.conf and storage. */
  function podman(args: string[], timeoutMs = 90_000): string {
    const base = ['--root', join(tmp, 'storage'), '--runroot', join(tmp, 'run'), '--tmpdir', join(tmp, 'podman-tmp'), '--cgroup-manager', 'cgroupfs', '--runtime', 'runc'];
    try {
      return execFileSync('nsenter', [`--net=/run/netns/${hostNs}`, 'podman', ...base, ...args], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    } catch (err) {
      const e = err as Error & { stderr?: string; stdout?: string };
      throw new Error(`podman ${args.join(' ')} failed: ${e.stderr ?? ''} ${e.stdout ?? ''} ${e.message}`);
    }
  }

  function spawnIn(ns: string, cgroup: string | null, cmd: string, args: string[], as: { uid?: number; gid?: number } = {}): ChildProcess {
    const ids = [...(as.gid !== undefined ? [`--setgid=${as.gid}`] : []), ...(as.uid !== undefined ? [`--setuid=${as.uid}`] : [])];
    const join_ = cgroup === null ? '' : 'echo $$ > "$0/cgroup.procs" && ';
    const child = spawn('sh', ['-c', `${join_}ns="$1" && shift && exec nsenter --net="$ns" "$@"`, cgroup ?? '-', ns, ...ids, '--', cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(child);
    child.once('exit', () => children.delete(child));
    return child;
  }

  function cleanup(): void {
    for (const c of children) c.kill('SIGKILL');
    if (tmp !== undefined) quiet(() => podman(['rm', '--force', '--time', '0', name], 30_000));
    if (scope !== undefined) quiet(() => uninstallNode(scope, log));
    quiet(() => sh('ip', ['netns', 'delete', hostNs])); // takes the bridge with it
    // runc made the container's cgroups under --cgroup-parent in every hierarchy (v1 ones too, on a hybrid host).
    const hierarchies = skip === false ? readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')).filter((f) => f[2] === 'cgroup' || f[2] === 'cgroup2').map((f) => f[1]!) : [];
    for (const h of hierarchies) removeTree(join(h, prefix));
    if (bpffs !== undefined) quiet(() => sh('umount', [bpffs]));
    if (tmp !== undefined) {
      for (const m of readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '').filter((p) => p.startsWith(tmp + '/')).reverse()) quiet(() => sh('umount', ['-l', m]));
      quiet(() => rmSync(tmp, { recursive: true, force: true }));
    }
    unregister();
  }

  /**
   * An HTTP GET from inside the container (podman exec: the container's
   * cgroup and netns) with busybox nc (its static wget crashes in a root
   * without NSS); the response body.
   */
  function fromContainer(ip: string, port: number, user = '0:0'): string {
    const res = podman(['exec', '--user', user, name, 'sh', '-c', 'printf "GET / HTTP/1.0\\r\\nHost: $0\\r\\n\\r\\n" | nc -w 3 "$0" "$1"', ip, String(port)], 30_000);
    const at = res.indexOf('\r\n\r\n');
    assert.ok(at >= 0, `an HTTP response from ${ip}:${port}, got ${JSON.stringify(res)}`);
    return res.slice(at + 4).trim();
  }

  before(async () => {
    unregister = cleanupOnExit({ cleanup });
    tmp = mkdtempSync(join(tmpdir(), 'bpfmesh-podman-'));
    bpffs = join(tmp, 'bpffs');
    mkdirSync(bpffs);
    ensureBpffs(bpffs, false);
    scope = { bpffs, bpffsExplicit: true, cgroupRoot };
    mkdirSync(join(cgroupRoot, 'proxy'), { recursive: true });
    sh('ip', ['netns', 'add', hostNs]);
    sh('ip', ['-n', hostNs, 'link', 'set', 'lo', 'up']);

    // The container's root: busybox and its applets, nothing pulled.
    const rootfs = join(tmp, 'rootfs');
    for (const d of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp']) mkdirSync(join(rootfs, d), { recursive: true });
    execFileSync('cp', [which('busybox')!, join(rootfs, 'bin', 'busybox')]);
    for (const applet of ['sh', 'nc', 'printf', 'sleep', 'cat', 'ip']) symlinkSync('busybox', join(rootfs, 'bin', applet));
    writeFileSync(join(rootfs, 'etc', 'passwd'), 'root:x:0:0:root:/:/bin/sh\n');
    writeFileSync(join(rootfs, 'etc', 'group'), 'root:x:0:\n');

    // CNI: Debian's plugins, and bpfmesh-cni as a link to the repo's shim; the conflist is linkerd-cni's entry after bridge.
    mkdirSync(join(tmp, 'bin'));
    symlinkSync(join(REPO_ROOT, 'bin', 'bpfmesh-cni'), join(tmp, 'bin', 'bpfmesh-cni'));
    mkdirSync(join(tmp, 'net.d'));
    const conflist = {
      cniVersion: '1.0.0',
      name: net,
      plugins: [
        { type: 'bridge', bridge: `${prefix}br`, isGateway: true, ipMasq: false, ipam: { type: 'host-local', ranges: [[{ subnet: '10.94.0.0/24', gateway }]], dataDir: join(tmp, 'ipam') } },
        {
          type: 'bpfmesh-cni',
          log_level: 'info',
          linkerd: { 'incoming-proxy-port': 4143, 'outgoing-proxy-port': 4140, 'proxy-uid': PROXY.uid, 'ports-to-redirect': [], 'inbound-ports-to-ignore': ['4191', '4190'], 'outbound-ports-to-ignore': ['9300'], 'subnets-to-ignore': [], simulate: false },
          bpfmesh: { cgroup_root: cgroupRoot, bpffs, log_file: join(tmp, 'bpfmesh-cni.log') },
        },
      ],
    };
    writeFileSync(join(tmp, 'net.d', `${net}.conflist`), JSON.stringify(conflist, null, 2));
    writeFileSync(
      join(tmp, 'containers.conf'),
      [
        '[containers]',
        'default_ulimits = []',
        '[network]',
        'network_backend = "cni"',
        `network_config_dir = ${JSON.stringify(join(tmp, 'net.d'))}`,
        `cni_plugin_dirs = [${JSON.stringify(CNI_PLUGINS)}, ${JSON.stringify(join(tmp, 'bin'))}]`,
        '[engine]',
        'runtime = "runc"',
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        `events_logfile_path = ${JSON.stringify(join(tmp, 'events.log'))}`,
        '',
      ].join('\n'),
    );
    // podman hands its environment to the plugins: the shim's Node is this one.
    env = { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: tmp, CONTAINERS_CONF: join(tmp, 'containers.conf'), BPFMESH_NODE: process.execPath };

    // What answers when traffic is not steered: "direct <ip>:<port>" from the test's host netns.
    const responder = new PodProcess(spawnIn(`/run/netns/${hostNs}`, null, process.execPath, [RESPONDER, '8080', '9300']));
    await responder.waitFor((e) => e.event === 'ready');
  });
  after(cleanup);

  test('podman run: the runtime calls the chain; bridge gives the address, bpfmesh-cni enrolls the container by its id', () => {
    containerId = podman(['run', '--detach', '--name', name, '--ulimit', 'host', '--network', net, '--cgroup-parent', `/${prefix}`, '--rootfs', join(tmp, 'rootfs'), 'sleep', '300']).trim();
    assert.match(containerId, /^[0-9a-f]{64}$/);
    const pid = Number(podman(['inspect', '--format', '{{.State.Pid}}', name]).trim());
    assert.ok(pid > 0);
    containerNetns = `/proc/${pid}/ns/net`;
    containerIp = podman(['inspect', '--format', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, name]).trim();
    assert.match(containerIp, /^10\.94\.0\.\d+$/, 'bridge + host-local gave the address');
    assert.match(readFileSync(`/proc/${pid}/cgroup`, 'utf8'), new RegExp(`^0::/${prefix}/`, 'm'), 'the container is under cgroup_root');
    const pins = join(nodePinDir(bpffs), 'pods', containerId);
    assert.ok(existsSync(pins), `the container is enrolled under its id (${pins})`);
    assert.ok(readdirSync(pins).some((n) => n.startsWith('link_')), 'its sk_lookup link is pinned');
  });

  test("the container's traffic is steered to its proxy both ways; ignored ports and the proxy uid are not", async () => {
    assert.ok(containerNetns !== '', 'the container runs');
    // The proxy: the report relay as uid 2102 in the container's netns (and under cgroup_root, where getsockopt is answered).
    const relay = new PodProcess(spawnIn(containerNetns, join(cgroupRoot, 'proxy'), process.execPath, [RELAY, '--mode', 'report', '--inbound-port', '4143'], PROXY));
    try {
      await relay.waitFor((e) => e.event === 'listening');
      assert.equal(fromContainer(gateway, 8080), `outbound orig=${gateway}:8080`);
      assert.equal(fromContainer(gateway, 9300), `direct ${gateway}:9300`, 'outbound-ports-to-ignore');
      assert.equal(fromContainer(gateway, 8080, `${PROXY.uid}:${PROXY.gid}`), `direct ${gateway}:8080`, 'the proxy uid is exempt');
      const inbound = execFileSync('nsenter', [`--net=/run/netns/${hostNs}`, 'curl', '-sS', '--max-time', '3', `http://${containerIp}:8080/`], { encoding: 'utf8' });
      assert.equal(inbound.trim(), `inbound local=${containerIp}:8080`);
    } finally {
      relay.stop();
    }
  });

  test('podman rm: the runtime calls DEL, the enrollment is withdrawn', () => {
    assert.ok(containerId !== '', 'the container ran');
    podman(['rm', '--force', '--time', '0', name]);
    assert.equal(existsSync(join(nodePinDir(bpffs), 'pods', containerId)), false, 'its pins are gone');
    assert.ok(readdirSync(nodePinDir(bpffs)).some((n) => n.startsWith('link_')), 'the node-wide programs stay (bpfmesh reset --node removes them)');
    const logText = readFileSync(join(tmp, 'bpfmesh-cni.log'), 'utf8');
    assert.match(logText, /pod enrolled/, 'the plugin logged the ADD');
    assert.match(logText, /pod withdrawn/, 'and the DEL');
  });
});
