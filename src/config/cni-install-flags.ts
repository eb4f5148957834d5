// Flags of `bpfmesh cni-install`, and the service-account environment it
// turns into a kubeconfig for the host-side plugin. Parsed and checked here;
// src/cni/installer.ts gets typed options.
import { parseArgs } from 'node:util';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { LOG_LEVELS, type LogLevel, type LogOptions } from './pod-flags.js';

export interface CniInstallFlags extends LogOptions {
  /** The plugin entry (linkerd-cni style JSON, the ConfigMap); required unless uninstalling. */
  config: string | undefined;
  cniConfDir: string;
  cniBinDir: string;
  bundleDir: string;
  /** Where the host's root is mounted in this container: stripped to get the paths the host sees. */
  hostRoot: string;
  /** The install to copy (dist/, build/, node_modules, ...); undefined = this one. */
  source: string | undefined;
  uninstall: boolean;
  watch: boolean;
  intervalMs: number;
  serviceAccountDir: string;
}

export const DEFAULTS = {
  cniConfDir: '/host/etc/cni/net.d',
  cniBinDir: '/host/opt/cni/bin',
  bundleDir: '/host/opt/bpfmesh',
  hostRoot: '/host',
  serviceAccountDir: '/var/run/secrets/kubernetes.io/serviceaccount',
  intervalSeconds: 10,
} as const;

const FLAGS = {
  config: { type: 'string' },
  'cni-conf-dir': { type: 'string', default: DEFAULTS.cniConfDir },
  'cni-bin-dir': { type: 'string', default: DEFAULTS.cniBinDir },
  'bundle-dir': { type: 'string', default: DEFAULTS.bundleDir },
  'host-root': { type: 'string', default: DEFAULTS.hostRoot },
  source: { type: 'string' },
  uninstall: { type: 'boolean', default: false },
  watch: { type: 'boolean', default: false },
  interval: { type: 'string', default: String(DEFAULTS.intervalSeconds) },
  'service-account-dir': { type: 'string', default: DEFAULTS.serviceAccountDir },
  'log-format': { type: 'string', default: 'plain' },
  'log-level': { type: 'string', default: 'info' },
} as const;

function badFlag(message: string): BpfmeshError {
  return new BpfmeshError(ErrorCodes.BAD_FLAG, message);
}

function absolute(value: string, flag: string): string {
  if (!value.startsWith('/')) throw badFlag(`${flag}: "${value}" must be an absolute path`);
  return value.length > 1 ? value.replace(/\/+$/, '') : value;
}

export function parseCniInstallFlags(argv: string[]): CniInstallFlags {
  let v;
  try {
    v = parseArgs({ args: argv, options: FLAGS, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw badFlag(`bpfmesh cni-install: ${(err as Error).message}; see "bpfmesh cni-install --help"`);
  }
  if (!v.uninstall && (v.config === undefined || v.config.trim() === '')) {
    throw badFlag('--config: the plugin configuration file (JSON, the ConfigMap) is required unless --uninstall');
  }
  if (v.uninstall && v.watch) throw badFlag('--uninstall and --watch exclude each other');
  if (!/^\d{1,5}$/.test(v.interval) || Number(v.interval) < 1 || Number(v.interval) > 86400) {
    throw badFlag(`--interval: "${v.interval}" is not a whole number of seconds between 1 and 86400`);
  }
  const logFormat = v['log-format'];
  if (logFormat !== 'plain' && logFormat !== 'json') throw badFlag(`--log-format: "${logFormat}" is not one of plain, json`);
  const logLevel = v['log-level'].toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw badFlag(`--log-level: "${logLevel}" is not one of ${LOG_LEVELS.join(', ')}`);
  // An empty --host-root means "paths are the same on the host" (the installer runs on the host).
  const hostRoot = v['host-root'] === '' || v['host-root'] === '/' ? '' : absolute(v['host-root'], '--host-root');
  return {
    config: v.config,
    cniConfDir: absolute(v['cni-conf-dir'], '--cni-conf-dir'),
    cniBinDir: absolute(v['cni-bin-dir'], '--cni-bin-dir'),
    bundleDir: absolute(v['bundle-dir'], '--bundle-dir'),
    hostRoot,
    source: v.source === undefined ? undefined : absolute(v.source, '--source'),
    uninstall: v.uninstall,
    watch: v.watch,
    intervalMs: Number(v.interval) * 1000,
    serviceAccountDir: v['service-account-dir'],
    logFormat,
    logLevel: logLevel as LogLevel,
  };
}

/** The API server as a pod sees it (the kubelet sets these in every container). */
export function apiServerFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const host = env['KUBERNETES_SERVICE_HOST'];
  const port = env['KUBERNETES_SERVICE_PORT'];
  if (host === undefined || host === '' || port === undefined || port === '') return undefined;
  return `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
}
