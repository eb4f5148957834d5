// How to reach the Kubernetes API: the in-cluster service account, or a
// kubeconfig file. Only what a pod watcher needs: the server URL, the CA to
// trust, and a bearer token or a client certificate.
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { BpfmeshError, ErrorCodes } from '../errors.js';

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
  /** Where this came from, for logs: "in-cluster" or the kubeconfig path and context. */
  source: string;
}

export interface LoadKubeAccessOptions {
  /** A kubeconfig path; undefined = in-cluster. */
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
  const access = opts.kubeconfig !== undefined ? fromKubeconfig(opts.kubeconfig) : inCluster(opts.serviceAccountDir ?? SERVICE_ACCOUNT_DIR, opts.env ?? process.env);
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

interface Named<T> {
  name?: string;
  [k: string]: unknown;
  value?: T;
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function findNamed(list: unknown, name: string, field: 'cluster' | 'user' | 'context', path: string): Obj {
  const entries = Array.isArray(list) ? (list as Array<Named<unknown>>) : [];
  const hit = entries.find((e) => isObj(e) && e.name === name);
  const body = hit?.[field];
  if (!isObj(body)) throw configError(`kubeconfig ${path}: no ${field} named "${name}"`);
  return body;
}

/** "<field>-data" (base64) or "<field>" (a path, relative to the kubeconfig's folder). */
function fileOrData(obj: Obj, field: string, base: string, path: string): Buffer | undefined {
  const data = obj[`${field}-data`];
  if (typeof data === 'string' && data !== '') return Buffer.from(data, 'base64');
  const file = obj[field];
  if (typeof file === 'string' && file !== '') return readOrThrow(isAbsolute(file) ? file : join(base, file), `${field} of kubeconfig ${path}`);
  return undefined;
}

function fromKubeconfig(path: string): KubeAccess {
  let doc: unknown;
  try {
    doc = parseYaml(readOrThrow(path, 'kubeconfig').toString());
  } catch (err) {
    if (err instanceof BpfmeshError) throw err;
    throw configError(`kubeconfig ${path} is not valid YAML: ${(err as Error).message}`, err);
  }
  if (!isObj(doc)) throw configError(`kubeconfig ${path} is not a kubeconfig (expected a mapping with clusters, users, contexts)`);
  const contextName = doc['current-context'];
  if (typeof contextName !== 'string' || contextName === '') throw configError(`kubeconfig ${path} has no current-context`);
  const context = findNamed(doc['contexts'], contextName, 'context', path);
  const clusterName = context['cluster'];
  if (typeof clusterName !== 'string') throw configError(`kubeconfig ${path}: context "${contextName}" names no cluster`);
  const cluster = findNamed(doc['clusters'], clusterName, 'cluster', path);
  if (typeof cluster['server'] !== 'string') throw configError(`kubeconfig ${path}: cluster "${clusterName}" has no server`);
  const base = dirname(path);
  const userName = context['user'];
  const user = typeof userName === 'string' && userName !== '' ? findNamed(doc['users'], userName, 'user', path) : {};
  let token: string | undefined;
  if (typeof user['token'] === 'string' && user['token'] !== '') token = user['token'];
  const tokenFile = user['tokenFile'];
  const tokenPath = typeof tokenFile === 'string' && tokenFile !== '' ? (isAbsolute(tokenFile) ? tokenFile : join(base, tokenFile)) : undefined;
  if (token === undefined && tokenPath !== undefined) token = readOrThrow(tokenPath, 'tokenFile').toString().trim();
  if (user['exec'] !== undefined || user['auth-provider'] !== undefined) {
    if (token === undefined && user['client-certificate'] === undefined && user['client-certificate-data'] === undefined) {
      throw configError(`kubeconfig ${path}: user "${String(userName)}" uses exec/auth-provider credentials, which bpfmesh does not run; use a token or a client certificate`);
    }
  }
  const cert = fileOrData(user, 'client-certificate', base, path);
  const key = fileOrData(user, 'client-key', base, path);
  if ((cert === undefined) !== (key === undefined)) throw configError(`kubeconfig ${path}: user "${String(userName)}" has a client certificate without its key, or a key without its certificate`);
  let current = token;
  return {
    server: normalizeServer(cluster['server'], `kubeconfig ${path}`),
    ca: fileOrData(cluster, 'certificate-authority', base, path),
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
    insecureSkipTlsVerify: cluster['insecure-skip-tls-verify'] === true,
    source: `kubeconfig ${path} (context ${contextName})`,
  };
}
