// How to reach the Kubernetes API: the in-cluster service account, or
// kubeconfig files read as kubectl reads them. Several files (a
// colon-separated list, as in KUBECONFIG) merge by kubectl's rules: the
// first file to name a cluster, user or context wins it whole, the first
// current-context wins, missing files in a list are skipped, and paths
// inside a file are relative to that file's folder. Supported: server, CA,
// insecure-skip-tls-verify, tls-server-name, proxy-url (http:// CONNECT
// proxies), token, tokenFile, client certificates, and exec credential
// plugins (exec.ts).
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { EXEC_API_VERSIONS, ExecCredentialPlugin, type ExecConfig } from './exec.js';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubeAccess {
  /** e.g. https://10.96.0.1:443 (no trailing slash). */
  server: string;
  /** PEM of the CA that signs the API server's certificate; undefined = the system's CAs. */
  ca: Buffer | undefined;
  /** The bearer token for the next request (in-cluster: re-read each time, kubelet rotates it). */
  token: () => string | undefined;
  /** Client certificate and key (PEM), for kubeconfigs that use them. */
  cert: Buffer | undefined;
  key: Buffer | undefined;
  insecureSkipTlsVerify: boolean;
  /** The name to ask for (SNI) and check the server's certificate against, instead of the URL's host. */
  tlsServerName?: string | undefined;
  /** An http:// proxy to tunnel through with CONNECT. */
  proxyUrl?: string | undefined;
  /** An exec credential plugin: its token and client certificate come on top of the fields above. */
  exec?: ExecCredentialPlugin | undefined;
  /** Where this came from, for logs: "in-cluster" or the kubeconfig path and context. */
  source: string;
}

export interface LoadKubeAccessOptions {
  /** Kubeconfig path(s), colon-separated; undefined = $KUBECONFIG of env, else in-cluster. */
  kubeconfig?: string | undefined;
  /** Overrides the server URL of either source. */
  apiServer?: string | undefined;
  /** Injectable for tests: the service account folder and the environment. */
  serviceAccountDir?: string;
  env?: NodeJS.ProcessEnv;
}

const configError = (msg: string, cause?: unknown): BpfmeshError => new BpfmeshError(ErrorCodes.KUBE_CONFIG, msg, cause === undefined ? {} : { cause });

function readOrThrow(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw configError(`cannot read ${what} ${path}: ${(err as Error).message}`, err);
  }
}

