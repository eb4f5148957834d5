// A container runtime's CNI side, as libcni does it: for each plugin of a
// conflist, exec CNI_PATH/<type> with the CNI_* environment and the plugin's
// config (name and cniVersion from the list, prevResult from the plugin
// before) on stdin. ADD goes forward, CHECK forward with the cached result,
// DEL backward with the cached result. Plugins run inside a given network
// namespace (the test's "host") via nsenter, with a minimal environment.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export type Json = Record<string, unknown>;

export interface CniRuntime {
  /** Folders searched for plugin binaries, as CNI_PATH. */
  cniPath: string[];
  /** Network namespace the plugins run in (/run/netns/NAME); undefined = ours. */
  hostNetns?: string;
  /** Extra environment (runtimes pass little; BPFMESH_NODE here). */
  env?: Record<string, string>;
}

export interface Attachment {
  containerId: string;
  netns: string;
  ifname: string;
  /** CNI_ARGS, e.g. K8S_POD_NAMESPACE / K8S_POD_NAME. */
  args?: Record<string, string>;
}

export interface PluginRun {
  type: string;
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A plugin's CNI error object, with what it wrote to stderr. */
export class CniCallError extends Error {
  readonly type: string;
  readonly cni: { code?: number; msg?: string; details?: string } | null;
  readonly run: PluginRun;
  constructor(run: PluginRun) {
    let cni: CniCallError['cni'] = null;
    try {
      cni = JSON.parse(run.stdout) as CniCallError['cni'];
    } catch {
      /* not JSON: reported raw */
    }
    super(`${run.type} failed (exit ${run.code}): ${run.stdout.trim()} ${run.stderr.trim()}`);
    this.type = run.type;
    this.cni = cni;
    this.run = run;
  }
}

function findPlugin(rt: CniRuntime, type: string): string {
  for (const dir of rt.cniPath) if (existsSync(join(dir, type))) return join(dir, type);
  throw new Error(`plugin ${type} not found in ${rt.cniPath.join(':')}`);
}

/** Runs one plugin once; resolves with its exit and output whatever they are. */
export function execPlugin(rt: CniRuntime, type: string, command: string, att: Partial<Attachment>, stdin: string, timeoutMs = 30_000): Promise<PluginRun> {
  const env: Record<string, string> = {
    CNI_COMMAND: command,
    CNI_CONTAINERID: att.containerId ?? '',
    CNI_NETNS: att.netns ?? '',
    CNI_IFNAME: att.ifname ?? '',
    CNI_ARGS: Object.entries(att.args ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .join(';'),
    CNI_PATH: rt.cniPath.join(':'),
    ...rt.env,
  };
  const bin = findPlugin(rt, type);
  const argv = rt.hostNetns === undefined ? [bin] : ['/usr/bin/nsenter', `--net=${rt.hostNetns}`, '--', bin];
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ type, code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
    child.stdin.end(stdin);
  });
}

/** libcni's buildOneConfig: the plugin's entry with the list's name and cniVersion, and prevResult. */
export function pluginConfig(list: Json, plugin: Json, prevResult: Json | undefined): Json {
  return { ...plugin, name: list['name'], cniVersion: list['cniVersion'], ...(prevResult !== undefined ? { prevResult } : {}) };
}

const pluginsOf = (list: Json): Json[] => list['plugins'] as Json[];

export interface AddResult {
  /** The last plugin's result: what the runtime caches. */
  result: Json;
  /** Each plugin's result, in order. */
  perPlugin: Json[];
}

export async function addNetworkList(rt: CniRuntime, list: Json, att: Attachment): Promise<AddResult> {
  let prev: Json | undefined;
  const perPlugin: Json[] = [];
  for (const plugin of pluginsOf(list)) {
    const type = plugin['type'] as string;
    const run = await execPlugin(rt, type, 'ADD', att, JSON.stringify(pluginConfig(list, plugin, prev)));
    if (run.code !== 0) throw new CniCallError(run);
    prev = JSON.parse(run.stdout) as Json;
    perPlugin.push(prev);
  }
  return { result: prev!, perPlugin };
}

export async function checkNetworkList(rt: CniRuntime, list: Json, att: Attachment, cached: Json): Promise<void> {
  for (const plugin of pluginsOf(list)) {
    const run = await execPlugin(rt, plugin['type'] as string, 'CHECK', att, JSON.stringify(pluginConfig(list, plugin, cached)));
    if (run.code !== 0) throw new CniCallError(run);
  }
}

/** DEL in reverse order; every plugin is called even when one fails (the first error is thrown after). */
export async function delNetworkList(rt: CniRuntime, list: Json, att: Partial<Attachment>, cached: Json | undefined): Promise<PluginRun[]> {
  const runs: PluginRun[] = [];
  for (const plugin of [...pluginsOf(list)].reverse()) {
    runs.push(await execPlugin(rt, plugin['type'] as string, 'DEL', att, JSON.stringify(pluginConfig(list, plugin, cached))));
  }
  const failed = runs.find((r) => r.code !== 0);
  if (failed !== undefined) throw new CniCallError(failed);
  return runs;
}
