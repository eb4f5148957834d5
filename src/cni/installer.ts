// `bpfmesh cni-install`: puts the bpfmesh CNI plugin on a node, from a
// DaemonSet pod that has the host's /etc/cni/net.d, /opt/cni/bin and /opt
// mounted. Three things land on the host:
//   - a bundle (Node itself, dist/, build/, node_modules, proto/, bin/, lib/)
//     in --bundle-dir, because the runtime runs the plugin on the host, where
//     neither Node nor libbpf can be assumed;
//   - the `bpfmesh-cni` shim in the CNI bin dir, which execs the bundle;
//   - a `{"type": "bpfmesh-cni"}` entry at the end of the plugins of the
//     primary CNI's config (the lexically first file, as libcni picks it).
// Every write is temp file + rename, and nothing is written that is already
// right, so running it again changes nothing (and a runtime never reads a
// half-written file).
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, unlinkSync, utimesSync, watch as fsWatch, writeFileSync, type FSWatcher } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { BpfmeshError, ErrorCodes } from '../errors.js';

export const PLUGIN_TYPE = 'bpfmesh-cni';
export const SHIM_NAME = 'bpfmesh-cni';
export const KUBECONFIG_NAME = 'ZZZ-bpfmesh-cni-kubeconfig';
/** linkerd-cni's placeholder for the kubeconfig path in its config template. */
export const KUBECONFIG_PLACEHOLDER = '__KUBECONFIG_FILEPATH__';

/** libcni reads these extensions from the config dir, in lexical order. */
const CONF_EXTENSIONS = new Set(['.conf', '.conflist', '.json']);

/** What the bundle holds, relative to the install's root; `files` keeps only matching files of that folder. */
const BUNDLE_ENTRIES: { path: string; required: boolean; files?: RegExp }[] = [
  { path: 'package.json', required: true },
  { path: 'bin', required: true },
  { path: 'dist', required: true },
  { path: 'node_modules', required: true },
  { path: 'proto', required: true },
  // The addon, and the CNI fast path's forwarder (absent: the shim runs node for every call).
  { path: 'build/Release', required: true, files: /\.node$|^bpfmesh-cni-forward$/ },
  { path: 'build/bpf', required: true, files: /\.bpf\.o$/ },
  // libbpf and what it links (libelf, libz): the image puts them here; the host may have none.
  { path: 'lib', required: false },
];
/** Written into the bundle from process.execPath, so the host needs no Node. */
const BUNDLE_NODE = 'bin/node';
const KEEP_IN_BIN = new Set(['node']);
/** The CNI plugin's own launcher in the install (bin/bpfmesh-cni). */
const BUNDLE_SHIM = 'bin/bpfmesh-cni';

export interface ServiceAccount {
  /** https://host:port */
  server: string;
  token: string;
  ca: Buffer;
}

export interface InstallerOptions {
  /** The install to copy (the image's /app). */
  sourceDir: string;
  /** The Node binary to put in the bundle. */
  nodeBinary: string;
  bundleDir: string;
  cniBinDir: string;
  cniConfDir: string;
  /** Prefix of the paths above as this process sees them ('' = the host's own view). */
  hostRoot: string;
  /** The plugin entry; `type` is set to bpfmesh-cni. Not needed to uninstall. */
  pluginConfig?: Record<string, unknown>;
  /** Only read when the entry asks for a kubeconfig (KUBECONFIG_PLACEHOLDER). */
  serviceAccount?: () => ServiceAccount;
}

export interface SyncCounts {
  copied: number;
  unchanged: number;
  removed: number;
}

export interface InstallResult {
  bundle: SyncCounts;
  shimChanged: boolean;
  kubeconfigChanged: boolean;
  confFile: string;
  /** A lone .conf was turned into a .conflist (the .conf removed). */
  converted: string | undefined;
  confChanged: boolean;
}

export interface UninstallResult {
  confFiles: string[];
  shimRemoved: boolean;
  kubeconfigRemoved: boolean;
  bundleRemoved: boolean;
}

