// The CNI_* environment a runtime sets for each call (CNI spec, "Parameters").
// Read here and nowhere else; the plugin gets typed values.
import { ErrorCodes } from '../errors.js';
import { cniError } from './spec.js';

export const COMMANDS = ['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC'] as const;
export type CniCommand = (typeof COMMANDS)[number];

export interface CniEnv {
  command: CniCommand;
  containerId: string | undefined;
  /** Path of the container's network namespace; may be empty on DEL. */
  netns: string | undefined;
  ifname: string | undefined;
  /** CNI_ARGS: "K=V;K2=V2" (Kubernetes runtimes put K8S_POD_NAMESPACE, K8S_POD_NAME there). */
  args: Record<string, string>;
  path: string[];
}

// The spec's rule for container ids; it also makes a safe pin folder name.
const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$/;

export function parseCniArgs(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (text ?? '').split(';')) {
    if (pair.trim() === '') continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw cniError(ErrorCodes.CNI_ENV, `CNI_ARGS: "${pair}" is not KEY=VALUE; the runtime sets CNI_ARGS as K1=V1;K2=V2`);
    out[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
  }
  return out;
}

const nonEmpty = (v: string | undefined): string | undefined => (v === undefined || v.trim() === '' ? undefined : v.trim());

export function parseCniEnv(env: NodeJS.ProcessEnv): CniEnv {
  const command = nonEmpty(env['CNI_COMMAND'])?.toUpperCase();
  if (command === undefined || !(COMMANDS as readonly string[]).includes(command)) {
    throw cniError(ErrorCodes.CNI_ENV, `CNI_COMMAND is ${command === undefined ? 'not set' : `"${command}"`}; bpfmesh-cni is a CNI plugin run by a container runtime with CNI_COMMAND one of ${COMMANDS.join(', ')}`);
  }
  return {
    command: command as CniCommand,
    containerId: nonEmpty(env['CNI_CONTAINERID']),
    netns: nonEmpty(env['CNI_NETNS']),
    ifname: nonEmpty(env['CNI_IFNAME']),
    args: parseCniArgs(env['CNI_ARGS']),
    path: (env['CNI_PATH'] ?? '').split(':').filter(Boolean),
  };
}

/** The container id, required by ADD, DEL and CHECK; it names the pod's pins. */
export function requireContainerId(env: CniEnv): string {
  if (env.containerId === undefined) throw cniError(ErrorCodes.CNI_ENV, `CNI_CONTAINERID is not set; the runtime must set it for ${env.command}`);
  if (!CONTAINER_ID.test(env.containerId)) {
    throw cniError(ErrorCodes.CNI_ENV, `CNI_CONTAINERID "${env.containerId}" must be 1-200 of [A-Za-z0-9_.-], starting alphanumeric`);
  }
  return env.containerId;
}

/** The pin folder name of a container: bpffs refuses dots in names, so they become underscores. */
export const pinIdOf = (containerId: string): string => containerId.replace(/\./g, '_');

export function requireNetns(env: CniEnv): string {
  if (env.netns === undefined) throw cniError(ErrorCodes.CNI_ENV, `CNI_NETNS is not set; the runtime must give the pod's network namespace path for ${env.command}`);
  return env.netns;
}

export function requireIfname(env: CniEnv): string {
  if (env.ifname === undefined) throw cniError(ErrorCodes.CNI_ENV, `CNI_IFNAME is not set; the runtime must set it for ${env.command}`);
  return env.ifname;
}
