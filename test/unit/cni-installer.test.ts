// bpfmesh cni-install on temp directories standing in for the host's
// /etc/cni/net.d, /opt/cni/bin and /opt/bpfmesh: real files, no root.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { parseCniInstallFlags, apiServerFromEnv } from '../../src/config/cni-install-flags.js';
import { REPO_ROOT } from '../../src/config/paths.js';
import { hostPath, install, KUBECONFIG_NAME, readPluginConfig, uninstall, watchAndInstall, type InstallerOptions, type InstallResult } from '../../src/cni/installer.js';

type Json = Record<string, unknown>;

let root: string;
let n = 0;

before(() => {
  root = mkdtempSync(join(tmpdir(), 'bpfmesh-cni-install-'));
});
after(() => {
  rmSync(root, { recursive: true, force: true });
});

function write(path: string, text: string, mode = 0o644): void {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
  chmodSync(path, mode);
}

/** A built install in miniature; its main.js prints what it was run with. */
function makeSource(dir: string): void {
  write(join(dir, 'package.json'), '{"name":"bpfmesh"}\n');
  write(join(dir, 'bin/bpfmesh.js'), '// entry\n', 0o755);
  // The real launcher: the shim the installer writes must agree with it.
  write(join(dir, 'bin/bpfmesh-cni'), readFileSync(join(REPO_ROOT, 'bin/bpfmesh-cni'), 'utf8'), 0o755);
  write(
    join(dir, 'dist/src/cli/main.js'),
    `let input = '';
process.stdin.on('data', (d) => (input += d)).on('end', () => {
  process.stdout.write(JSON.stringify({ argv: process.argv.slice(2), ld: process.env.LD_LIBRARY_PATH, cni: process.env.CNI_COMMAND, input }));
});
`,
  );
  write(join(dir, 'node_modules/yaml/index.js'), 'module.exports = 1;\n');
  mkdirSync(join(dir, 'node_modules/.bin'), { recursive: true });
  symlinkSync('../yaml/index.js', join(dir, 'node_modules/.bin/yaml'));
  write(join(dir, 'proto/net.proto'), 'syntax = "proto3";\n');
  write(join(dir, 'build/Release/bpfmesh.node'), 'ELF addon');
  write(join(dir, 'build/Release/obj.target/bpfmesh/native/addon.o'), 'object file');
  write(join(dir, 'build/bpf/intercept.bpf.o'), 'ELF bpf');
  write(join(dir, 'build/bpf/vmlinux.h'), '/* big header */');
  write(join(dir, 'lib/libbpf.so.1'), 'ELF lib');
}

interface Host {
  src: string;
  node: string;
  bundle: string;
  bin: string;
  conf: string;
  opts: InstallerOptions;
}

const ENTRY: Json = { name: 'linkerd-cni', type: 'bpfmesh-cni', log_level: 'info', linkerd: { 'incoming-proxy-port': 4143, 'proxy-uid': 2102 } };