function normalizeServer(server: string, what: string): string {
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw configError(`${what}: "${server}" is not a URL such as https://10.96.0.1:443`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw configError(`${what}: "${server}" must be an http(s) URL`);
  return server.replace(/\/+$/, '');
}

export function loadKubeAccess(opts: LoadKubeAccessOptions = {}): KubeAccess {
  const env = opts.env ?? process.env;
  const list = opts.kubeconfig ?? (env['KUBECONFIG'] !== undefined && env['KUBECONFIG'] !== '' ? env['KUBECONFIG'] : undefined);
  const access = list !== undefined ? fromKubeconfigs(list) : inCluster(opts.serviceAccountDir ?? SERVICE_ACCOUNT_DIR, env);
  if (opts.apiServer !== undefined) access.server = normalizeServer(opts.apiServer, '--api-server');
  return access;
}

function inCluster(dir: string, env: NodeJS.ProcessEnv): KubeAccess {
  const host = env['KUBERNETES_SERVICE_HOST'];
  const port = env['KUBERNETES_SERVICE_PORT'] ?? '443';
  if (host === undefined || host === '') {
    throw configError('not running in a cluster (KUBERNETES_SERVICE_HOST is not set) and no --kubeconfig given; give --kubeconfig PATH');
  }
  const tokenPath = join(dir, 'token');
  // Fail now if there is no token at all; later reads follow kubelet's rotation.
  const first = readOrThrow(tokenPath, 'service account token').toString().trim();
  let last = first;
  return {
    server: normalizeServer(`https://${host.includes(':') ? `[${host}]` : host}:${port}`, 'KUBERNETES_SERVICE_HOST/PORT'),
    ca: readOrThrow(join(dir, 'ca.crt'), 'service account CA'),
    token: () => {
      try {
        last = readFileSync(tokenPath, 'utf8').trim();
      } catch {
        /* keep the last token we read: a rotation replaces the file atomically */
      }
      return last;
    },
    cert: undefined,
    key: undefined,
    insecureSkipTlsVerify: false,
    source: 'in-cluster',
  };
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A named entry and the file it came from (its paths are relative to that file). */
interface Entry {
  body: Obj;
  path: string;
}

interface Merged {
  currentContext: string | undefined;
  clusters: Map<string, Entry>;
  users: Map<string, Entry>;
  contexts: Map<string, Entry>;
  paths: string[];
}

function readKubeconfig(path: string): Obj {
  let doc: unknown;
  try {
    doc = parseYaml(readOrThrow(path, 'kubeconfig').toString());
  } catch (err) {
    if (err instanceof BpfmeshError) throw err;
    throw configError(`kubeconfig ${path} is not valid YAML: ${(err as Error).message}`, err);
  }
  if (doc === null || doc === undefined) return {}; // an empty file, as kubectl allows
  if (!isObj(doc)) throw configError(`kubeconfig ${path} is not a kubeconfig (expected a mapping with clusters, users, contexts)`);
  return doc;
}

/** kubectl's merge: first file wins each name and the current-context; missing files of a list are skipped. */
export function mergeKubeconfigs(list: string): Merged {
  const paths = list.split(':').filter((p) => p !== '');
  const m: Merged = { currentContext: undefined, clusters: new Map(), users: new Map(), contexts: new Map(), paths: [] };
  for (const path of paths) {
    // One file is used as given (missing = an error); in a list, absent files are skipped.
    if (paths.length > 1 && !existsSync(path)) continue;
    const doc = readKubeconfig(path);
    m.paths.push(path);
    const cc = doc['current-context'];
    if (m.currentContext === undefined && typeof cc === 'string' && cc !== '') m.currentContext = cc;
    for (const [field, into] of [
      ['clusters', m.clusters],
      ['users', m.users],
      ['contexts', m.contexts],
    ] as const) {
      const entries = doc[field];
      if (entries === undefined || entries === null) continue;
      if (!Array.isArray(entries)) throw configError(`kubeconfig ${path}: ${field} is not a list`);
      const inner = field.slice(0, -1);
      for (const e of entries as unknown[]) {
        if (!isObj(e) || typeof e['name'] !== 'string') continue;
        const body = e[inner];
        if (!into.has(e['name']) && isObj(body)) into.set(e['name'], { body, path });
      }
    }
  }
  if (m.paths.length === 0) throw configError(`none of the kubeconfig files ${paths.join(', ')} exists`);
  return m;
}

function named(map: Map<string, Entry>, name: string, what: string, where: string): Entry {
  const e = map.get(name);
  if (e === undefined) throw configError(`kubeconfig ${where}: no ${what} named "${name}"`);
  return e;
}

/** "<field>-data" (base64) or "<field>" (a path, relative to the kubeconfig's folder). */
function fileOrData(obj: Obj, field: string, base: string, path: string): Buffer | undefined {
  const data = obj[`${field}-data`];
  if (typeof data === 'string' && data !== '') return Buffer.from(data, 'base64');
  const file = obj[field];
  if (typeof file === 'string' && file !== '') return readOrThrow(isAbsolute(file) ? file : join(base, file), `${field} of kubeconfig ${path}`);
  return undefined;
}

function proxyUrlOf(value: unknown, where: string): string | undefined {
  if (value === undefined || value === '') return undefined;
  let url: URL | undefined;
  try {
    url = typeof value === 'string' ? new URL(value) : undefined;
  } catch {
    url = undefined;
  }
  if (url?.protocol !== 'http:') throw configError(`${where}: proxy-url ${JSON.stringify(value)} is not supported; bpfmesh tunnels through http:// proxies (CONNECT) only`);
  return value as string;
}

function execConfigOf(exec: unknown, userName: string, base: string, where: string, clusterInfo: Obj): ExecConfig {
  if (!isObj(exec)) throw configError(`${where}: user "${userName}": exec is not a mapping`);
  const apiVersion = exec['apiVersion'];
  if (!(EXEC_API_VERSIONS as readonly unknown[]).includes(apiVersion)) {
    throw configError(`${where}: user "${userName}": exec apiVersion ${JSON.stringify(apiVersion)} is not one of ${EXEC_API_VERSIONS.join(', ')}`);
  }
  const command = exec['command'];
  if (typeof command !== 'string' || command === '') throw configError(`${where}: user "${userName}": exec has no command`);
  const args = exec['args'] ?? [];
  if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) throw configError(`${where}: user "${userName}": exec args is not a list of strings`);
  const env = exec['env'] ?? [];
  if (!Array.isArray(env) || !env.every((e) => isObj(e) && typeof e['name'] === 'string' && typeof e['value'] === 'string')) {
    throw configError(`${where}: user "${userName}": exec env is not a list of {name, value}`);
  }
  // v1 requires interactiveMode; v1beta1 defaults to IfAvailable. We never have a terminal.
  const mode = exec['interactiveMode'] ?? (apiVersion === 'client.authentication.k8s.io/v1beta1' ? 'IfAvailable' : undefined);
  if (mode === 'Always') throw configError(`${where}: user "${userName}": exec interactiveMode Always needs a terminal, which bpfmesh never has; use a plugin that runs with Never`);
  if (mode !== 'Never' && mode !== 'IfAvailable') throw configError(`${where}: user "${userName}": exec interactiveMode ${JSON.stringify(mode)} is not Never, IfAvailable or Always`);
  const hint = exec['installHint'];
  return {
    apiVersion: apiVersion as ExecConfig['apiVersion'],
    // Like kubectl: a command with a slash is relative to the kubeconfig's folder; a bare name is looked up in PATH.
    command: command.includes('/') && !isAbsolute(command) ? join(base, command) : command,
    args: args,
    env: env as Array<{ name: string; value: string }>,
    interactiveMode: mode,
    installHint: typeof hint === 'string' ? hint : undefined,
    cluster: exec['provideClusterInfo'] === true ? clusterInfo : undefined,
  };
}

function fromKubeconfigs(list: string): KubeAccess {
  const m = mergeKubeconfigs(list);
  const where = m.paths.join(':');
  const contextName = m.currentContext;
  if (contextName === undefined) throw configError(`kubeconfig ${where} has no current-context`);
  const context = named(m.contexts, contextName, 'context', where).body;
  const clusterName = context['cluster'];
  if (typeof clusterName !== 'string') throw configError(`kubeconfig ${where}: context "${contextName}" names no cluster`);
  const clusterEntry = named(m.clusters, clusterName, 'cluster', where);
  const cluster = clusterEntry.body;
  if (typeof cluster['server'] !== 'string') throw configError(`kubeconfig ${clusterEntry.path}: cluster "${clusterName}" has no server`);
  const cbase = dirname(clusterEntry.path);
  const userName = context['user'];
  const userEntry = typeof userName === 'string' && userName !== '' ? named(m.users, userName, 'user', where) : undefined;
  const user = userEntry?.body ?? {};
  const path = userEntry?.path ?? clusterEntry.path;
  const base = dirname(path);
  let token: string | undefined;
  if (typeof user['token'] === 'string' && user['token'] !== '') token = user['token'];
  const tokenFile = user['tokenFile'];
  const tokenPath = typeof tokenFile === 'string' && tokenFile !== '' ? (isAbsolute(tokenFile) ? tokenFile : join(base, tokenFile)) : undefined;
  if (token === undefined && tokenPath !== undefined) token = readOrThrow(tokenPath, 'tokenFile').toString().trim();
  const cert = fileOrData(user, 'client-certificate', base, path);
  const key = fileOrData(user, 'client-key', base, path);
  if ((cert === undefined) !== (key === undefined)) throw configError(`kubeconfig ${path}: user "${String(userName)}" has a client certificate without its key, or a key without its certificate`);
  if (user['auth-provider'] !== undefined && token === undefined && cert === undefined && user['exec'] === undefined) {
    throw configError(`kubeconfig ${path}: user "${String(userName)}" uses an auth-provider, which kubectl itself no longer runs; use an exec plugin, a token or a client certificate`);
  }
  const server = normalizeServer(cluster['server'], `kubeconfig ${clusterEntry.path}`);
  const ca = fileOrData(cluster, 'certificate-authority', cbase, clusterEntry.path);
  const tlsServerName = typeof cluster['tls-server-name'] === 'string' && cluster['tls-server-name'] !== '' ? cluster['tls-server-name'] : undefined;
  const proxyUrl = proxyUrlOf(cluster['proxy-url'], `kubeconfig ${clusterEntry.path}: cluster "${clusterName}"`);
  const insecure = cluster['insecure-skip-tls-verify'] === true;
  let exec: ExecCredentialPlugin | undefined;
  if (user['exec'] !== undefined && user['exec'] !== null) {
    const extensions = Array.isArray(cluster['extensions']) ? (cluster['extensions'] as unknown[]) : [];
    const execExt = extensions.find((e) => isObj(e) && e['name'] === 'client.authentication.k8s.io/exec');
    const clusterInfo: Obj = {
      server,
      ...(ca ? { 'certificate-authority-data': ca.toString('base64') } : {}),
      ...(insecure ? { 'insecure-skip-tls-verify': true } : {}),
      ...(tlsServerName ? { 'tls-server-name': tlsServerName } : {}),
      ...(proxyUrl ? { 'proxy-url': proxyUrl } : {}),
      ...(isObj(execExt) && execExt['extension'] !== undefined ? { config: execExt['extension'] } : {}),
    };
    exec = new ExecCredentialPlugin(execConfigOf(user['exec'], String(userName), base, `kubeconfig ${path}`, clusterInfo));
  }
  let current = token;
  return {
    server,
    ca,
    token: () => {
      if (tokenPath === undefined || typeof user['token'] === 'string') return current;
      try {
        current = readFileSync(tokenPath, 'utf8').trim();
      } catch {
        /* keep the last one */
      }
      return current;
    },
    cert,
    key,
    insecureSkipTlsVerify: insecure,
    tlsServerName,
    proxyUrl,
    exec,
    source: `kubeconfig ${where} (context ${contextName})`,
  };
}
