// The installed state (check without --pre): each pin folder's links are
// pinned and still attached (a link whose cgroup or netns is gone reports
// target 0), and the node-wide links sit on --cgroup-root.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { ErrorCodes } from '../errors.js';
import { native } from '../bpf/native.js';
import { LINKS, MapNames, type LinkSpec } from '../intercept/layout.js';
import { listEnrolled, nodePinDir, NODE_DIR_NAME, NODE_LOCK_NAME } from '../intercept/node-wide.js';
import { pinRoot } from '../intercept/pod.js';
import { hasMaps } from '../intercept/versions.js';
import { fail, pass, type CheckLine } from './types.js';

const CGROUP_LINKS = LINKS.filter((l) => l.target === 'cgroup');

/** Link pins of a folder that are missing or detached. */
function brokenLinks(dir: string, specs: readonly LinkSpec[], cgroupIno?: number, maps = true): string[] {
  const broken: string[] = [];
  for (const spec of specs) {
    const path = join(dir, spec.pin);
    if (!existsSync(path)) {
      broken.push(`${spec.pin} missing`);
      continue;
    }
    const link = native().openPinnedLink(path);
    try {
      const target = link.info().targetId;
      if (target === 0) broken.push(`${spec.pin} detached (its ${spec.target} is gone)`);
      else if (cgroupIno !== undefined && spec.target === 'cgroup' && target !== cgroupIno) broken.push(`${spec.pin} attached to another cgroup (id ${target})`);
    } finally {
      link.close();
    }
  }
  if (maps && !hasMaps(dir)) broken.push(`${MapNames.settings} missing`);
  return broken;
}

export function checkNodeInstall(bpffs: string, cgroupRoot: string): CheckLine {
  const dir = nodePinDir(bpffs);
  const title = 'node-wide install';
  if (!existsSync(dir)) return fail('installed.node', title, `nothing under ${dir}`, ErrorCodes.NOT_INSTALLED, 'start bpfmesh node (or let the CNI plugin install it)');
  const broken = brokenLinks(dir, CGROUP_LINKS, statSync(cgroupRoot).ino);
  if (broken.length > 0) return fail('installed.node', title, broken.join('; '), ErrorCodes.MISMATCH, 'restart bpfmesh node (it refreshes the node-wide install), or bpfmesh reset --node and start it again');
  const pods = listEnrolled({ bpffs, bpffsExplicit: true, cgroupRoot });
  const gone = pods.filter((p) => !p.alive).length;
  return pass('installed.node', title, `${CGROUP_LINKS.length} cgroup hooks on ${cgroupRoot}; ${pods.length} pod(s) enrolled${gone > 0 ? `, ${gone} with their netns gone (withdrawn by the agent or CNI DEL)` : ''}`);
}

export function checkPodInstall(bpffs: string, name: string): CheckLine {
  const dir = join(pinRoot(bpffs), name);
  const title = `pod install ${name}`;
  if (!existsSync(dir)) return fail(`installed.${name}`, title, `nothing under ${dir}`, ErrorCodes.NOT_INSTALLED, 'run bpfmesh init for this pod');
  const broken = brokenLinks(dir, LINKS);
  if (broken.length > 0) return fail(`installed.${name}`, title, broken.join('; '), ErrorCodes.MISMATCH, `run bpfmesh init again for this pod, or bpfmesh reset --pod-name ${name} if the pod is gone`);
  return pass(`installed.${name}`, title, `${LINKS.length} hooks attached`);
}

/** A pod enrolled node-wide: its sk_lookup link is pinned and still on its netns. */
export function checkNodePod(bpffs: string, id: string): CheckLine {
  const dir = join(nodePinDir(bpffs), 'pods', id);
  const title = `node-wide pod ${id}`;
  if (!existsSync(dir)) return fail(`installed.node.${id}`, title, `nothing under ${dir}`, ErrorCodes.NOT_INSTALLED, 'the pod is not enrolled: is it meshed, and does bpfmesh node (or the CNI plugin) run?');
  const broken = brokenLinks(dir, LINKS.filter((l) => l.target === 'netns'), undefined, false);
  if (broken.length > 0) return fail(`installed.node.${id}`, title, broken.join('; '), ErrorCodes.MISMATCH, 'the agent or CNI DEL withdraws pods whose netns is gone; if the pod runs, restart bpfmesh node');
  return pass(`installed.node.${id}`, title, 'sk_lookup attached to its netns');
}

/** podName: one pod install (node/<id>: one node-wide pod); node: the node-wide install; else everything found (at least one). */
export function checkInstalled(bpffs: string, cgroupRoot: string, node: boolean, podName: string | undefined): CheckLine[] {
  if (podName?.startsWith(`${NODE_DIR_NAME}/`)) return [checkNodeInstall(bpffs, cgroupRoot), checkNodePod(bpffs, podName.slice(NODE_DIR_NAME.length + 1))];
  if (podName !== undefined) return [checkPodInstall(bpffs, podName)];
  if (node) return [checkNodeInstall(bpffs, cgroupRoot)];
  const root = pinRoot(bpffs);
  const names = existsSync(root) ? readdirSync(root).filter((n) => n !== NODE_LOCK_NAME).sort() : [];
  if (names.length === 0) return [fail('installed', 'installed', `nothing under ${root}`, ErrorCodes.NOT_INSTALLED, 'install first (bpfmesh init, bpfmesh node, or the CNI plugin), or check before install with --pre')];
  return names.map((n) => (n === NODE_DIR_NAME ? checkNodeInstall(bpffs, cgroupRoot) : checkPodInstall(bpffs, n)));
}

/** How long the agent's /ready may take: the probe as a whole must fit Kubernetes' timeoutSeconds (5 in deploy/). */
export const AGENT_READY_TIMEOUT_MS = 3000;

/** The status of a GET, or why there is none. node:http, not fetch: loading undici costs seconds on slow machines. */
function getStatus(url: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = get(url, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.once('error', reject);
  });
}

/** The node agent's /ready: 200 once its first pod list is reconciled. */
export async function checkAgentReady(url: string): Promise<CheckLine> {
  const title = 'node agent ready';
  try {
    const status = await getStatus(url, AGENT_READY_TIMEOUT_MS);
    if (status === 200) return pass('agent_ready', title, `${url} answers 200`);
    return fail('agent_ready', title, `${url} answers ${status}`, ErrorCodes.NOT_READY, 'wait: the agent has not reconciled its pods yet; see its log if it stays so');
  } catch (err) {
    return fail('agent_ready', title, `${url}: ${(err as Error).message}`, ErrorCodes.NOT_READY, 'is bpfmesh node running with this --admin-addr?');
  }
}