function makeHost(extra: Partial<InstallerOptions> = {}): Host {
  const dir = join(root, `host-${++n}`);
  const src = join(dir, 'app');
  makeSource(src);
  // A small stand-in for the Node binary: the shim can run it for real.
  const node = join(dir, 'node-binary');
  write(node, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} "$@"\n`, 0o755);
  const h = { src, node, bundle: join(dir, 'opt/bpfmesh'), bin: join(dir, 'opt/cni/bin'), conf: join(dir, 'etc/cni/net.d') };
  mkdirSync(h.conf, { recursive: true });
  mkdirSync(h.bin, { recursive: true });
  return {
    ...h,
    opts: { sourceDir: src, nodeBinary: node, bundleDir: h.bundle, cniBinDir: h.bin, cniConfDir: h.conf, hostRoot: '', pluginConfig: ENTRY, ...extra },
  };
}

const BRIDGE: Json = {
  cniVersion: '1.0.0',
  name: 'k8s-pod-network',
  plugins: [
    { type: 'bridge', bridge: 'cni0', ipam: { type: 'host-local', subnet: '10.244.1.0/24' } },
    { type: 'portmap', capabilities: { portMappings: true } },
  ],
};

const readJson = (p: string): Json => JSON.parse(readFileSync(p, 'utf8')) as Json;
const pluginTypes = (p: string): unknown[] => (readJson(p)['plugins'] as Json[]).map((x) => x['type']);

describe('cni-install', () => {
  test('adds the entry at the end of the lexically first config, writes the shim and the bundle', () => {
    const h = makeHost();
    write(join(h.conf, '10-bridge.conflist'), JSON.stringify(BRIDGE), 0o600);
    write(join(h.conf, '20-other.conflist'), JSON.stringify({ ...BRIDGE, name: 'other' }));
    const r = install(h.opts);

    assert.equal(r.confFile, join(h.conf, '10-bridge.conflist'));
    assert.equal(r.confChanged, true);
    assert.deepEqual(pluginTypes(r.confFile), ['bridge', 'portmap', 'bpfmesh-cni']);
    const conf = readJson(r.confFile);
    assert.equal(conf['cniVersion'], '1.0.0');
    assert.deepEqual((conf['plugins'] as Json[])[2], ENTRY);
    assert.equal(statSync(r.confFile).mode & 0o777, 0o600, 'the file keeps its mode');
    assert.deepEqual(pluginTypes(join(h.conf, '20-other.conflist')), ['bridge', 'portmap'], 'other configs are left alone');

    const shim = join(h.bin, 'bpfmesh-cni');
    assert.equal(statSync(shim).mode & 0o777, 0o755);
    assert.match(readFileSync(shim, 'utf8'), new RegExp(`BPFMESH_HOME=\\$\\{BPFMESH_HOME:-'${h.bundle}'\\}`));

    for (const f of ['package.json', 'bin/bpfmesh.js', 'bin/node', 'dist/src/cli/main.js', 'node_modules/yaml/index.js', 'proto/net.proto', 'build/Release/bpfmesh.node', 'build/bpf/intercept.bpf.o', 'lib/libbpf.so.1']) {
      assert.ok(existsSync(join(h.bundle, f)), `bundle has ${f}`);
    }
    assert.equal(readlinkSync(join(h.bundle, 'node_modules/.bin/yaml')), '../yaml/index.js', 'symlinks stay symlinks');
    assert.equal(existsSync(join(h.bundle, 'build/Release/obj.target')), false, 'build intermediates are not copied');
    assert.equal(existsSync(join(h.bundle, 'build/bpf/vmlinux.h')), false);
    assert.equal(statSync(join(h.bundle, 'bin/node')).mode & 0o777, 0o755);
    assert.ok(r.bundle.copied >= 9);
    assert.deepEqual(readdirNoTemp(h.conf), ['10-bridge.conflist', '20-other.conflist'], 'no temp file is left in the config dir');
  });

  test('running it twice changes nothing', () => {
    const h = makeHost();
    write(join(h.conf, '10-bridge.conflist'), JSON.stringify(BRIDGE));
    install(h.opts);
    const files = [join(h.conf, '10-bridge.conflist'), join(h.bin, 'bpfmesh-cni'), join(h.bundle, 'bin/node'), join(h.bundle, 'dist/src/cli/main.js')];
    const before = files.map((f) => statSync(f, { bigint: true }));
    const r = install(h.opts);
    assert.deepEqual({ conf: r.confChanged, shim: r.shimChanged, copied: r.bundle.copied, removed: r.bundle.removed }, { conf: false, shim: false, copied: 0, removed: 0 });
    assert.ok(r.bundle.unchanged >= 9);
    files.forEach((f, i) => {
      const st = statSync(f, { bigint: true });
      assert.equal(st.ino, before[i]!.ino, `${f} not replaced`);
      assert.equal(st.mtimeNs, before[i]!.mtimeNs, `${f} not rewritten`);
    });
    assert.deepEqual(pluginTypes(join(h.conf, '10-bridge.conflist')), ['bridge', 'portmap', 'bpfmesh-cni']);
  });

  test('a changed entry replaces the old one, which stays single and last; a rewritten conflist gets it back', () => {
    const h = makeHost();
    const file = join(h.conf, '10-bridge.conflist');
    // An older entry in the middle, as if the primary CNI had appended after it.
    write(file, JSON.stringify({ ...BRIDGE, plugins: [(BRIDGE['plugins'] as Json[])[0], { type: 'bpfmesh-cni', log_level: 'debug' }, (BRIDGE['plugins'] as Json[])[1]] }));
    install(h.opts);
    assert.deepEqual(pluginTypes(file), ['bridge', 'portmap', 'bpfmesh-cni']);
    assert.equal((readJson(file)['plugins'] as Json[])[2]!['log_level'], 'info');

    write(file, JSON.stringify(BRIDGE)); // the primary CNI writes its config again
    const r = install(h.opts);
    assert.equal(r.confChanged, true);
    assert.equal(r.shimChanged, false);
    assert.deepEqual(pluginTypes(file), ['bridge', 'portmap', 'bpfmesh-cni']);
  });

  test('a lone .conf becomes a .conflist, as linkerd-cni does it', () => {
    const h = makeHost();
    const lone = { cniVersion: '0.4.0', name: 'calico', type: 'calico', ipam: { type: 'calico-ipam' } };
    write(join(h.conf, '10-calico.conf'), JSON.stringify(lone));
    write(join(h.conf, '99-loopback.conf'), JSON.stringify({ cniVersion: '0.4.0', name: 'lo', type: 'loopback' }));
    const r = install(h.opts);
    assert.equal(r.converted, join(h.conf, '10-calico.conf'));
    assert.equal(r.confFile, join(h.conf, '10-calico.conflist'));
    assert.equal(existsSync(join(h.conf, '10-calico.conf')), false, 'the .conf would shadow the .conflist, so it goes');
    assert.deepEqual(readJson(r.confFile), { cniVersion: '0.4.0', name: 'calico', plugins: [lone, ENTRY] });
    assert.ok(existsSync(join(h.conf, '99-loopback.conf')));
    assert.equal(install(h.opts).confChanged, false, 'and then it is a conflist like any other');
  });

  test('bad input: clear errors with BPFMESH_E_CNI_INSTALL', () => {
    const h = makeHost();
    assert.throws(() => install(h.opts), { code: 'BPFMESH_E_CNI_INSTALL', message: /no CNI config .* run with --watch/ });
    write(join(h.conf, '05-broken.conflist'), '{"plugins": [');
    assert.throws(() => install(h.opts), { code: 'BPFMESH_E_CNI_INSTALL', message: /05-broken\.conflist is not JSON/ });
    write(join(h.conf, '05-broken.conflist'), '{"name": "x"}');
    assert.throws(() => install(h.opts), { code: 'BPFMESH_E_CNI_INSTALL', message: /no "plugins" array/ });
    assert.throws(() => install({ ...h.opts, cniConfDir: join(h.conf, 'missing') }), { code: 'BPFMESH_E_CNI_INSTALL', message: /cannot read the CNI config dir/ });
    rmSync(join(h.src, 'dist'), { recursive: true });
    assert.throws(() => install(h.opts), { code: 'BPFMESH_E_CNI_INSTALL', message: /dist is missing: .* not a built bpfmesh/ });

    const cfg = join(root, `cfg-${++n}.json`);
    write(cfg, '{"type": "linkerd-cni"}');
    assert.throws(() => readPluginConfig(cfg), { code: 'BPFMESH_E_CNI_INSTALL', message: /"type" is "linkerd-cni"; it must be "bpfmesh-cni"/ });
    write(cfg, '[1]');
    assert.throws(() => readPluginConfig(cfg), { code: 'BPFMESH_E_CNI_INSTALL', message: /JSON object/ });
    write(cfg, '{"linkerd": 3}');
    assert.throws(() => readPluginConfig(cfg), { code: 'BPFMESH_E_CNI_INSTALL', message: /"linkerd" must be an object/ });
    write(cfg, '{"name": "linkerd-cni", "log_level": "debug"}');
    assert.deepEqual(readPluginConfig(cfg), { name: 'linkerd-cni', log_level: 'debug', type: 'bpfmesh-cni' });
  });

  test('the shim hands over to the bundle\'s bin/bpfmesh-cni: its Node on dist/src/cli/main.js cni, CNI env and stdin passed through', () => {
    const h = makeHost();
    write(join(h.conf, '10-bridge.conflist'), JSON.stringify(BRIDGE));
    install(h.opts);
    const out = execFileSync(join(h.bin, 'bpfmesh-cni'), [], { input: '{"cniVersion":"1.0.0"}', env: { PATH: '/usr/bin:/bin', CNI_COMMAND: 'VERSION' } });
    const seen = JSON.parse(out.toString()) as { argv: string[]; ld: string; cni: string; input: string };
    assert.deepEqual(seen.argv, ['cni']);
    assert.equal(seen.cni, 'VERSION');
    assert.equal(seen.input, '{"cniVersion":"1.0.0"}');
    assert.equal(seen.ld, join(h.bundle, 'lib'), 'libbpf comes from the bundle');
    // Without the bundle's Node the launcher fails as a CNI error, not silently.
    rmSync(join(h.bundle, 'dist'), { recursive: true });
    const broken = spawnSync(join(h.bin, 'bpfmesh-cni'), [], { input: '', env: { PATH: '/usr/bin:/bin' }, encoding: 'utf8' });
    assert.notEqual(broken.status, 0);
    assert.match(broken.stdout, /"code":110/);
  });

  test('paths under --host-root are written as the host sees them; a kubeconfig from the service account', () => {
    const dir = join(root, `host-${++n}`);
    const sa = { server: 'https://10.96.0.1:443', token: 'tok-123', ca: Buffer.from('CA PEM') };
    const entry = { ...ENTRY, kubernetes: { kubeconfig: '__KUBECONFIG_FILEPATH__' } };
    const h = makeHost({ pluginConfig: entry, serviceAccount: () => sa });
    const opts = { ...h.opts, hostRoot: dir, bundleDir: join(dir, 'opt/bpfmesh'), cniBinDir: join(dir, 'opt/cni/bin'), cniConfDir: join(dir, 'etc/cni/net.d') };
    write(join(opts.cniConfDir, '10-bridge.conflist'), JSON.stringify(BRIDGE));
    const r = install(opts);
    assert.equal(r.kubeconfigChanged, true);
    assert.match(readFileSync(join(opts.cniBinDir, 'bpfmesh-cni'), 'utf8'), /BPFMESH_HOME=\$\{BPFMESH_HOME:-'\/opt\/bpfmesh'\}/);
    const ours = (readJson(r.confFile)['plugins'] as Json[])[2]!;
    assert.deepEqual(ours['kubernetes'], { kubeconfig: `/etc/cni/net.d/${KUBECONFIG_NAME}` });
    const kc = join(opts.cniConfDir, KUBECONFIG_NAME);
    assert.equal(statSync(kc).mode & 0o777, 0o600, 'the token is not world-readable');
    const doc = parseYaml(readFileSync(kc, 'utf8')) as { clusters: { cluster: Json }[]; users: { user: Json }[]; 'current-context': string };
    assert.equal(doc.clusters[0]!.cluster['server'], 'https://10.96.0.1:443');
    assert.equal(doc.clusters[0]!.cluster['certificate-authority-data'], Buffer.from('CA PEM').toString('base64'));
    assert.equal(doc.users[0]!.user['token'], 'tok-123');
    assert.equal(doc['current-context'], 'bpfmesh-cni');
    sa.token = 'tok-456'; // the projected token rotates
    assert.equal(install(opts).kubeconfigChanged, true);
    assert.equal(install(opts).kubeconfigChanged, false);

    assert.equal(hostPath('/host/opt/bpfmesh', '/host'), '/opt/bpfmesh');
    assert.equal(hostPath('/hostile/x', '/host'), '/hostile/x');
    assert.equal(hostPath('/host/x', ''), '/host/x');
    assert.equal(apiServerFromEnv({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' }), 'https://[fd00::1]:443');
    assert.equal(apiServerFromEnv({}), undefined);
  });

  test('an upgrade removes what the new install no longer has, and keeps bin/node', () => {
    const h = makeHost();
    write(join(h.conf, '10-bridge.conflist'), JSON.stringify(BRIDGE));
    write(join(h.src, 'dist/src/old.js'), 'old');
    install(h.opts);
    assert.ok(existsSync(join(h.bundle, 'dist/src/old.js')));
    rmSync(join(h.src, 'dist/src/old.js'));
    write(join(h.src, 'proto/net.proto'), 'syntax = "proto3"; // v2\n');
    const r = install(h.opts);
    assert.equal(existsSync(join(h.bundle, 'dist/src/old.js')), false);
    assert.equal(readFileSync(join(h.bundle, 'proto/net.proto'), 'utf8'), 'syntax = "proto3"; // v2\n');
    assert.deepEqual({ copied: r.bundle.copied, removed: r.bundle.removed }, { copied: 1, removed: 1 });
    assert.ok(existsSync(join(h.bundle, 'bin/node')));
  });

  test('--uninstall removes the entry (other plugins stay), the shim, the kubeconfig and the bundle; twice is fine', () => {
    const h = makeHost({ pluginConfig: { ...ENTRY, kubernetes: { kubeconfig: '__KUBECONFIG_FILEPATH__' } }, serviceAccount: () => ({ server: 'https://a:1', token: 't', ca: Buffer.from('c') }) });
    write(join(h.conf, '10-bridge.conflist'), JSON.stringify(BRIDGE));
    write(join(h.conf, '30-junk.conf'), 'not json');
    install(h.opts);
    const r = uninstall(h.opts);
    assert.deepEqual(r, { confFiles: [join(h.conf, '10-bridge.conflist')], shimRemoved: true, kubeconfigRemoved: true, bundleRemoved: true });
    assert.deepEqual(readJson(join(h.conf, '10-bridge.conflist')), BRIDGE);
    assert.equal(existsSync(join(h.bin, 'bpfmesh-cni')), false);
    assert.equal(existsSync(h.bundle), false);
    assert.equal(readFileSync(join(h.conf, '30-junk.conf'), 'utf8'), 'not json');
    assert.deepEqual(uninstall(h.opts), { confFiles: [], shimRemoved: false, kubeconfigRemoved: false, bundleRemoved: false });
  });

  test('--watch waits for the primary CNI, re-applies when it rewrites its conflist, and stops on abort', async () => {
    const h = makeHost();
    const results: InstallResult[] = [];
    const errors: string[] = [];
    const stop = new AbortController();
    const done = watchAndInstall(h.opts, 60_000, stop.signal, { onApply: (r) => results.push(r), onError: (e) => errors.push((e as { code: string }).code) });
    const file = join(h.conf, '10-bridge.conflist');
    const until = async (what: string, ok: () => boolean): Promise<void> => {
      for (let i = 0; i < 100 && !ok(); i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(ok(), what);
    };
    await until('first round fails: no config yet', () => errors.length === 1);
    assert.equal(errors[0], 'BPFMESH_E_CNI_INSTALL');
    write(file, JSON.stringify(BRIDGE));
    await until('installed once the config appears (fs event, not the 60 s timer)', () => results.some((r) => r.confChanged));
    write(file, JSON.stringify(BRIDGE)); // rewritten without our entry
    await until('re-applied after the rewrite', () => pluginTypes(file).at(-1) === 'bpfmesh-cni' && results.filter((r) => r.confChanged).length >= 2);
    stop.abort();
    await done;
    assert.deepEqual(pluginTypes(file), ['bridge', 'portmap', 'bpfmesh-cni'], 'stopping leaves the plugin installed');
  });

  test('flags: required --config, absolute paths, a sane --interval', () => {
    assert.throws(() => parseCniInstallFlags([]), { code: 'BPFMESH_E_BAD_FLAG', message: /--config: .* required unless --uninstall/ });
    assert.throws(() => parseCniInstallFlags(['--config', 'c.json', '--cni-conf-dir', 'etc/cni']), { code: 'BPFMESH_E_BAD_FLAG', message: /--cni-conf-dir: "etc\/cni" must be an absolute path/ });
    assert.throws(() => parseCniInstallFlags(['--config', 'c.json', '--interval', '0']), { code: 'BPFMESH_E_BAD_FLAG', message: /--interval/ });
    assert.throws(() => parseCniInstallFlags(['--uninstall', '--watch']), { code: 'BPFMESH_E_BAD_FLAG' });
    assert.throws(() => parseCniInstallFlags(['--config', 'c.json', '--bogus']), { code: 'BPFMESH_E_BAD_FLAG', message: /--help/ });
    const f = parseCniInstallFlags(['--config', '/etc/bpfmesh/cni.json', '--watch', '--interval', '30', '--host-root', '']);
    assert.equal(f.cniConfDir, '/host/etc/cni/net.d');
    assert.equal(f.bundleDir, '/host/opt/bpfmesh');
    assert.equal(f.hostRoot, '');
    assert.equal(f.intervalMs, 30_000);
    assert.equal(parseCniInstallFlags(['--uninstall']).config, undefined);
  });

  test('the CLI: installs, exits 0, then reports nothing changed; exit 2 with the code on a bad flag', () => {
    const h = makeHost();
    write(join(h.conf, '10-bridge.conflist'), JSON.stringify(BRIDGE));
    const cfg = join(root, `cfg-${++n}.json`);
    write(cfg, JSON.stringify(ENTRY));
    const cli = join(REPO_ROOT, 'dist/src/cli/main.js');
    const args = ['cni-install', '--config', cfg, '--source', h.src, '--bundle-dir', h.bundle, '--cni-bin-dir', h.bin, '--cni-conf-dir', h.conf, '--host-root', '', '--log-format', 'json'];
    const first = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
    assert.equal(first.status, 0, first.stderr);
    assert.match(first.stderr, /"msg":"bpfmesh-cni installed"/);
    assert.equal(statSync(join(h.bundle, 'bin/node')).size, statSync(process.execPath).size, 'the running Node is what the bundle gets');
    const second = spawnSync(process.execPath, [cli, ...args, '--log-level', 'debug'], { encoding: 'utf8' });
    assert.equal(second.status, 0, second.stderr);
    assert.match(second.stderr, /"msg":"bpfmesh-cni already in place"/);
    const bad = spawnSync(process.execPath, [cli, 'cni-install', '--config', cfg, '--interval', 'soon'], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /BPFMESH_E_BAD_FLAG: --interval/);
  });
});

function readdirNoTemp(dir: string): string[] {
  return execFileSync('ls', ['-A', dir]).toString().trim().split('\n').sort();
}
