// The chained CNI plugin: one call = one CNI command, decided from the
// CNI_* environment and the network configuration on stdin, answered with
// what goes on stdout and the exit code. No I/O of its own besides the
// node-wide install, the optional pod lookup and the logger, so the CLI
// (src/cli/cni.ts) stays a thin shell around it.
//
// Design (docs/design.md "State: one set of rows per pod"): at ADD time the pod's cgroup does
// not exist yet, so the intercept programs sit once at a node-wide cgroup
// (the cgroup2 root) and a pod is enrolled by its network namespace: rows
// keyed by the netns cookie plus an sk_lookup link in that netns, pinned
// under <bpffs>/bpfmesh/node/pods/<CNI_CONTAINERID>/.
import { existsSync } from 'node:fs';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { cgroup2Mount } from '../intercept/mounts.js';
import { netnsCookieOf } from '../intercept/pod.js';
import { addonBuilt, bpfObjectPath } from '../config/paths.js';
import type { PodPolicy } from '../intercept/rules.js';
import { formatCidr } from '../util/ip.js';
import { formatPortRange, rangeToPrefixes, type PortRange } from '../util/ports.js';
import * as node from '../intercept/node-wide.js';
import { applyAnnotations, isMeshed, type PodView } from './annotations.js';
import { confVersion, decodeConf, parseNetConf, type CniNetConf, type KubeSettings } from './config.js';
import { parseCniEnv, pinIdOf, requireContainerId, requireIfname, requireNetns, type CniEnv } from './env.js';
import { cniError, CniCode, isSupportedVersion, LATEST_VERSION, SUPPORTED_VERSIONS, toCniError, versionAtLeast } from './spec.js';

export interface CniOutcome {
  stdout: string;
  exitCode: number;
  /** The error's code when the call failed, for the CLI's stderr line. */
  error?: { code: string; message: string };
}

export interface CniDeps {
  /** Reads a pod from the Kubernetes API; null when it does not exist. */
  getPod(k8s: KubeSettings, namespace: string, name: string): Promise<PodView | null>;
  /** The logger for this call, once the configuration (log_level) is known. */
  logger(conf: CniNetConf): Logger;
  /** Inside the node agent with --proxy (the forwarded path): the node proxy serves the pods enrolled here that have no sidecar. */
  nodeProxy?: CniNodeProxy;
}

/** The node proxy as the plugin sees it when the node agent runs the call. */
export interface CniNodeProxy {
  /** Whether the node proxy is to serve this pod (it has no linkerd-proxy container of its own). */
  wants(pod: PodView): boolean;
  /** After the pod is enrolled with NODE_PROXY: opens its listeners in netns; false when that failed. */
  serve(id: string, netns: string, pod: PodView, policy: PodPolicy): Promise<boolean>;
  /** DEL: stops serving what was served for this container id (closing its netns fd). */
  withdraw(id: string): Promise<void>;
}

/** Runs one CNI command. Never throws: failures are CNI error objects. */
export async function runCni(envVars: NodeJS.ProcessEnv, stdin: string, deps: CniDeps): Promise<CniOutcome> {
  let version: string = LATEST_VERSION;
  try {
    const env = parseCniEnv(envVars);
    if (env.command === 'VERSION') return ok(versionInfo(stdin));
    const raw = decodeConf(stdin);
    version = confVersion(raw) ?? version;
    const conf = parseNetConf(raw);
    const log = deps.logger(conf).child({ component: 'cni', command: env.command, ...(env.containerId ? { containerId: env.containerId } : {}) });
    return ok(await dispatch(env, conf, deps, log));
  } catch (err) {
    const json = toCniError(err, version);
    const code = (err as Partial<BpfmeshError>).code;
    return { stdout: JSON.stringify(json) + '\n', exitCode: 1, error: { code: typeof code === 'string' ? code : ErrorCodes.INTERNAL, message: json.msg } };
  }
}

