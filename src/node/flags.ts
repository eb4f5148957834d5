// Flags of `bpfmesh node`. Pod defaults have the meaning and defaults of
// `bpfmesh init`'s flags: they go through the same parser, so both commands
// validate them alike.
import { parseArgs } from 'node:util';
import { isIP } from 'node:net';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { DEFAULT_BPFFS } from '../config/paths.js';
import { LOG_LEVELS, parseInitFlags, type LogOptions } from '../config/pod-flags.js';
import type { PodPolicy } from '../intercept/rules.js';

export interface NodeOptions extends LogOptions {
  nodeName: string;
  /** undefined = the in-cluster service account. */
  kubeconfig: string | undefined;
  /** undefined = the cgroup2 mount point. */
  cgroupRoot: string | undefined;
  hostProc: string;
  bpffs: string;
  bpffsExplicit: boolean;
  adminHost: string;
  adminPort: number;
  /** The pod defaults, as `bpfmesh init` would parse them; annotations override them per pod. */
  podDefaultArgs: string[];
  podDefaults: PodPolicy;
  /** --proxy: also run the proxy of every enrolled pod (the node proxy). */
  proxy: boolean;
  /** --proxy-workers: node proxy processes besides the agent's own (0: the agent alone). */
  proxyWorkers: number;
  /** --cni-socket: serve bin/bpfmesh-cni's calls here (undefined: not). */
  cniSocket: string | undefined;
}

/** Flags that mean what they mean for `bpfmesh init`. */
const POD_DEFAULT_FLAGS = {
  'incoming-proxy-port': { type: 'string' },
  'outgoing-proxy-port': { type: 'string' },
  'proxy-uid': { type: 'string' },
  'proxy-gid': { type: 'string' },
  'admin-port': { type: 'string' },
  'control-port': { type: 'string' },
  'fail-open': { type: 'boolean' },
  'no-sockpath': { type: 'boolean' },
  'sockpath-high-water': { type: 'string' },
} as const;

const NODE_FLAGS = {
  'node-name': { type: 'string' },
  kubeconfig: { type: 'string' },
  'cgroup-root': { type: 'string' },
  'host-proc': { type: 'string', default: '/proc' },
  bpffs: { type: 'string' },
  'admin-addr': { type: 'string', default: '0.0.0.0:4192' },
  'log-format': { type: 'string', default: 'plain' },
  'log-level': { type: 'string', default: 'info' },
  proxy: { type: 'boolean', default: false },
  'cni-socket': { type: 'string' },
  'proxy-workers': { type: 'string', default: '0' },
  ...POD_DEFAULT_FLAGS,
} as const;

export function parseHostPort(text: string, flag: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text.trim());
  const host = m?.[1] ?? m?.[2] ?? '';
  const port = Number(m?.[3]);
  if (!m || port > 65535 || (host !== '' && isIP(host) === 0 && host !== 'localhost')) {
    throw new BpfmeshError(ErrorCodes.BAD_FLAG, `${flag}: "${text}" is not HOST:PORT, e.g. 0.0.0.0:4192 or [::]:4192`);
  }
  return { host: host === '' ? '0.0.0.0' : host, port };
}

/** Turns the pod-default flag values back into `bpfmesh init` arguments. */
function podArgs(values: Record<string, string | boolean | undefined>): string[] {
  const args: string[] = [];
  for (const name of Object.keys(POD_DEFAULT_FLAGS)) {
    const v = values[name];
    if (v === undefined || v === false) continue;
    args.push(`--${name}`, ...(v === true ? [] : [v]));
  }
  return args;
}

export function toPolicy(o: PodPolicy): PodPolicy {
  return {
    incomingProxyPort: o.incomingProxyPort,
    outgoingProxyPort: o.outgoingProxyPort,
    adminPort: o.adminPort,
    controlPort: o.controlPort,
    proxyUid: o.proxyUid,
    proxyGid: o.proxyGid,
    inboundPortsToIgnore: o.inboundPortsToIgnore,
    outboundPortsToIgnore: o.outboundPortsToIgnore,
    portsToRedirect: o.portsToRedirect,
    subnetsToIgnore: o.subnetsToIgnore,
    failOpen: o.failOpen,
    sockpath: o.sockpath,
    sockpathHighWater: o.sockpathHighWater,
  };
}

function workersOf(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > 64) throw new BpfmeshError(ErrorCodes.BAD_FLAG, `--proxy-workers: "${text}" is not a number of processes 0..64 (besides the agent's own)`);
  return n;
}

export function parseNodeFlags(argv: string[], env: NodeJS.ProcessEnv = process.env): NodeOptions {
  let v: ReturnType<typeof parseArgs<{ args: string[]; options: typeof NODE_FLAGS; strict: true; allowPositionals: false }>>['values'];
  try {
    v = parseArgs({ args: argv, options: NODE_FLAGS, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new BpfmeshError(ErrorCodes.BAD_FLAG, `bpfmesh node: ${(err as Error).message}; see "bpfmesh node --help"`);
  }
  const nodeName = v['node-name'] ?? env['NODE_NAME'] ?? '';
  if (nodeName.trim() === '') {
    throw new BpfmeshError(ErrorCodes.BAD_FLAG, '--node-name: required (or NODE_NAME); in a DaemonSet set it from the downward API, fieldRef spec.nodeName');
  }
  const logFormat = v['log-format'];
  if (logFormat !== 'plain' && logFormat !== 'json') throw new BpfmeshError(ErrorCodes.BAD_FLAG, `--log-format: "${logFormat}" is not one of plain, json`);
  const logLevel = v['log-level'].toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw new BpfmeshError(ErrorCodes.BAD_FLAG, `--log-level: "${logLevel}" is not one of ${LOG_LEVELS.join(', ')}`);
  const admin = parseHostPort(v['admin-addr'], '--admin-addr');
  const podDefaultArgs = podArgs(v);
  return {
    logFormat,
    logLevel: logLevel as LogOptions['logLevel'],
    nodeName: nodeName.trim(),
    kubeconfig: v.kubeconfig,
    cgroupRoot: v['cgroup-root']?.replace(/\/+$/, '') || undefined,
    hostProc: v['host-proc'].replace(/\/+$/, '') || '/proc',
    bpffs: v.bpffs ?? DEFAULT_BPFFS,
    bpffsExplicit: v.bpffs !== undefined,
    adminHost: admin.host,
    adminPort: admin.port,
    podDefaultArgs,
    podDefaults: toPolicy(parseInitFlags(podDefaultArgs)),
    proxy: v.proxy,
    cniSocket: v['cni-socket'],
    proxyWorkers: workersOf(v['proxy-workers']),
  };
}