function fail(message: string, cause?: unknown): BpfmeshError {
  return new BpfmeshError(ErrorCodes.CNI_INSTALL, message, cause === undefined ? {} : { cause });
}

/** The path the host sees for a path under the host-root mount. */
export function hostPath(path: string, hostRoot: string): string {
  if (hostRoot === '') return path;
  if (path === hostRoot) return '/';
  return path.startsWith(hostRoot + '/') ? path.slice(hostRoot.length) : path;
}

/** Write `data` to `path` through a temp file in the same folder and a rename; false if it already holds exactly that. */
export function writeAtomic(path: string, data: string | Buffer, mode: number): boolean {
  const want = typeof data === 'string' ? Buffer.from(data) : data;
  try {
    const st = statSync(path);
    if (st.isFile() && (st.mode & 0o7777) === mode && readFileSync(path).equals(want)) return false;
  } catch {
    /* missing: written below */
  }
  mkdirSync(dirname(path), { recursive: true });
  // A dot name without a CNI extension: libcni never picks up the temp file.
  const tmp = join(dirname(path), `.${basename(path)}.bpfmesh-tmp-${process.pid}`);
  try {
    writeFileSync(tmp, want, { mode });
    chmodSync(tmp, mode); // the umask may have taken bits off
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  return true;
}

// ---- the bundle -------------------------------------------------------------

function sameFile(src: string, dst: string): boolean {
  try {
    const a = statSync(src);
    const b = lstatSync(dst);
    // Copies get the source's mtime, so size + mtime + mode say "already copied".
    return b.isFile() && a.size === b.size && Math.abs(a.mtimeMs - b.mtimeMs) < 1 && (a.mode & 0o7777) === (b.mode & 0o7777);
  } catch {
    return false;
  }
}

function copyFile(src: string, dst: string, counts: SyncCounts): void {
  if (sameFile(src, dst)) {
    counts.unchanged++;
    return;
  }
  const st = statSync(src);
  const tmp = join(dirname(dst), `.${basename(dst)}.bpfmesh-tmp-${process.pid}`);
  copyFileSync(src, tmp);
  chmodSync(tmp, st.mode & 0o7777);
  utimesSync(tmp, st.atime, st.mtime);
  // A directory where a file belongs (an older layout) goes first.
  if (existsSync(dst) && lstatSync(dst).isDirectory()) rmSync(dst, { recursive: true, force: true });
  renameSync(tmp, dst); // a running plugin keeps the old inode
  counts.copied++;
}

function copyLink(src: string, dst: string, counts: SyncCounts): void {
  const target = readlinkSync(src);
  try {
    if (lstatSync(dst).isSymbolicLink() && readlinkSync(dst) === target) {
      counts.unchanged++;
      return;
    }
    rmSync(dst, { recursive: true, force: true });
  } catch {
    /* missing */
  }
  symlinkSync(target, dst);
  counts.copied++;
}

/** Make `dst` hold what `src` holds (files, links, folders); remove what `src` no longer has. */
function syncTree(src: string, dst: string, filter: RegExp | undefined, counts: SyncCounts, keep: ReadonlySet<string> = new Set()): void {
  const st = lstatSync(src);
  if (st.isSymbolicLink()) return copyLink(src, dst, counts);
  if (!st.isDirectory()) return copyFile(src, dst, counts);
  if (existsSync(dst) && !lstatSync(dst).isDirectory()) rmSync(dst, { force: true });
  mkdirSync(dst, { recursive: true });
  const wanted = new Set<string>();
  for (const ent of readdirSync(src, { withFileTypes: true })) {
    if (filter !== undefined && !(ent.isFile() && filter.test(ent.name))) continue;
    wanted.add(ent.name);
    syncTree(join(src, ent.name), join(dst, ent.name), undefined, counts);
  }
  for (const name of readdirSync(dst)) {
    if (wanted.has(name) || keep.has(name)) continue;
    rmSync(join(dst, name), { recursive: true, force: true });
    counts.removed++;
  }
}

/** The Node major an install needs: package.json's engines.node (">=24", "^22 || >=24": the lowest major); undefined when it says none. */
export function requiredNodeMajor(sourceDir: string): number | undefined {
  let engines: unknown;
  try {
    engines = (JSON.parse(readFileSync(join(sourceDir, 'package.json'), 'utf8')) as { engines?: { node?: unknown } }).engines?.node;
  } catch {
    return undefined;
  }
  if (typeof engines !== 'string') return undefined;
  const majors = [...engines.matchAll(/(?:^|[\s|^~>=])(\d+)(?:\.|\s|$)/g)].map((m) => Number(m[1]));
  return majors.length === 0 ? undefined : Math.min(...majors);
}

/** The version of a Node binary (the running one without a spawn); fails when it does not run here. */
export function nodeVersionOf(nodeBinary: string): string {
  if (nodeBinary === process.execPath) return process.versions.node;
  try {
    return execFileSync(nodeBinary, ['-p', 'process.versions.node'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (err) {
    throw fail(`the Node binary ${nodeBinary} does not run (${(err as Error).message.split('\n')[0]}); the bundle needs a Node that runs on the host`, err);
  }
}

/**
 * The Node that goes onto every host runs the plugin there: it must be one
 * the install supports (engines.node), or every pod's CNI ADD would fail on
 * the host instead of here.
 */
function checkBundleNode(sourceDir: string, nodeBinary: string): void {
  const need = requiredNodeMajor(sourceDir);
  if (need === undefined) return;
  const version = nodeVersionOf(nodeBinary);
  const major = Number(/^v?(\d+)\./.exec(version)?.[1]);
  if (!(major >= need)) {
    throw fail(`the Node binary ${nodeBinary} is ${version}; bpfmesh needs Node ${need}+ (package.json engines): run cni-install from the bpfmesh image, whose Node is the supported one`);
  }
}

/** Copy the install at sourceDir and the Node binary into bundleDir. */
export function syncBundle(sourceDir: string, nodeBinary: string, bundleDir: string): SyncCounts {
  for (const e of BUNDLE_ENTRIES) {
    if (e.required && !existsSync(join(sourceDir, e.path))) {
      throw fail(`${join(sourceDir, e.path)} is missing: ${sourceDir} is not a built bpfmesh (run "npm ci" there, or give --source the image's install)`);
    }
  }
  if (!existsSync(join(sourceDir, BUNDLE_SHIM))) throw fail(`${join(sourceDir, BUNDLE_SHIM)} is missing: this bpfmesh has no CNI plugin launcher; use an image that has one`);
  if (!existsSync(nodeBinary)) throw fail(`the Node binary ${nodeBinary} is missing`);
  checkBundleNode(sourceDir, nodeBinary);
  const counts: SyncCounts = { copied: 0, unchanged: 0, removed: 0 };
  mkdirSync(bundleDir, { recursive: true });
  for (const e of BUNDLE_ENTRIES) {
    const src = join(sourceDir, e.path);
    const dst = join(bundleDir, e.path);
    if (!existsSync(src)) {
      if (existsSync(dst)) {
        rmSync(dst, { recursive: true, force: true });
        counts.removed++;
      }
      continue;
    }
    mkdirSync(dirname(dst), { recursive: true });
    syncTree(src, dst, e.files, counts, e.path === 'bin' ? KEEP_IN_BIN : undefined);
  }
  copyFile(nodeBinary, join(bundleDir, BUNDLE_NODE), counts);
  return counts;
}

// ---- the shim ---------------------------------------------------------------

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * What the runtime execs from the CNI bin dir. It only supplies what the
 * host lacks (the bundle's Node, and its libbpf on the library path) and
 * hands over to the bundle's own bin/bpfmesh-cni, which finds
 * dist/src/cli/main.js from where it lives and runs `cni` with the CNI_*
 * environment and stdin untouched.
 */
export function renderShim(hostBundleDir: string, cniSocket?: string): string {
  // The node agent's socket (`bpfmesh node --cni-socket`) on this host, from the entry's bpfmesh.cni_socket.
  const socket = cniSocket === undefined ? '' : `BPFMESH_CNI_SOCKET=\${BPFMESH_CNI_SOCKET:-${shellQuote(cniSocket)}}\nexport BPFMESH_CNI_SOCKET\n`;
  return `#!/bin/sh
# bpfmesh-cni: a chained CNI plugin, written by "bpfmesh cni-install".
# bpfmesh (Node, its code, libbpf) is in the bundle below, on this host.
BPFMESH_HOME=\${BPFMESH_HOME:-${shellQuote(hostBundleDir)}}
BPFMESH_NODE=\${BPFMESH_NODE:-$BPFMESH_HOME/${BUNDLE_NODE}}
LD_LIBRARY_PATH="$BPFMESH_HOME/lib\${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export BPFMESH_NODE LD_LIBRARY_PATH
${socket}exec "$BPFMESH_HOME/${BUNDLE_SHIM}" "$@"
`;
}

/** The entry's bpfmesh.cni_socket: where the plugin finds the node agent on the host (absolute), if set. */
export function cniSocketOf(entry: Record<string, unknown>): string | undefined {
  const own = entry['bpfmesh'];
  const v = isObject(own) ? own['cni_socket'] : undefined;
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !v.startsWith('/') || /[\n\0]/.test(v)) throw fail(`bpfmesh.cni_socket: ${JSON.stringify(v)} is not an absolute path; give the host path of the node agent's --cni-socket`);
  return v;
}

// ---- the CNI config -----------------------------------------------------------

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The config files libcni would consider, in the order it considers them. */
export function confFiles(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    throw fail(`cannot read the CNI config dir ${dir} (${(err as Error).message}); mount the host's /etc/cni/net.d there or give --cni-conf-dir`, err);
  }
  return names
    .filter((n) => CONF_EXTENSIONS.has(extname(n)) && !n.startsWith('.'))
    .sort()
    .map((n) => join(dir, n))
    .filter((p) => statSync(p).isFile());
}

function readJson(path: string): Json {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw fail(`cannot read ${path}: ${(err as Error).message}`, err);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw fail(`${path} is not JSON (${(err as Error).message}); fix the primary CNI's config`, err);
  }
  if (!isObject(v)) throw fail(`${path} is not a JSON object; fix the primary CNI's config`);
  return v;
}

/** Read and check the plugin entry (--config). */
export function readPluginConfig(path: string): Json {
  let conf: Json;
  try {
    conf = readJson(path);
  } catch (err) {
    throw fail(`--config ${path}: ${(err as Error).message.replace(`${path} `, '').replace(/; fix the primary CNI's config$/, '')}; give the plugin entry as a JSON object`, err);
  }
  if (conf['type'] !== undefined && conf['type'] !== PLUGIN_TYPE) {
    throw fail(`--config ${path}: "type" is ${JSON.stringify(conf['type'])}; it must be "${PLUGIN_TYPE}" (or left out)`);
  }
  for (const block of ['linkerd', 'kubernetes']) {
    if (conf[block] !== undefined && !isObject(conf[block])) throw fail(`--config ${path}: "${block}" must be an object`);
  }
  return { ...conf, type: PLUGIN_TYPE };
}

const isOurs = (p: unknown): boolean => isObject(p) && p['type'] === PLUGIN_TYPE;

/** Deep copy with every string's KUBECONFIG_PLACEHOLDER replaced; says whether there was one. */
function substitute(v: unknown, path: string): { value: unknown; found: boolean } {
  if (typeof v === 'string') return { value: v.split(KUBECONFIG_PLACEHOLDER).join(path), found: v.includes(KUBECONFIG_PLACEHOLDER) };
  if (Array.isArray(v)) {
    const items = v.map((x) => substitute(x, path));
    return { value: items.map((i) => i.value), found: items.some((i) => i.found) };
  }
  if (isObject(v)) {
    let found = false;
    const out: Json = {};
    for (const [k, x] of Object.entries(v)) {
      const r = substitute(x, path);
      out[k] = r.value;
      found ||= r.found;
    }
    return { value: out, found };
  }
  return { value: v, found: false };
}

function renderKubeconfig(sa: ServiceAccount): string {
  return toYaml({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'local', cluster: { server: sa.server, 'certificate-authority-data': sa.ca.toString('base64') } }],
    users: [{ name: 'bpfmesh-cni', user: { token: sa.token } }],
    contexts: [{ name: 'bpfmesh-cni', context: { cluster: 'local', user: 'bpfmesh-cni' } }],
    'current-context': 'bpfmesh-cni',
  });
}

