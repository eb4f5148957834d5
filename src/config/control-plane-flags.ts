// Flags of `bpfmesh control-plane`. Parsed and checked here; the server gets
// typed options.
import { parseArgs } from 'node:util';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { Addr } from '../util/addr.js';
import { LOG_LEVELS, type LogLevel, type LogOptions } from './pod-flags.js';
import { parseListenAddr } from './proxy-env.js';

export const DEFAULT_STATE_DIR = '.bpfmesh-cp';

export interface ControlPlaneFlags extends LogOptions {
  /** mesh.yaml. */
  config: string;
  /** Generated trust anchor and issuer. */
  stateDir: string;
  /** Overrides mesh.yaml's listen. */
  listen: Addr | undefined;
  /** Overrides mesh.yaml's identityListen. */
  identityListen: Addr | undefined;
  /** Overrides mesh.yaml's policyListen. */
  policyListen: Addr | undefined;
  /** Serves /metrics, /live and /ready when given. */
  adminAddr: Addr | undefined;
}

const FLAGS = {
  config: { type: 'string' },
  'state-dir': { type: 'string', default: DEFAULT_STATE_DIR },
  listen: { type: 'string' },
  'identity-listen': { type: 'string' },
  'policy-listen': { type: 'string' },
  'admin-addr': { type: 'string' },
  'log-format': { type: 'string', default: 'plain' },
  'log-level': { type: 'string', default: 'info' },
} as const;

function badFlag(message: string): BpfmeshError {
  return new BpfmeshError(ErrorCodes.BAD_FLAG, message);
}

function addr(text: string | undefined, flag: string): Addr | undefined {
  if (text === undefined) return undefined;
  try {
    return parseListenAddr(text, flag);
  } catch {
    throw badFlag(`${flag}: "${text}" is not IP:PORT such as 127.0.0.1:8086 or [::1]:8086`);
  }
}

export function parseControlPlaneFlags(argv: string[]): ControlPlaneFlags {
  let v;
  try {
    v = parseArgs({ args: argv, options: FLAGS, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw badFlag(`bpfmesh control-plane: ${(err as Error).message}; see "bpfmesh control-plane --help"`);
  }
  if (v.config === undefined || v.config.trim() === '') throw badFlag('--config: the mesh.yaml to serve is required');
  const logFormat = v['log-format'];
  if (logFormat !== 'plain' && logFormat !== 'json') throw badFlag(`--log-format: "${logFormat}" is not one of plain, json`);
  const logLevel = v['log-level'].toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw badFlag(`--log-level: "${logLevel}" is not one of ${LOG_LEVELS.join(', ')}`);
  return {
    config: v.config,
    stateDir: v['state-dir'],
    listen: addr(v.listen, '--listen'),
    identityListen: addr(v['identity-listen'], '--identity-listen'),
    policyListen: addr(v['policy-listen'], '--policy-listen'),
    adminAddr: addr(v['admin-addr'], '--admin-addr'),
    logFormat,
    logLevel: logLevel as LogLevel,
  };
}