const ok = (stdout: string): CniOutcome => ({ stdout, exitCode: 0 });

/** VERSION: what we speak, in the version the runtime asked with when we know it. */
export function versionInfo(stdin: string): string {
  let asked: unknown;
  try {
    asked = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
  } catch {
    /* VERSION may come with no or partial config */
  }
  return JSON.stringify({ cniVersion: isSupportedVersion(asked) ? asked : LATEST_VERSION, supportedVersions: SUPPORTED_VERSIONS }) + '\n';
}

async function dispatch(env: CniEnv, conf: CniNetConf, deps: CniDeps, log: Logger): Promise<string> {
  switch (env.command) {
    case 'ADD':
      return add(env, conf, deps, log);
    case 'CHECK':
      return check(env, conf, deps, log);
    case 'DEL':
      return del(env, conf, deps, log);
    case 'STATUS':
      return status(conf);
    case 'GC':
      return gc(conf, log);
    default:
      throw cniError(ErrorCodes.CNI_ENV, `CNI_COMMAND ${env.command} is not handled`);
  }
}

export function scopeOf(conf: CniNetConf): node.NodeScope {
  return { bpffs: conf.bpfmesh.bpffs, bpffsExplicit: conf.bpfmesh.bpffsExplicit, cgroupRoot: conf.bpfmesh.cgroupRoot ?? cgroup2Mount() };
}

function requirePrevResult(conf: CniNetConf, command: string): Record<string, unknown> {
  if (conf.prevResult === undefined) {
    throw cniError(
      ErrorCodes.CNI_CONFIG,
      `prevResult is missing on ${command}: bpfmesh-cni is a chained plugin; list it after the plugin that creates the interface (bridge, ptp, calico...) in the "plugins" of a .conflist`,
    );
  }
  return conf.prevResult;
}

/**
 * The pod's policy (and the pod, when read), or null when the pod is to be
 * left alone: with a kubernetes block, pods that are not meshed (or calls
 * without a pod name, as linkerd-cni does); without one, every pod gets the
 * block's settings (inside the node agent with --proxy the pod is still read,
 * for the node proxy).
 */
async function podPolicy(env: CniEnv, conf: CniNetConf, deps: CniDeps, log: Logger): Promise<{ policy: PodPolicy; pod: PodView | null } | null> {
  const ns = env.args['K8S_POD_NAMESPACE'];
  const name = env.args['K8S_POD_NAME'];
  if (conf.kubernetes === undefined) {
    const pod = deps.nodeProxy !== undefined && ns && name ? await deps.getPod({ apiRoot: undefined, kubeconfig: undefined }, ns, name) : null;
    return { policy: normalizePolicy(conf.policy), pod };
  }
  if (!ns || !name) {
    log.info('no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS; not a Kubernetes pod, left alone');
    return null;
  }
  const pod = await deps.getPod(conf.kubernetes, ns, name);
  if (pod === null) {
    throw new BpfmeshError(ErrorCodes.NOT_FOUND, `pod ${ns}/${name} is not in the Kubernetes API; the runtime will retry the sandbox once the pod exists`);
  }
  if (!isMeshed(pod)) {
    log.info({ pod: `${ns}/${name}` }, 'pod is not meshed (no linkerd.io/inject: enabled); left alone');
    return null;
  }
  return { policy: normalizePolicy(applyAnnotations(conf.policy, pod.metadata?.annotations)), pod };
}

/** Whether the node proxy (the agent running this call) serves the pod; its policy then carries NODE_PROXY. */
function withNodeProxy(found: { policy: PodPolicy; pod: PodView | null }, deps: CniDeps): { policy: PodPolicy; pod: PodView | null; served: boolean } {
  const served = deps.nodeProxy !== undefined && found.pod !== null && deps.nodeProxy.wants(found.pod);
  return { ...found, policy: served ? { ...found.policy, nodeProxy: true } : found.policy, served };
}