/** Read a service account's token and CA from a folder such as /var/run/secrets/kubernetes.io/serviceaccount. */
export function readServiceAccount(dir: string, server: string | undefined): ServiceAccount {
  if (server === undefined) throw fail('KUBERNETES_SERVICE_HOST/PORT are not set: cannot write a kubeconfig for the plugin; run in a pod, or give the config\'s kubernetes.kubeconfig a path');
  try {
    return { server, token: readFileSync(join(dir, 'token'), 'utf8').trim(), ca: readFileSync(join(dir, 'ca.crt')) };
  } catch (err) {
    throw fail(`cannot read the service account in ${dir} (${(err as Error).message}); mount its token (automountServiceAccountToken) or give --service-account-dir`, err);
  }
}

/** The conflist with our entry last, replacing any earlier one. */
export function withEntry(conflist: Json, entry: Json): Json {
  const list: unknown = conflist['plugins'];
  const plugins: unknown[] = Array.isArray(list) ? list.filter((p) => !isOurs(p)) : [];
  return { ...conflist, plugins: [...plugins, entry] };
}

/** A single-plugin .conf as a conflist, as linkerd-cni's installer converts it. */
export function toConflist(conf: Json): Json {
  const { name, cniVersion } = conf;
  return { ...(cniVersion !== undefined ? { cniVersion } : {}), ...(name !== undefined ? { name } : {}), plugins: [conf] };
}

