// Flags of `bpfmesh observe`.
import { parseArgs } from 'node:util';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { DEFAULT_BPFFS } from './paths.js';

export interface ObserveOptions {
  bpffs: string;
  /** A pod install's name, or node/<id> (a bare <id> also finds a node-wide pod). */
  pod: string | undefined;
  cgroup: string | undefined;
  follow: boolean;
  json: boolean;
  /** Stop after this many events; undefined: no limit. */
  limit: number | undefined;
  /** Without --follow: how long to watch, in ms. */
  durationMs: number;
}

export const DEFAULT_DURATION_S = 2;

function positiveInt(text: string, flag: string, max: number): number {
  if (!/^\d{1,9}$/.test(text) || Number(text) < 1 || Number(text) > max) {
    throw new BpfmeshError(ErrorCodes.BAD_FLAG, `${flag}: "${text}" is not a whole number from 1 to ${max}`);
  }
  return Number(text);
}

export function parseObserveFlags(argv: string[]): ObserveOptions {
  let v;
  try {
    v = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        pod: { type: 'string' },
        'pod-name': { type: 'string' },
        cgroup: { type: 'string' },
        follow: { type: 'boolean', short: 'f', default: false },
        json: { type: 'boolean', default: false },
        limit: { type: 'string' },
        duration: { type: 'string' },
        bpffs: { type: 'string' },
      },
    }).values;
  } catch (err) {
    throw new BpfmeshError(ErrorCodes.BAD_FLAG, `bpfmesh observe: ${(err as Error).message}; see "bpfmesh observe --help"`);
  }
  const pod = v.pod ?? v['pod-name'];
  if (pod !== undefined && v.cgroup !== undefined) throw new BpfmeshError(ErrorCodes.BAD_FLAG, 'bpfmesh observe: give --pod or --cgroup, not both');
  if (v.follow && v.duration !== undefined) throw new BpfmeshError(ErrorCodes.BAD_FLAG, 'bpfmesh observe: --duration is for a bounded watch; --follow runs until interrupted');
  return {
    bpffs: v.bpffs ?? DEFAULT_BPFFS,
    pod,
    cgroup: v.cgroup,
    follow: v.follow,
    json: v.json,
    limit: v.limit === undefined ? undefined : positiveInt(v.limit, '--limit', 1_000_000_000),
    durationMs: (v.duration === undefined ? DEFAULT_DURATION_S : positiveInt(v.duration, '--duration', 86_400)) * 1000,
  };
}
