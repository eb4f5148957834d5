// Node-wide interception, for the DaemonSet agent and the CNI plugin
// (docs/design.md "State: one set of rows per pod"): the intercept programs are attached once,
// at the cgroup2 root (or another cgroup above every pod), and a pod is
// covered by its rows, keyed by its netns cookie, plus an sk_lookup link in
// its netns. So a pod is covered wherever its processes later sit in the
// cgroup tree, and adding one is a few map writes and one link.
//
// Pins: <bpffs>/bpfmesh/node/ holds the cgroup links (link_*) and the
// shared maps (by name, in the layout's folder v<layout>/, versions.ts);
// node/pods/<id>/ holds a pod's sk_lookup link and its
// inbound object's .rodata (netns_cookie), which records the cookie the
// pod's rows are keyed by, so a pod can be withdrawn after its netns is gone.
import { closeSync, existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { native, type NativeObject } from '../bpf/native.js';
import * as c from '../bpf/codecs.js';
import { LINKS, SOCKMAP_PROGRAMS, closeMaps, mapsOfPinDir, MapNames, type PodMaps } from './layout.js';
import { attachOrUpdate, detachAndUnpin, openAndLoad, removeLayoutDirs, uninstall } from './install.js';
import { abortLayout, copyRows, finishLayout, planLayout, prepareLayout } from './upgrade.js';
import { currentLayout, hasMaps, isLayoutDirName, layoutDir, layoutsIn, LOCK_NAME, mapsDirOf } from './versions.js';
import { ensureBpffs } from './mounts.js';
import { withDirLock } from './node-lock.js';
import { withSockpathProbe } from './probe-sockpath.js';
import { checkCgroup, checkNetns, netnsAddressesOf, netnsCookieOf, pinRoot, withFd } from './pod.js';
import { deletePodRows, portRulesOf, settingsOf, subnetRulesOf, writePolicy, type PodPolicy, type PolicyWriteResult } from './rules.js';

/** Where node-wide state lives and which cgroup the programs attach to. */
export interface NodeScope {
  bpffs: string;
  /** An explicit bpffs must already be mounted; the default one is mounted when missing. */
  bpffsExplicit: boolean;
  cgroupRoot: string;
}

export const NODE_DIR_NAME = 'node';
export const NODE_LOCK_NAME = LOCK_NAME;
const PODS_DIR = 'pods';
const COOKIE_PIN = 'netns_cookie';
// bpffs refuses names with a dot.
const POD_ID = /^[A-Za-z0-9_-]{1,200}$/;
const CGROUP_LINKS = LINKS.filter((l) => l.target === 'cgroup');
const SK_LOOKUP = LINKS.find((l) => l.target === 'netns')!;

export const nodePinDir = (bpffs: string): string => join(pinRoot(bpffs), NODE_DIR_NAME);
const podsDir = (scope: NodeScope): string => join(nodePinDir(scope.bpffs), PODS_DIR);
const podDir = (scope: NodeScope, id: string): string => join(podsDir(scope), id);

function checkPodId(id: string): void {
  if (!POD_ID.test(id)) {
    throw new BpfmeshError(ErrorCodes.BAD_FLAG, `pod id ${JSON.stringify(id)} is not usable as a pin name; use 1-200 of [A-Za-z0-9_-]`);
  }
}

const LOCK_WAIT_MS = 10_000;

/** Serialises node-wide installers (CNI ADDs run concurrently): flock on bpfmesh/node_lock (node-lock.ts). */
function withNodeLock<T>(scope: NodeScope, fn: () => T): T {
  const root = pinRoot(scope.bpffs);
  mkdirSync(root, { recursive: true });
  return withDirLock(join(root, NODE_LOCK_NAME), LOCK_WAIT_MS, fn);
}

/** Everything pinned, with maps of this build's layout only (else the next install upgrades them). */
function nodeInstalled(scope: NodeScope): boolean {
  const dir = nodePinDir(scope.bpffs);
  return (
    CGROUP_LINKS.every((l) => existsSync(join(dir, l.pin))) &&
    existsSync(join(layoutDir(dir, currentLayout().id), MapNames.settings)) &&
    layoutsIn(dir).length === 1
  );
}

function hasNodeLinks(scope: NodeScope): boolean {
  const dir = nodePinDir(scope.bpffs);
  return CGROUP_LINKS.every((l) => existsSync(join(dir, l.pin))) && hasMaps(dir);
}

function requireNodeInstall(scope: NodeScope): void {
  if (!hasNodeLinks(scope)) {
    throw new BpfmeshError(ErrorCodes.NOT_INSTALLED, `no node-wide interception under ${nodePinDir(scope.bpffs)}; start "bpfmesh node" or let the CNI plugin install it`);
  }
}

export interface NodeInstallResult {
  fresh: boolean;
  links: Array<{ pin: string; action: 'attached' | 'updated' | 'kept' }>;
}

/**
 * Idempotent. With everything pinned and refresh unset, only checks (the
 * CNI ADD path). Otherwise loads the intercept object on the pinned maps and
 * attaches or swaps (BPF_LINK_UPDATE) each cgroup link. A fresh install that
 * fails is removed again.
 */
export function ensureNodeInstall(scope: NodeScope, log: Logger, opts: { refresh?: boolean } = {}): NodeInstallResult {
  ensureBpffs(scope.bpffs, scope.bpffsExplicit);
  checkCgroup(scope.cgroupRoot);
  if (!opts.refresh && nodeInstalled(scope)) return { fresh: false, links: CGROUP_LINKS.map((l) => ({ pin: l.pin, action: 'kept' })) };
  return withNodeLock(scope, () => {
    if (!opts.refresh && nodeInstalled(scope)) return { fresh: false, links: CGROUP_LINKS.map((l) => ({ pin: l.pin, action: 'kept' as const })) };
    const dir = nodePinDir(scope.bpffs);
    const fresh = !hasMaps(dir);
    mkdirSync(join(dir, PODS_DIR), { recursive: true });
    const plan = planLayout(dir);
    const upgrading = plan.others.length > 0;
    const created: string[] = [];
    let swapped = false;
    let obj: NativeObject | null = null;
    try {
      prepareLayout(plan);
      obj = openAndLoad('intercept', plan.mapsDir);
      if (upgrading) copyRows(plan, log);
      const pairs = obj.map(MapNames.sockPairs);
      for (const spec of SOCKMAP_PROGRAMS) obj.program(spec.program).attachToMap(pairs.fd, spec.kind);
      const links: NodeInstallResult['links'] = [];
      withFd(scope.cgroupRoot, 'cgroup', (fd) => {
        for (const spec of CGROUP_LINKS) {
          const action = attachOrUpdate(spec, obj!, dir, fd, scope.cgroupRoot);
          if (action === 'attached') created.push(join(dir, spec.pin));
          else swapped = true;
          links.push({ pin: spec.pin, action });
        }
      });
      if (upgrading) {
        relinkPods(scope, plan.mapsDir, log);
        copyRows(plan, log); // rows the old programs wrote before their links were swapped
      }
      finishLayout(plan, log);
      log.info({ cgroup: scope.cgroupRoot, pinDir: dir, fresh, links: links.map((l) => `${l.pin}:${l.action}`) }, 'node-wide interception in place');
      return { fresh, links };
    } catch (err) {
      for (const pin of created) detachAndUnpin(pin, log);
      if (fresh) removeNodeDir(scope, log);
      else if (upgrading && !swapped) abortLayout(plan);
      throw err;
    } finally {
      obj?.close();
    }
  });
}

/**
 * Upgrade: each enrolled pod's sk_lookup link gets an inbound program loaded
 * on the new maps (BPF_LINK_UPDATE). Pods whose netns is gone are left to
 * the agent or CNI DEL, which withdraw them.
 */
function relinkPods(scope: NodeScope, mapsDir: string, log: Logger): void {
  for (const p of listEnrolled(scope)) {
    if (!p.alive || p.netnsCookie === null) continue;
    const obj = openAndLoad('inbound', mapsDir, c.inboundRodata.encode({ podNetnsCookie: p.netnsCookie }));
    try {
      const link = native().openPinnedLink(join(podDir(scope, p.id), SK_LOOKUP.pin));
      try {
        link.updateProgram(obj.program(SK_LOOKUP.program));
      } finally {
        link.close();
      }
      log.debug({ pod: p.id }, 'pod relinked to the upgraded maps');
    } finally {
      obj.close();
    }
  }
}

const readPodCookie = (scope: NodeScope, id: string): bigint | null => podCookie(podDir(scope, id));

/** The netns cookie a node-wide pod's rows are keyed by, from its pin folder. */
export function podCookie(dir: string): bigint | null {
  const path = join(dir, COOKIE_PIN);
  if (!existsSync(path)) return null;
  const map = native().openPinnedMap(path);
  try {
    const v = map.lookup(Buffer.alloc(4));
    return v === null ? null : c.inboundRodata.decode(v).podNetnsCookie;
  } finally {
    map.close();
  }
}

function withNodeMaps<T>(scope: NodeScope, fn: (maps: PodMaps) => T): T {
  const maps = mapsOfPinDir(nodePinDir(scope.bpffs));
  try {
    return fn(maps);
  } finally {
    closeMaps(maps);
  }
}

export interface EnrollResult {
  netnsCookie: bigint;
  /** false when the pod was enrolled already with this netns (only the policy diff was written). */
  fresh: boolean;
  policy: PolicyWriteResult;
}

/**
 * Idempotent. Writes the pod's rows and links sk_lookup into its netns. An id
 * enrolled before with another netns (a recreated sandbox) is withdrawn first.
 */
export function enrollPod(scope: NodeScope, id: string, netnsPath: string, policy: PodPolicy, log: Logger): EnrollResult {
  checkPodId(id);
  checkNetns(netnsPath);
  requireNodeInstall(scope);
  const netnsCookie = netnsCookieOf(netnsPath);
  const dir = podDir(scope, id);
  const previous = readPodCookie(scope, id);
  if (previous !== null && previous !== netnsCookie) {
    log.info({ pod: id, old: previous.toString(), new: netnsCookie.toString() }, 'pod has a new network namespace; withdrawing the old one');
    withdrawPod(scope, id, log);
  }
  const policyResult = withNodeMaps(scope, (maps) => writePolicy(maps, netnsCookie, policy, netnsAddressesOf(netnsPath)));
  const linkPin = join(dir, SK_LOOKUP.pin);
  if (previous === netnsCookie && existsSync(linkPin) && existsSync(join(dir, COOKIE_PIN))) {
    return { netnsCookie, fresh: false, policy: policyResult };
  }
  mkdirSync(dir, { recursive: true });
  let obj: NativeObject | null = null;
  try {
    obj = openAndLoad('inbound', mapsDirOf(nodePinDir(scope.bpffs)), c.inboundRodata.encode({ podNetnsCookie: netnsCookie }));
    const rodata = obj.map('.rodata');
    if (!existsSync(join(dir, COOKIE_PIN))) rodata.pin(join(dir, COOKIE_PIN));
    withFd(netnsPath, 'network namespace', (fd) => attachOrUpdate(SK_LOOKUP, obj!, dir, fd, netnsPath));
    log.debug({ pod: id, netns: netnsPath, netnsCookie: netnsCookie.toString() }, 'pod enrolled');
    return { netnsCookie, fresh: true, policy: policyResult };
  } catch (err) {
    withdrawPod(scope, id, log, netnsCookie);
    throw err;
  } finally {
    obj?.close();
  }
}

/** Idempotent: removes a pod's rows and its link. False when nothing was enrolled under id. */
export function withdrawPod(scope: NodeScope, id: string, log: Logger, knownCookie?: bigint): boolean {
  checkPodId(id);
  const dir = podDir(scope, id);
  if (!existsSync(dir)) return false;
  const cookie = readPodCookie(scope, id) ?? knownCookie ?? null;
  // The link goes first so nothing steers with rows that are going away.
  detachAndUnpin(join(dir, SK_LOOKUP.pin), log);
  if (cookie !== null && hasMaps(nodePinDir(scope.bpffs))) {
    withNodeMaps(scope, (maps) => deletePodRows(maps, cookie));
  }
  for (const name of readdirSync(dir)) detachAndUnpin(join(dir, name), log);
  rmdirSync(dir);
  log.debug({ pod: id, netnsCookie: cookie?.toString() }, 'pod withdrawn');
  return true;
}

export interface EnrolledPod {
  id: string;
  netnsCookie: bigint | null;
  /** Its sk_lookup link is still attached, i.e. the netns still exists. */
  alive: boolean;
}

export function listEnrolled(scope: NodeScope): EnrolledPod[] {
  if (!existsSync(podsDir(scope))) return [];
  return readdirSync(podsDir(scope)).map((id) => {
    let alive = false;
    const linkPin = join(podDir(scope, id), SK_LOOKUP.pin);
    if (existsSync(linkPin)) {
      const link = native().openPinnedLink(linkPin);
      try {
        alive = link.info().targetId !== 0; // the kernel detaches it when the netns goes
      } finally {
        link.close();
      }
    }
    return { id, netnsCookie: readPodCookie(scope, id), alive };
  });
}

/** For CNI CHECK: throws unless the pod's link and rows are exactly what policy asks. */
export function verifyPod(scope: NodeScope, id: string, netnsPath: string, policy: PodPolicy): void {
  checkPodId(id);
  checkNetns(netnsPath);
  requireNodeInstall(scope);
  const mismatch = (what: string): BpfmeshError =>
    new BpfmeshError(ErrorCodes.MISMATCH, `pod ${id}: ${what}; re-run the install (CNI ADD, or restart bpfmesh node)`);
  const netnsCookie = netnsCookieOf(netnsPath);
  const stored = readPodCookie(scope, id);
  if (stored === null) throw new BpfmeshError(ErrorCodes.NOT_INSTALLED, `pod ${id} is not enrolled (no ${podDir(scope, id)})`);
  if (stored !== netnsCookie) throw mismatch(`enrolled with netns cookie ${stored}, but ${netnsPath} has ${netnsCookie}`);
  const linkPin = join(podDir(scope, id), SK_LOOKUP.pin);
  if (!existsSync(linkPin)) throw mismatch('its sk_lookup link is not pinned');
  const netnsIno = statSync(netnsPath).ino;
  const link = native().openPinnedLink(linkPin);
  try {
    if (link.info().targetId !== netnsIno) throw mismatch(`its sk_lookup link is not attached to ${netnsPath}`);
  } finally {
    link.close();
  }
  withNodeMaps(scope, (maps) => {
    const have = maps.settings.get(netnsCookie);
    const want = withSockpathProbe(settingsOf(policy));
    if (have === null || (Object.keys(want) as Array<keyof typeof want>).some((f) => have[f] !== want[f])) throw mismatch('its settings row differs from the configuration');
    const sameRows = <K extends { netnsCookie: bigint }>(rows: Iterable<K>, desired: K[]): boolean => {
      const key = (k: K): string =>
        Object.entries(k)
          .map(([f, v]: [string, unknown]) => `${f}=${Buffer.isBuffer(v) ? v.toString('hex') : String(v)}`)
          .sort()
          .join(',');
      const haveKeys = [...rows].filter((k) => k.netnsCookie === netnsCookie && !('kind' in k && k.kind === c.RuleKind.LOCAL_ADDR)).map(key).sort();
      const wantKeys = [...new Set(desired.map(key))].sort(); // a port asked for twice is one row
      return haveKeys.length === wantKeys.length && haveKeys.every((k, i) => k === wantKeys[i]);
    };
    if (!sameRows(maps.portRules.keys(), portRulesOf(policy, netnsCookie))) throw mismatch('its port rules differ from the configuration');
    const subnets = subnetRulesOf(policy.subnetsToIgnore, netnsCookie);
    if (!sameRows(maps.subnets4.keys(), subnets.filter((s) => s.family === 4)) || !sameRows(maps.subnets6.keys(), subnets.filter((s) => s.family === 6))) {
      throw mismatch('its subnet rules differ from the configuration');
    }
  });
}

/** Inodes of the TCP sockets listening on `port` in a process's netns, by family (/proc/PID/net/tcp{,6}). */
function listeningInodes(proc: string, pid: number, port: number): Map<string, 4 | 6> {
  const found = new Map<string, 4 | 6>();
  for (const [file, family] of [['tcp', 4], ['tcp6', 6]] as const) {
    let text: string;
    try {
      text = readFileSync(join(proc, String(pid), 'net', file), 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // local_address is ADDR:PORT in hex; st 0A is LISTEN; field 9 is the inode.
      if (f.length > 9 && f[3] === '0A' && parseInt(f[1]!.split(':')[1]!, 16) === port) found.set(f[9]!, family);
    }
  }
  return found;
}

/**
 * Registers proxy listeners that were already listening when the pod was
 * enrolled (sockops registers only sockets that start listening later): the
 * node agent can find a pod whose containers already run. Takes each socket
 * from its process with pidfd_getfd, which needs CAP_SYS_PTRACE. Returns how
 * many were registered.
 */
export function adoptListeners(scope: NodeScope, netnsCookie: bigint, incomingPort: number, pids: number[], proc = '/proc'): number {
  let adopted = 0;
  const maps = openNodeMaps(scope);
  try {
    for (const pid of pids) {
      const wanted = listeningInodes(proc, pid, incomingPort);
      if (wanted.size === 0) continue;
      let fds: string[];
      try {
        fds = readdirSync(join(proc, String(pid), 'fd'));
      } catch {
        continue; // exited meanwhile
      }
      for (const fd of fds) {
        let target: string;
        try {
          target = readlinkSync(join(proc, String(pid), 'fd', fd));
        } catch {
          continue;
        }
        const family = wanted.get(/^socket:\[(\d+)\]$/.exec(target)?.[1] ?? '');
        if (family === undefined) continue;
        const sock = native().takeSocket(pid, Number(fd));
        try {
          maps.listeners.setSocket({ netnsCookie, family }, sock);
          adopted++;
        } finally {
          closeSync(sock);
        }
      }
    }
  } finally {
    closeMaps(maps);
  }
  return adopted;
}

function removeNodeDir(scope: NodeScope, log: Logger): string[] {
  const dir = nodePinDir(scope.bpffs);
  if (!existsSync(dir)) return [];
  const removed: string[] = [];
  if (existsSync(podsDir(scope))) {
    for (const id of readdirSync(podsDir(scope))) {
      withdrawPod(scope, id, log);
      removed.push(join(PODS_DIR, id));
    }
    rmdirSync(podsDir(scope));
  }
  const names = readdirSync(dir);
  // Links first, so nothing steers into maps that are going away.
  for (const n of [...names.filter((x) => x.startsWith('link_')), ...names.filter((x) => !x.startsWith('link_') && !isLayoutDirName(x))]) {
    detachAndUnpin(join(dir, n), log);
    removed.push(n);
  }
  removed.push(...removeLayoutDirs(dir, log));
  rmdirSync(dir);
  return removed;
}

/** The node-wide pod id enrolled with this netns cookie, if any (`bpfmesh init` then has nothing to do). */
export function nodeEnrollmentOf(bpffs: string, netnsCookie: bigint): string | null {
  const dir = join(nodePinDir(bpffs), PODS_DIR);
  if (!existsSync(dir)) return null;
  for (const id of readdirSync(dir)) if (podCookie(join(dir, id)) === netnsCookie) return id;
  return null;
}

/**
 * The pod install (`bpfmesh init`, an init container) whose sk_lookup link
 * sits on the netns with this inode, if any: such a pod must not be enrolled
 * node-wide as well, or two sets of programs would steer it.
 */
export function podInstallOn(bpffs: string, netnsIno: number): string | null {
  const root = pinRoot(bpffs);
  if (!existsSync(root)) return null;
  for (const name of readdirSync(root)) {
    if (name === NODE_DIR_NAME || name === NODE_LOCK_NAME) continue;
    const linkPin = join(root, name, SK_LOOKUP.pin);
    if (!existsSync(linkPin)) continue;
    try {
      const link = native().openPinnedLink(linkPin);
      try {
        if (link.info().targetId === netnsIno) return name;
      } finally {
        link.close();
      }
    } catch {
      /* removed meanwhile */
    }
  }
  return null;
}

/**
 * Removes pod installs made by `bpfmesh init` (an init container) whose
 * netns is gone: nothing else cleans them up when a pod is deleted, and their
 * links keep the dead pod's cgroup alive. A netns never comes back, so a
 * detached sk_lookup link is proof. Returns the pod names removed.
 */
export function removeStalePodInstalls(bpffs: string, log: Logger): string[] {
  const root = pinRoot(bpffs);
  if (!existsSync(root)) return [];
  const removed: string[] = [];
  for (const name of readdirSync(root)) {
    if (name === NODE_DIR_NAME || name === NODE_LOCK_NAME) continue;
    const linkPin = join(root, name, SK_LOOKUP.pin);
    if (!existsSync(linkPin)) continue;
    let dead: boolean;
    try {
      const link = native().openPinnedLink(linkPin);
      try {
        dead = link.info().targetId === 0;
      } finally {
        link.close();
      }
    } catch {
      continue; // removed meanwhile
    }
    if (!dead) continue;
    uninstall(join(root, name), name, null, log);
    log.info({ pod: name }, 'removed the pins of a pod install whose network namespace is gone');
    removed.push(name);
  }
  return removed;
}

/** Removes everything node-wide: every pod, the cgroup links, the maps. */
export function uninstallNode(scope: NodeScope, log: Logger): { removed: string[] } {
  if (!existsSync(nodePinDir(scope.bpffs))) return { removed: [] };
  const removed = withNodeLock(scope, () => removeNodeDir(scope, log));
  const root = pinRoot(scope.bpffs);
  if (existsSync(root) && readdirSync(root).length === 0) rmdirSync(root);
  return { removed };
}

/** Opens the node-wide maps through their codecs (inspect, tests). The caller closes them. */
export function openNodeMaps(scope: NodeScope): PodMaps {
  requireNodeInstall(scope);
  return mapsOfPinDir(nodePinDir(scope.bpffs));
}