const render = (j: Json): string => JSON.stringify(j, null, 2) + '\n';

function fileMode(path: string): number {
  return statSync(path).mode & 0o777;
}

function applyConf(opts: InstallerOptions, entry: Json): { confFile: string; converted: string | undefined; changed: boolean } {
  const first = confFiles(opts.cniConfDir)[0];
  if (first === undefined) {
    throw fail(`no CNI config (*.conf, *.conflist, *.json) in ${opts.cniConfDir} yet: the primary CNI has not written one; run with --watch to wait for it`);
  }
  const doc = readJson(first);
  if (Array.isArray(doc['plugins']) || extname(first) === '.conflist') {
    if (!Array.isArray(doc['plugins'])) throw fail(`${first} has no "plugins" array; fix the primary CNI's config`);
    const changed = writeAtomic(first, render(withEntry(doc, entry)), fileMode(first));
    return { confFile: first, converted: undefined, changed };
  }
  // A lone plugin: libcni would keep reading foo.conf over foo.conflist (it sorts first), so it goes.
  const target = first.slice(0, -extname(first).length) + '.conflist';
  writeAtomic(target, render(withEntry(toConflist(doc), entry)), fileMode(first));
  unlinkSync(first);
  return { confFile: target, converted: first, changed: true };
}

/** Install or bring up to date: bundle, then kubeconfig, then shim, then the config entry (so the runtime never calls what is not there yet). */
export function install(opts: InstallerOptions): InstallResult {
  if (opts.pluginConfig === undefined) throw fail('no plugin configuration given (--config)');
  const bundle = syncBundle(opts.sourceDir, opts.nodeBinary, opts.bundleDir);

  const kubeconfigPath = join(opts.cniConfDir, KUBECONFIG_NAME);
  const { value, found } = substitute(opts.pluginConfig, hostPath(kubeconfigPath, opts.hostRoot));
  let kubeconfigChanged = false;
  if (found) {
    if (opts.serviceAccount === undefined) throw fail(`the config asks for ${KUBECONFIG_PLACEHOLDER} but no service account is available`);
    kubeconfigChanged = writeAtomic(kubeconfigPath, renderKubeconfig(opts.serviceAccount()), 0o600);
  }

  const hostBundle = hostPath(opts.bundleDir, opts.hostRoot);
  if (/[\n\0]/.test(hostBundle)) throw fail(`--bundle-dir ${opts.bundleDir}: a path with a newline cannot go into the shim`);
  const shimChanged = writeAtomic(join(opts.cniBinDir, SHIM_NAME), renderShim(hostBundle, cniSocketOf(opts.pluginConfig)), 0o755);

  const conf = applyConf(opts, value as Json);
  return { bundle, shimChanged, kubeconfigChanged, confFile: conf.confFile, converted: conf.converted, confChanged: conf.changed };
}

