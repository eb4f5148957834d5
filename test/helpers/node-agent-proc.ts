// `bpfmesh node` as a child process for kernel tests: its JSON log parsed
// into records as it comes, waits on log records, and its admin server
// (/metrics, /ready, /live) over fresh connections (fetch's pooled ones
// would outlive a restarted agent). With a cgroup, the agent runs in it (under
// the node-wide attach root, so the hooks cover the node proxy's sockets).
import { mkdirSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { get as httpGet } from 'node:http';
import { CLI } from './mesh.js';

export interface LogRecord {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export async function until(what: string, pred: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Sum of a metric's samples (exposition text) whose line holds every one of the label texts; 0 when absent. */
export function metricSum(text: string, name: string, labels: string[] = []): number {
  let sum = 0;
  for (const l of text.split('\n')) {
    if (!l.startsWith(name + '{') || !labels.every((x) => l.includes(x))) continue;
    sum += Number(l.slice(l.lastIndexOf(' ') + 1));
  }
  return sum;
}

export class AgentProcess {
  readonly child: ChildProcess;
  readonly records: LogRecord[] = [];
  #buf = '';

  /** `bpfmesh node args...`; in `cgroup` when given (made if missing), in the network namespace `netns` when given. */
  constructor(args: string[], opts: { cgroup?: string; netns?: string; env?: NodeJS.ProcessEnv } = {}) {
    const env = { ...process.env, ...opts.env };
    const argv = [...(opts.netns === undefined ? [] : ['nsenter', `--net=${opts.netns}`, '--']), process.execPath, CLI, 'node', ...args];
    if (opts.cgroup === undefined) {
      this.child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env });
    } else {
      mkdirSync(opts.cgroup, { recursive: true });
      const script = 'echo $$ > "$0/cgroup.procs" && exec "$@"';
      this.child = spawn('sh', ['-c', script, opts.cgroup, ...argv], { stdio: ['ignore', 'ignore', 'pipe'], env });
    }
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => {
      this.#buf += d;
      for (let i = this.#buf.indexOf('\n'); i >= 0; i = this.#buf.indexOf('\n')) {
        const line = this.#buf.slice(0, i);
        this.#buf = this.#buf.slice(i + 1);
        try {
          this.records.push(JSON.parse(line) as LogRecord);
        } catch {
          this.records.push({ level: 50, msg: line });
        }
      }
    });
  }

  async waitLog(pred: (r: LogRecord) => boolean, what: string, timeoutMs = 15_000): Promise<LogRecord> {
    await until(what, () => this.records.some(pred) || this.child.exitCode !== null, timeoutMs);
    const hit = this.records.find(pred);
    if (!hit) throw new Error(`${what}: agent exited ${this.child.exitCode}: ${JSON.stringify(this.records.slice(-5))}`);
    return hit;
  }

  async admin(): Promise<string> {
    const r = await this.waitLog((x) => x.msg === 'admin server listening' && typeof x['admin'] === 'string', 'admin address');
    return `http://${String(r['admin'])}`;
  }

  async metrics(): Promise<string> {
    return (await this.get('/metrics')).body;
  }

  async get(path: string): Promise<{ status: number; body: string }> {
    const base = await this.admin();
    return new Promise((resolve, reject) => {
      httpGet(`${base}${path}`, { agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.once('end', () => resolve({ status: res.statusCode ?? 0, body }));
      }).once('error', reject);
    });
  }

  /** How many log records say msg. */
  count(msg: string): number {
    return this.records.filter((r) => r.msg === msg).length;
  }

  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve({ code: this.child.exitCode, signal: this.child.signalCode });
    return new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
  }
}
