// Exec credential plugins (kubeconfig users[].user.exec), how managed
// clusters authenticate (aws eks get-token, gke-gcloud-auth-plugin,
// kubelogin): run the command, read an ExecCredential (apiVersion
// client.authentication.k8s.io/v1 or v1beta1) from its stdout, use its token
// or client certificate until its expirationTimestamp, then run it again.
// There is never a terminal: interactiveMode Always is refused, stdin is
// closed. A plugin that fails, hangs or prints something unusable is a
// BPFMESH_E_KUBE_EXEC error with its stderr.
import { spawn } from 'node:child_process';
import { BpfmeshError, ErrorCodes } from '../errors.js';

export const EXEC_API_VERSIONS = ['client.authentication.k8s.io/v1', 'client.authentication.k8s.io/v1beta1'] as const;
/** A plugin that has not exited after this long is killed. */
export const EXEC_TIMEOUT_MS = 30_000;
const MAX_OUTPUT_BYTES = 1 << 20;
/** Run again this long before the credential expires, so no request carries an expired one. */
const EXPIRY_MARGIN_MS = 10_000;

export interface ExecConfig {
  apiVersion: (typeof EXEC_API_VERSIONS)[number];
  command: string;
  args: string[];
  env: Array<{ name: string; value: string }>;
  interactiveMode: 'Never' | 'IfAvailable';
  installHint: string | undefined;
  /** When the user asks for it (provideClusterInfo), the cluster's details for KUBERNETES_EXEC_INFO. */
  cluster: Record<string, unknown> | undefined;
}

export interface ExecCredentials {
  token: string | undefined;
  cert: Buffer | undefined;
  key: Buffer | undefined;
  /** ms since the epoch; undefined = valid until the server says 401. */
  expiresAt: number | undefined;
}

const execError = (msg: string, cause?: unknown): BpfmeshError => new BpfmeshError(ErrorCodes.KUBE_EXEC, msg, cause === undefined ? {} : { cause });

export class ExecCredentialPlugin {
  readonly config: ExecConfig;
  readonly #timeoutMs: number;
  #cached: ExecCredentials | undefined;
  #running: Promise<ExecCredentials> | undefined;
  /** Times the plugin ran (tests, logs). */
  runs = 0;

  constructor(config: ExecConfig, opts: { timeoutMs?: number } = {}) {
    this.config = config;
    this.#timeoutMs = opts.timeoutMs ?? EXEC_TIMEOUT_MS;
  }

  /** The cached credential while it is valid, else one fresh run (concurrent callers share it). */
  async get(): Promise<ExecCredentials> {
    const c = this.#cached;
    if (c !== undefined && (c.expiresAt === undefined || c.expiresAt - EXPIRY_MARGIN_MS > Date.now())) return c;
    this.#running ??= this.#run().finally(() => {
      this.#running = undefined;
    });
    this.#cached = await this.#running;
    return this.#cached;
  }

  /** The server refused the credential (401): the next get() runs the plugin again. */
  invalidate(): void {
    this.#cached = undefined;
  }

  #run(): Promise<ExecCredentials> {
    const cfg = this.config;
    this.runs++;
    const info = { apiVersion: cfg.apiVersion, kind: 'ExecCredential', spec: { interactive: false, ...(cfg.cluster ? { cluster: cfg.cluster } : {}) } };
    const env: NodeJS.ProcessEnv = { ...process.env, KUBERNETES_EXEC_INFO: JSON.stringify(info) };
    for (const e of cfg.env) env[e.name] = e.value;
    return new Promise((resolve, reject) => {
      const child = spawn(cfg.command, cfg.args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let size = 0;
      let failure: BpfmeshError | undefined;
      const collect = (into: Buffer[]) => (d: Buffer) => {
        size += d.length;
        if (size > MAX_OUTPUT_BYTES) {
          failure ??= execError(`exec plugin ${cfg.command}: more than ${MAX_OUTPUT_BYTES} bytes of output`);
          child.kill('SIGKILL');
        } else into.push(d);
      };
      child.stdout.on('data', collect(out));
      child.stderr.on('data', collect(err));
      const timer = setTimeout(() => {
        failure ??= execError(`exec plugin ${cfg.command}: no answer in ${this.#timeoutMs} ms; killed`);
        child.kill('SIGKILL');
      }, this.#timeoutMs);
      child.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const hint = e.code === 'ENOENT' && cfg.installHint ? `; ${cfg.installHint.trim()}` : '';
        reject(execError(`exec plugin ${cfg.command} cannot run: ${e.message}${hint}`, e));
      });
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        if (failure) return reject(failure);
        const stderr = Buffer.concat(err).toString('utf8').trim().slice(0, 500);
        if (code !== 0) return reject(execError(`exec plugin ${cfg.command} failed (${signal ?? `exit ${code}`})${stderr ? `: ${stderr}` : ''}`));
        try {
          resolve(parseExecCredential(Buffer.concat(out).toString('utf8'), cfg));
        } catch (e) {
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      });
    });
  }
}

export function parseExecCredential(text: string, cfg: Pick<ExecConfig, 'apiVersion' | 'command'>): ExecCredentials {
  let doc: { apiVersion?: unknown; kind?: unknown; status?: Record<string, unknown> };
  try {
    doc = JSON.parse(text) as typeof doc;
  } catch (e) {
    throw execError(`exec plugin ${cfg.command}: its output is not JSON: ${text.slice(0, 120)}`, e);
  }
  if (doc.kind !== 'ExecCredential') throw execError(`exec plugin ${cfg.command}: printed kind ${String(doc.kind)}, not ExecCredential`);
  if (doc.apiVersion !== cfg.apiVersion) throw execError(`exec plugin ${cfg.command}: printed apiVersion ${String(doc.apiVersion)}, the kubeconfig asks for ${cfg.apiVersion}`);
  const st = doc.status ?? {};
  const str = (k: string): string | undefined => (typeof st[k] === 'string' && st[k] !== '' ? st[k] : undefined);
  const token = str('token');
  const certPem = str('clientCertificateData');
  const keyPem = str('clientKeyData');
  if ((certPem === undefined) !== (keyPem === undefined)) throw execError(`exec plugin ${cfg.command}: clientCertificateData and clientKeyData come together`);
  if (token === undefined && certPem === undefined) throw execError(`exec plugin ${cfg.command}: the ExecCredential has neither a token nor a client certificate`);
  let expiresAt: number | undefined;
  const exp = str('expirationTimestamp');
  if (exp !== undefined) {
    expiresAt = Date.parse(exp);
    if (Number.isNaN(expiresAt)) throw execError(`exec plugin ${cfg.command}: expirationTimestamp "${exp}" is not an RFC 3339 time`);
  }
  return { token, cert: certPem === undefined ? undefined : Buffer.from(certPem), key: keyPem === undefined ? undefined : Buffer.from(keyPem), expiresAt };
}