/** Remove the entry from every config that has one, then the kubeconfig, the shim and the bundle. */
export function uninstall(opts: InstallerOptions): UninstallResult {
  const changed: string[] = [];
  for (const file of existsSync(opts.cniConfDir) ? confFiles(opts.cniConfDir) : []) {
    let doc: Json;
    try {
      doc = readJson(file);
    } catch {
      continue; // not ours to judge, and it cannot hold our entry in a form we wrote
    }
    const plugins = doc['plugins'];
    if (!Array.isArray(plugins) || !plugins.some(isOurs)) continue;
    writeAtomic(file, render({ ...doc, plugins: plugins.filter((p) => !isOurs(p)) }), fileMode(file));
    changed.push(file);
  }
  const gone = (p: string): boolean => {
    if (!existsSync(p)) return false;
    rmSync(p, { recursive: true, force: true });
    return true;
  };
  const kubeconfigRemoved = gone(join(opts.cniConfDir, KUBECONFIG_NAME));
  const shimRemoved = gone(join(opts.cniBinDir, SHIM_NAME));
  const bundleRemoved = gone(opts.bundleDir);
  return { confFiles: changed, shimRemoved, kubeconfigRemoved, bundleRemoved };
}

export interface WatchHandlers {
  onApply(result: InstallResult): void;
  onError(err: unknown): void;
}