/**
 * The id this netns is enrolled under node-wide, when it is not ours: the
 * node agent met the pod first (its sandbox ran before the runtime called
 * us) and enrolled it under its UID. One set of rows and one sk_lookup
 * link per pod, so that enrollment stands and this call leaves the pod alone.
 */
function enrolledElsewhere(scope: node.NodeScope, id: string, netns: string): string | null {
  const other = node.nodeEnrollmentOf(scope.bpffs, netnsCookieOf(netns));
  return other !== null && other !== id ? other : null;
}

function describePolicy(p: PodPolicy): Record<string, unknown> {
  return {
    incomingProxyPort: p.incomingProxyPort,
    outgoingProxyPort: p.outgoingProxyPort,
    proxyUid: p.proxyUid,
    proxyGid: p.proxyGid ?? null,
    inboundPortsToIgnore: p.inboundPortsToIgnore.map(formatPortRange).join(','),
    outboundPortsToIgnore: p.outboundPortsToIgnore.map(formatPortRange).join(','),
    portsToRedirect: p.portsToRedirect.map(formatPortRange).join(','),
    subnetsToIgnore: p.subnetsToIgnore.map(formatCidr).join(','),
  };
}

/**
 * Drops repeated port blocks and subnets, and inbound ignores of the admin
 * and control ports (always ignored anyway): linkerd-cni's default config
 * lists "4191","4190", and a row asked for twice reads back as a difference.
 */
export function normalizePolicy(p: PodPolicy): PodPolicy {
  // Compared as the aligned blocks the map rows are made of: "8000-8002" and "8002" share one.
  const uniq = (ranges: PortRange[], drop: number[] = []): PortRange[] => {
    const seen = new Set(drop.map((port) => `${port}-${port}`));
    const blocks = ranges.flatMap((r) => rangeToPrefixes(r.lo, r.hi).map((b) => ({ lo: b.port, hi: b.port + 2 ** (16 - b.bits) - 1 })));
    return blocks.filter((r) => !seen.has(`${r.lo}-${r.hi}`) && seen.add(`${r.lo}-${r.hi}`));
  };
  const cidrs = new Set<string>();
  return {
    ...p,
    inboundPortsToIgnore: uniq(p.inboundPortsToIgnore, [p.adminPort, p.controlPort]),
    outboundPortsToIgnore: uniq(p.outboundPortsToIgnore),
    portsToRedirect: uniq(p.portsToRedirect),
    subnetsToIgnore: p.subnetsToIgnore.filter((c) => !cidrs.has(formatCidr(c)) && cidrs.add(formatCidr(c))),
  };
}

async function add(env: CniEnv, conf: CniNetConf, deps: CniDeps, log: Logger): Promise<string> {
  const id = pinIdOf(requireContainerId(env));
  requireIfname(env);
  const netns = requireNetns(env);
  const prev = requirePrevResult(conf, 'ADD');
  const result = JSON.stringify(prev) + '\n';
  const found = await podPolicy(env, conf, deps, log);
  if (found === null) return result;
  const { policy, pod, served } = withNodeProxy(found, deps);
  if (conf.simulate) {
    log.info({ netns, policy: describePolicy(policy), nodeProxy: served }, 'simulate: would enroll the pod; nothing changed');
    return result;
  }
  const started = process.hrtime.bigint();
  const scope = scopeOf(conf);
  const install = node.ensureNodeInstall(scope, log);
  // No await from this check to the enrollment: inside the agent, its own enrollments cannot slip in between.
  const other = enrolledElsewhere(scope, id, netns);
  if (other !== null) {
    log.info({ netns, enrolledAs: other }, 'pod is enrolled node-wide under another id already (the node agent met it first); left alone');
    return result;
  }
  const r = node.enrollPod(scope, id, netns, policy, log);
  log.info(
    { netns, netnsCookie: r.netnsCookie.toString(), nodeInstallFresh: install.fresh, fresh: r.fresh, policy: describePolicy(policy), nodeProxy: served, ms: Number(process.hrtime.bigint() - started) / 1e6 },
    r.fresh ? 'pod enrolled' : 'pod enrollment updated',
  );
  if (served && !(await deps.nodeProxy!.serve(id, netns, pod!, policy))) {
    // Enrolled for a proxy that is not there, its app would start with every connection refused: undo, let the runtime retry.
    node.withdrawPod(scope, id, log);
    throw new BpfmeshError(ErrorCodes.UNAVAILABLE, `the node proxy could not open the listeners of pod ${env.args['K8S_POD_NAMESPACE']}/${env.args['K8S_POD_NAME']} in ${netns} (see the node agent's log); the runtime will retry the sandbox`);
  }
  return result;
}

