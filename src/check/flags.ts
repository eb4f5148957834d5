// Flags of `bpfmesh check`. Parsed here so that src/check/ owns its flags as
// a whole; the shapes follow src/config/pod-flags.ts.
import { parseArgs } from 'node:util';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { DEFAULT_BPFFS } from '../config/paths.js';
import type { CheckOptions } from './types.js';

export interface CheckFlags extends CheckOptions {
  json: boolean;
}

export function parseCheckFlags(argv: string[]): CheckFlags {
  let v;
  try {
    v = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        pre: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        node: { type: 'boolean', default: false },
        bpffs: { type: 'string' },
        'cgroup-root': { type: 'string' },
        cgroup: { type: 'string' },
        netns: { type: 'string' },
        'pod-name': { type: 'string' },
        'agent-ready': { type: 'string' },
      },
    }).values;
  } catch (err) {
    throw new BpfmeshError(ErrorCodes.BAD_FLAG, `bpfmesh check: ${(err as Error).message}; see "bpfmesh check --help"`);
  }
  const agentReady = v['agent-ready'];
  if (agentReady !== undefined && !/^http:\/\/[^/\s]+\/\S*$/.test(agentReady)) {
    throw new BpfmeshError(ErrorCodes.BAD_FLAG, `--agent-ready: "${agentReady}" is not an http:// URL such as http://127.0.0.1:4192/ready`);
  }
  const podName = v['pod-name'];
  if (podName !== undefined && !/^(node\/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$/.test(podName)) {
    throw new BpfmeshError(ErrorCodes.BAD_FLAG, `--pod-name: "${podName}" is not a pod install name or node/<id>`);
  }
  return {
    pre: v.pre,
    json: v.json,
    node: v.node,
    bpffs: v.bpffs ?? DEFAULT_BPFFS,
    bpffsExplicit: v.bpffs !== undefined,
    cgroupRoot: v['cgroup-root'],
    cgroup: v.cgroup,
    netns: v.netns,
    podName,
    agentReady,
  };
}