/**
 * Install, then again whenever the config dir changes (the primary CNI
 * rewrites its conflist and drops our entry) or every intervalMs (the
 * service account token rotates; an fs event can be missed), until `signal`
 * aborts. A failed round is reported and retried, not fatal: the primary CNI
 * may simply not have written its config yet.
 */
export async function watchAndInstall(opts: InstallerOptions, intervalMs: number, signal: AbortSignal, h: WatchHandlers): Promise<void> {
  let wake: (() => void) | undefined;
  let pending = false; // a change seen while installing: go round again at once
  const poke = (): void => {
    if (wake !== undefined) wake();
    else pending = true;
  };
  let watcher: FSWatcher | undefined;
  signal.addEventListener('abort', poke, { once: true });
  try {
    while (!signal.aborted) {
      try {
        h.onApply(install(opts));
      } catch (err) {
        h.onError(err);
      }
      if (watcher === undefined && existsSync(opts.cniConfDir)) {
        try {
          watcher = fsWatch(opts.cniConfDir, poke);
          watcher.on('error', () => {
            watcher?.close();
            watcher = undefined;
          });
        } catch {
          /* polling still covers it */
        }
      }
      if (signal.aborted) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, pending ? 100 : intervalMs);
        pending = false;
        wake = () => {
          clearTimeout(timer);
          // Let the writer finish its burst (write + rename) before reading.
          setTimeout(resolve, signal.aborted ? 0 : 100);
        };
      });
      wake = undefined;
    }
  } finally {
    watcher?.close();
    signal.removeEventListener('abort', poke);
  }
}
