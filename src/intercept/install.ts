// Installing and removing a pod's interception: the proxy-init replacement.
//
// Install is idempotent and converges: the objects are loaded fresh, libbpf
// reuses the pod's pinned maps (so live records and sockets survive), links
// that already exist get the new program atomically (BPF_LINK_UPDATE), and
// the policy rows are reconciled. A first install that fails half-way is
// rolled back; a re-run that fails leaves the previous install working.
// Maps pinned by a release of another layout are carried over first
// (upgrade.ts), under the node lock.
import { existsSync, mkdirSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { BpfmeshError, ErrorCodes, errorCode, withContext } from '../errors.js';
import { bpfObjectPath } from '../config/paths.js';
import type { LogFns, Logger } from '../log/logger.js';
import { native, type NativeLink, type NativeObject } from '../bpf/native.js';
import * as c from '../bpf/codecs.js';
import { LINKS, SOCKMAP_PROGRAMS, closeMaps, mapsOfObject, mapsOfPinDir, MapNames, type LinkSpec } from './layout.js';
import { ensureBpffs } from './mounts.js';
import { netnsAddressesOf, netnsCookieOf, pinRoot, withFd, type Pod } from './pod.js';
import { deletePodRows, writePolicy, type PodPolicy, type PolicyWriteResult } from './rules.js';
import { abortLayout, copyRows, finishLayout, planLayout, prepareLayout, type LayoutPlan } from './upgrade.js';
import { hasMaps, isLayoutDirName, LOCK_NAME } from './versions.js';
import { withDirLock } from './node-lock.js';

export interface InstallResult {
  pod: Pod;
  netnsCookie: bigint;
  fresh: boolean;
  links: Array<{ pin: string; action: 'attached' | 'updated' }>;
  policy: PolicyWriteResult;
  /** Set when maps of other layouts were carried over (upgrade in place). */
  upgraded?: { from: string[]; to: string };
}

/** How long an upgrade waits for the node lock (the node-wide installers hold it for as long). */
export const UPGRADE_LOCK_WAIT_MS = 10_000;

/** Runs fn under the node lock when plan carries other layouts over (two upgrades of one folder must not interleave). */
export function withUpgradeLock<T>(bpffs: string, pinDir: string, fn: (plan: LayoutPlan) => T): T {
  const plan = planLayout(pinDir);
  if (plan.others.length === 0) return fn(plan);
  return withDirLock(join(pinRoot(bpffs), LOCK_NAME), UPGRADE_LOCK_WAIT_MS, () => fn(planLayout(pinDir)));
}

export function openAndLoad(name: 'intercept' | 'inbound', pinDir: string, rodata?: Buffer): NativeObject {
  const path = bpfObjectPath(name);
  if (!existsSync(path)) {
    throw new BpfmeshError(ErrorCodes.OBJECT_MISSING, `BPF object ${path} is missing; build it with "npm install" (needs clang, bpftool, libbpf-dev)`);
  }
  let obj: NativeObject;
  try {
    obj = native().openObject(path, { pinRoot: pinDir });
  } catch (err) {
    throw withContext(err, `opening ${path}`);
  }
  try {
    if (rodata !== undefined) {
      if (obj.rodataSize() !== rodata.length) {
        throw new BpfmeshError(ErrorCodes.CODEC_MISMATCH, `${path}: .rodata is ${obj.rodataSize()} B, expected ${rodata.length} B; rebuild (npm install)`);
      }
      obj.setRodata(rodata);
    }
    obj.load();
    return obj;
  } catch (err) {
    obj.close();
    const code = errorCode(err);
    if (code === ErrorCodes.VERIFIER) throw withContext(err, `the kernel's verifier rejected ${path}`);
    if (code === ErrorCodes.EXISTS) {
      throw new BpfmeshError(ErrorCodes.INCOMPATIBLE_PINS, `${pinDir} holds maps of another bpfmesh version; run "bpfmesh reset" for this pod, then init again`, { cause: err });
    }
    throw withContext(err, `loading ${path}`);
  }
}

/** Attaches spec's program to targetFd and pins the link in pinDir, or swaps the program of a link already pinned there. */
export function attachOrUpdate(spec: LinkSpec, obj: NativeObject, pinDir: string, targetFd: number, targetPath: string): 'attached' | 'updated' {
  const prog = obj.program(spec.program);
  const pinPath = join(pinDir, spec.pin);
  if (existsSync(pinPath)) {
    const link = native().openPinnedLink(pinPath);
    try {
      link.updateProgram(prog);
    } finally {
      link.close();
    }
    return 'updated';
  }
  let link: NativeLink;
  try {
    link = spec.target === 'cgroup' ? prog.attachCgroup(targetFd) : prog.attachNetns(targetFd);
  } catch (err) {
    throw withContext(err, `attaching ${spec.program} to ${targetPath}`);
  }
  try {
    link.pin(pinPath);
  } finally {
    // An unpinned link detaches here, so a failed pin leaves nothing attached.
    link.close();
  }
  return 'attached';
}

export function install(pod: Pod, policy: PodPolicy, bpffs: { dir: string; explicit: boolean }, log: LogFns): InstallResult {
  ensureBpffs(bpffs.dir, bpffs.explicit);
  const netnsCookie = netnsCookieOf(pod.netnsPath);
  return withUpgradeLock(bpffs.dir, pod.pinDir, (plan) => installWith(plan, pod, netnsCookie, policy, log));
}

function installWith(plan: LayoutPlan, pod: Pod, netnsCookie: bigint, policy: PodPolicy, log: LogFns): InstallResult {
  const fresh = !existsSync(pod.pinDir) || readdirSync(pod.pinDir).length === 0;
  const upgrading = plan.others.length > 0;
  try {
    mkdirSync(pod.pinDir, { recursive: true });
  } catch (err) {
    throw withContext(err, `creating ${pod.pinDir}`);
  }
  const objects: NativeObject[] = [];
  const created: string[] = [];
  let swapped = false;
  const previousSettings = fresh || upgrading ? null : safeSettings(pod.pinDir, netnsCookie);
  try {
    prepareLayout(plan);
    const intercept = openAndLoad('intercept', plan.mapsDir);
    objects.push(intercept);
    const inbound = openAndLoad('inbound', plan.mapsDir, c.inboundRodata.encode({ podNetnsCookie: netnsCookie }));
    objects.push(inbound);
    if (upgrading) copyRows(plan, log);
    const maps = mapsOfObject(intercept);
    let policyResult: PolicyWriteResult;
    try {
      policyResult = writePolicy(maps, netnsCookie, policy, netnsAddressesOf(pod.netnsPath));
      const pairs = intercept.map(MapNames.sockPairs);
      for (const spec of SOCKMAP_PROGRAMS) intercept.program(spec.program).attachToMap(pairs.fd, spec.kind);
    } finally {
      closeMaps(maps);
    }
    const links: InstallResult['links'] = [];
    withFd(pod.cgroupPath, 'cgroup', (cgroupFd) =>
      withFd(pod.netnsPath, 'network namespace', (netnsFd) => {
        for (const spec of LINKS) {
          const obj = spec.object === 'intercept' ? intercept : inbound;
          const action = spec.target === 'cgroup' ? attachOrUpdate(spec, obj, pod.pinDir, cgroupFd, pod.cgroupPath) : attachOrUpdate(spec, obj, pod.pinDir, netnsFd, pod.netnsPath);
          if (action === 'attached') created.push(join(pod.pinDir, spec.pin));
          else swapped = true;
          links.push({ pin: spec.pin, action });
          log.debug({ program: spec.program, pin: spec.pin, action }, 'hook in place');
        }
      }),
    );
    // Rows the old programs wrote between the first copy and the swap.
    if (upgrading) copyRows(plan, log);
    finishLayout(plan, log);
    const upgraded = upgrading ? { from: plan.others.map((o) => o.id), to: plan.id } : undefined;
    return { pod, netnsCookie, fresh, links, policy: policyResult, ...(upgraded === undefined ? {} : { upgraded }) };
  } catch (err) {
    if (fresh) {
      log.warn({ pod: pod.name, err: (err as Error).message }, 'install failed; removing what it made');
      removePins(pod.pinDir, log);
    } else {
      for (const pin of created) detachAndUnpin(pin, log);
      // Before any swap the old layout still serves everything; after one, a re-run finishes the upgrade.
      if (upgrading && !swapped) abortLayout(plan);
      if (previousSettings !== null) restoreSettings(pod.pinDir, netnsCookie, previousSettings);
    }
    throw err;
  } finally {
    for (const o of objects) o.close();
  }
}

function safeSettings(pinDir: string, netnsCookie: bigint): c.PodSettings | null {
  try {
    const maps = mapsOfPinDir(pinDir);
    try {
      return maps.settings.get(netnsCookie);
    } finally {
      closeMaps(maps);
    }
  } catch {
    return null;
  }
}

function restoreSettings(pinDir: string, netnsCookie: bigint, s: c.PodSettings): void {
  const maps = mapsOfPinDir(pinDir);
  try {
    maps.settings.set(netnsCookie, s);
  } finally {
    closeMaps(maps);
  }
}

export function detachAndUnpin(path: string, log: LogFns): void {
  try {
    if (native().pinnedKind(path) === 'link') {
      const link = native().openPinnedLink(path);
      try {
        link.detach();
      } finally {
        link.close();
      }
    }
    native().unpin(path);
  } catch (err) {
    if (errorCode(err) !== ErrorCodes.NOT_FOUND) log.warn({ path, err: (err as Error).message }, 'could not remove pin');
  }
}

/** Unpins the maps folders (v<layout>/) of an install folder and removes them; returns what was unpinned. */
export function removeLayoutDirs(pinDir: string, log: LogFns): string[] {
  const removed: string[] = [];
  for (const d of readdirSync(pinDir).filter(isLayoutDirName)) {
    for (const n of readdirSync(join(pinDir, d))) {
      detachAndUnpin(join(pinDir, d, n), log);
      removed.push(`${d}/${n}`);
    }
    rmdirSync(join(pinDir, d));
  }
  return removed;
}

/** Detaches every link pinned in pinDir, unpins everything (maps folders too), removes the folder. */
export function removePins(pinDir: string, log: LogFns): string[] {
  if (!existsSync(pinDir)) return [];
  const names = readdirSync(pinDir);
  // Links first, so nothing steers into maps that are going away.
  const links = names.filter((n) => n.startsWith('link_'));
  for (const n of links) detachAndUnpin(join(pinDir, n), log);
  const maps = removeLayoutDirs(pinDir, log);
  const rest = names.filter((n) => !n.startsWith('link_') && !isLayoutDirName(n));
  for (const n of rest) detachAndUnpin(join(pinDir, n), log);
  rmdirSync(pinDir);
  return [...links, ...maps, ...rest];
}

export interface UninstallResult {
  pod: string;
  removed: string[];
}

/**
 * Removes every link, pin and map of a pod. netnsCookie is known when the
 * netns still exists; the pod's rows are then deleted first, which matters
 * once maps are shared by several pods.
 */
export function uninstall(pinDir: string, podName: string, netnsCookie: bigint | null, log: Logger): UninstallResult {
  if (!existsSync(pinDir)) {
    throw new BpfmeshError(ErrorCodes.NOT_INSTALLED, `nothing is installed for pod ${podName} (no ${pinDir})`);
  }
  if (netnsCookie !== null && hasMaps(pinDir)) {
    try {
      const maps = mapsOfPinDir(pinDir);
      try {
        deletePodRows(maps, netnsCookie);
      } finally {
        closeMaps(maps);
      }
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'could not delete the pod rows; removing the maps anyway');
    }
  }
  const removed = removePins(pinDir, log);
  const root = join(pinDir, '..');
  if (existsSync(root) && readdirSync(root).length === 0) rmdirSync(root);
  return { pod: podName, removed };
}
