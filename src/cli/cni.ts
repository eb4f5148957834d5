// bpfmesh cni: the chained CNI plugin entry (bin/bpfmesh-cni execs this).
// stdout carries only the CNI result or error object; logs go to stderr
// (which runtimes keep in their own log) or to bpfmesh.log_file.
import { openSync } from 'node:fs';
import { createLogger } from '../log/logger.js';
import { runCni } from '../cni/plugin.js';
import { getPodFromApi } from '../cni/kube-pod.js';
import type { CniNetConf } from '../cni/config.js';

export const usage = `bpfmesh cni               chained CNI plugin (ADD, DEL, CHECK, VERSION, STATUS, GC); run by the
                          container runtime as bin/bpfmesh-cni with CNI_* variables and the
                          network configuration on stdin (see README "CNI plugin")
`;

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) return '';
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function logger(conf: CniNetConf): ReturnType<typeof createLogger> {
  const fd = conf.bpfmesh.logFile === undefined ? 2 : openSync(conf.bpfmesh.logFile, 'a');
  return createLogger({ logFormat: conf.bpfmesh.logFormat, logLevel: conf.logLevel }, fd);
}

export async function run(argv: string[]): Promise<number> {
  void argv;
  const outcome = await runCni(process.env, await readStdin(), { getPod: getPodFromApi, logger });
  if (outcome.error !== undefined) process.stderr.write(`bpfmesh cni: ${process.env['CNI_COMMAND'] ?? '?'}: ${outcome.error.code}: ${outcome.error.message}\n`);
  process.stdout.write(outcome.stdout);
  return outcome.exitCode;
}