async function check(env: CniEnv, conf: CniNetConf, deps: CniDeps, log: Logger): Promise<string> {
  if (!versionAtLeast(conf.cniVersion, '0.4.0')) {
    throw cniError(ErrorCodes.CNI_VERSION, `CHECK needs cniVersion 0.4.0 or newer; this configuration says ${conf.cniVersion}`);
  }
  const id = pinIdOf(requireContainerId(env));
  requireIfname(env);
  const netns = requireNetns(env);
  requirePrevResult(conf, 'CHECK');
  const found = await podPolicy(env, conf, deps, log);
  if (found === null || conf.simulate) return '';
  const scope = scopeOf(conf);
  const other = enrolledElsewhere(scope, id, netns);
  if (other !== null) {
    log.debug({ enrolledAs: other }, 'pod is enrolled under another id (the node agent); nothing of ours to verify');
    return '';
  }
  node.verifyPod(scope, id, netns, withNodeProxy(found, deps).policy);
  log.debug('interception verified');
  return '';
}

/** DEL succeeds whenever nothing is left: a second DEL, a gone netns, a node never installed. */
async function del(env: CniEnv, conf: CniNetConf, deps: CniDeps, log: Logger): Promise<string> {
  const id = pinIdOf(requireContainerId(env));
  if (conf.simulate) {
    log.info('simulate: would withdraw the pod; nothing changed');
    return '';
  }
  const withdrawn = existsSync(node.nodePinDir(conf.bpfmesh.bpffs)) && node.withdrawPod(scopeOf(conf), id, log);
  // After the rows: the pod's listeners and its netns fd go too, so its namespace can be freed.
  await deps.nodeProxy?.withdraw(id);
  log.info({ withdrawn }, withdrawn ? 'pod withdrawn' : 'nothing was enrolled for this container');
  return '';
}

/** STATUS (1.1.0): ready to ADD when the addon and the BPF objects are there. */
async function status(conf: CniNetConf): Promise<string> {
  const missing = [!addonBuilt() ? 'the native addon' : '', !existsSync(bpfObjectPath('intercept')) ? bpfObjectPath('intercept') : ''].filter(Boolean);
  if (missing.length > 0) {
    throw Object.assign(cniError(ErrorCodes.OBJECT_MISSING, `bpfmesh-cni cannot install: ${missing.join(' and ')} missing; reinstall bpfmesh`), { cniCode: CniCode.PLUGIN_NOT_AVAILABLE });
  }
  void conf;
  return '';
}

/**
 * GC (1.1.0): withdraws enrollments the runtime no longer has whose netns is
 * gone. Live netns are kept even when not listed: the node agent may enroll
 * pods under other ids in the same scope.
 */
async function gc(conf: CniNetConf, log: Logger): Promise<string> {
  if (conf.validAttachments === undefined || !existsSync(node.nodePinDir(conf.bpfmesh.bpffs))) return '';
  const valid = new Set(conf.validAttachments.map((a) => a.containerId));
  const scope = scopeOf(conf);
  for (const e of node.listEnrolled(scope)) {
    if (!e.alive && !valid.has(e.id)) log.info({ id: e.id, withdrawn: node.withdrawPod(scope, e.id, log) }, 'gc: stale enrollment removed');
  }
  return '';
}
