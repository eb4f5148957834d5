// What is installed, per pod: hooks, pins, settings, rules, live records,
// socket-path size and counters, read from the pins alone (no state file).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { native } from '../bpf/native.js';
import * as c from '../bpf/codecs.js';
import { formatCidr, formatIp } from '../util/ip.js';
import { formatPortRange } from '../util/ports.js';
import { LINKS, MapNames, closeMaps, mapsOfPinDir, type LinkSpec, type PodMaps } from '../intercept/layout.js';
import { TypedMap } from '../bpf/typed-map.js';
import { NODE_DIR_NAME, NODE_LOCK_NAME, podCookie } from '../intercept/node-wide.js';
import { cgroup2Mount } from '../intercept/mounts.js';
import { mapsDirOf } from '../intercept/versions.js';

export interface HookState {
  pin: string;
  program: string;
  attachType: string;
  linkId: number;
  progId: number;
  target: string;
}

export interface PodState {
  pod: string;
  pinDir: string;
  pins: string[];
  hooks: HookState[];
  netnsCookie: string | null;
  settings: (c.PodSettings & { mode: string; socketPath: boolean; socketPathRefused: boolean }) | null;
  inboundPortsIgnored: string[];
  outboundPortsIgnored: string[];
  inboundPortsRedirected: string[];
  subnetsIgnored: Array<{ direction: 'inbound' | 'outbound'; cidr: string }>;
  /** The pod's own addresses: outbound connects to them go straight to the app. */
  localAddresses: string[];
  originalDestinations: Array<{ app: string; proxy: string; originalDst: string }>;
  pendingRedirects: number;
  socketPathSockets: number;
  listeners: Array<{ family: string; registered: boolean }>;
  counters: Record<string, string>;
  /** bpfmesh observe in the pin folder (node-wide: shared by its pods); null when it predates observe. */
  observe: ObserveState | null;
  problems: string[];
}

export interface ObserveState {
  /** An observer holds the lease now. */
  on: boolean;
  /** Events lost to a full ring buffer since the folder was made (mesh_obs_drops). */
  dropped: string;
  ringBytes: number;
}

/** The folder's observe lease and lost-event count, read from its pins. */
function readObserve(pinDir: string): ObserveState | null {
  const dir = mapsDirOf(pinDir);
  if (!existsSync(join(dir, MapNames.obsCfg)) || !existsSync(join(dir, MapNames.obsDrops))) return null;
  const cfg = new TypedMap(native().openPinnedMap(join(dir, MapNames.obsCfg)), c.u32Key, c.obsConfig);
  const drops = new TypedMap(native().openPinnedMap(join(dir, MapNames.obsDrops)), c.u32Key, c.u64Sum);
  try {
    const until = cfg.get(0)?.untilNs ?? 0n;
    return { on: until > process.hrtime.bigint(), dropped: (drops.get(0) ?? 0n).toString(), ringBytes: c.OBS_RING_BYTES };
  } finally {
    cfg.close();
    drops.close();
  }
}

/** Where a cgroup id (its kernfs inode) lives under the cgroup2 mount; bounded walk. */
function cgroupPathById(id: number): string {
  let root: string;
  try {
    root = cgroup2Mount();
  } catch {
    return `cgroup id ${id}`;
  }
  const queue = [root];
  let visited = 0;
  while (queue.length > 0 && visited < 20000) {
    const dir = queue.shift()!;
    visited++;
    try {
      if (statSync(dir).ino === id) return dir;
      for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) queue.push(join(dir, e.name));
    } catch {
      /* raced with a removal */
    }
  }
  return `cgroup id ${id}`;
}

function netnsPathByIno(ino: number): string {
  for (const dir of ['/run/netns', '/var/run/netns']) {
    if (!existsSync(dir)) continue;
    for (const n of readdirSync(dir)) {
      try {
        if (statSync(join(dir, n)).ino === ino) return join(dir, n);
      } catch {
        /* not a netns */
      }
    }
  }
  return `netns inode ${ino}`;
}

/** Each hook's pin folder: a pod install has all in one; node-wide pods share the cgroup hooks. */
function readHooks(dirOf: (spec: LinkSpec) => string, problems: string[]): HookState[] {
  const hooks: HookState[] = [];
  for (const spec of LINKS) {
    const path = join(dirOf(spec), spec.pin);
    if (!existsSync(path)) {
      problems.push(`${spec.pin} is missing: ${spec.what} is off; run init again`);
      continue;
    }
    const link = native().openPinnedLink(path);
    try {
      const info = link.info();
      hooks.push({
        pin: spec.pin,
        program: spec.program,
        attachType: info.attachType,
        linkId: info.id,
        progId: info.progId,
        target: spec.target === 'cgroup' ? cgroupPathById(info.targetId) : netnsPathByIno(info.targetId),
      });
    } finally {
      link.close();
    }
  }
  return hooks;
}

function rangeOf(k: c.PortRuleKey): string {
  const size = 1 << (16 - k.portBits);
  return formatPortRange({ lo: k.port, hi: k.port + size - 1 });
}

/** cookie: the pod's netns cookie; null for a pod install, whose maps hold one pod only. */
function readMaps(maps: PodMaps, state: PodState, podCookie: bigint | null): void {
  const settings = podCookie === null ? maps.settings.entries() : ([[podCookie, maps.settings.get(podCookie)]] as const);
  const first = settings[0];
  if (first === undefined || first[1] === null) {
    state.problems.push('no settings row: the programs pass everything');
    return;
  }
  const [cookie, s] = first;
  state.netnsCookie = cookie.toString();
  state.settings = { ...s, mode: s.flags & c.Flags.FAIL_OPEN ? 'fail-open' : 'fail-closed', socketPath: (s.flags & c.Flags.SOCKPATH) !== 0,
    socketPathRefused: (s.flags & c.Flags.SOCKPATH_REFUSED) !== 0,
  };
  if (state.settings.socketPathRefused) state.problems.push('socket path off: this kernel does not count redirected bytes in the receiver (needs 6.1.123+, 6.12.8+ or 6.13+), so it could not be bounded; connections use loopback TCP');
  for (const k of maps.portRules.keys()) {
    if (k.netnsCookie !== cookie) continue;
    const list = k.kind === c.RuleKind.INBOUND_IGNORE ? state.inboundPortsIgnored : k.kind === c.RuleKind.OUTBOUND_IGNORE ? state.outboundPortsIgnored : state.inboundPortsRedirected;
    list.push(rangeOf(k));
  }
  for (const m of [maps.subnets4, maps.subnets6]) {
    for (const k of m.keys()) {
      if (k.netnsCookie !== cookie) continue;
      if (k.kind === c.RuleKind.LOCAL_ADDR) {
        state.localAddresses.push(formatIp(k.addr, k.family));
        continue;
      }
      state.subnetsIgnored.push({ direction: k.kind === c.RuleKind.INBOUND_IGNORE ? 'inbound' : 'outbound', cidr: formatCidr({ family: k.family, bytes: k.addr, prefix: k.prefix }) });
    }
  }
  const hostPort = (addr: string, port: number, family: 4 | 6): string => (family === 6 ? `[${addr}]:${port}` : `${addr}:${port}`);
  for (const [t, d] of maps.dstTuple.entries()) {
    if (t.netnsCookie !== cookie) continue;
    state.originalDestinations.push({
      app: hostPort(t.localAddress, t.localPort, t.family),
      proxy: hostPort(t.remoteAddress, t.remotePort, t.family),
      originalDst: hostPort(d.address, d.port, d.family),
    });
  }
  state.pendingRedirects = maps.dstCookie.countKeys();
  state.socketPathSockets = maps.sockPairs.countKeys((k) => k.netnsCookie === cookie);
  const registered = new Set([...maps.listeners.keys()].filter((k) => k.netnsCookie === cookie).map((k) => k.family));
  state.listeners = [4, 6].map((f) => ({ family: f === 4 ? 'ipv4' : 'ipv6', registered: registered.has(f as 4 | 6) }));
  c.COUNTER_NAMES.forEach((name, id) => {
    state.counters[name] = (maps.counters.get({ netnsCookie: cookie, id }) ?? 0n).toString();
  });
}

function emptyState(pod: string, pinDir: string): PodState {
  return {
    pod,
    pinDir,
    pins: readdirSync(pinDir).sort(),
    hooks: [],
    netnsCookie: null,
    settings: null,
    inboundPortsIgnored: [],
    outboundPortsIgnored: [],
    inboundPortsRedirected: [],
    subnetsIgnored: [],
    localAddresses: [],
    originalDestinations: [],
    pendingRedirects: 0,
    socketPathSockets: 0,
    listeners: [],
    counters: {},
    observe: null,
    problems: [],
  };
}

function withMaps(dir: string, fn: (maps: PodMaps) => void): void {
  const maps = mapsOfPinDir(dir);
  try {
    fn(maps);
  } finally {
    closeMaps(maps);
  }
}

/** A pod installed by `bpfmesh init`: everything in its own pin folder. */
export function inspectPod(pinDir: string, pod: string): PodState {
  const state = emptyState(pod, pinDir);
  state.hooks = readHooks(() => pinDir, state.problems);
  withMaps(pinDir, (maps) => readMaps(maps, state, null));
  state.observe = readObserve(pinDir);
  return state;
}

/** A pod enrolled node-wide (CNI, `bpfmesh node`): shared maps and cgroup hooks, its own sk_lookup link. */
export function inspectNodePod(nodeDir: string, id: string): PodState {
  const podDir = join(nodeDir, 'pods', id);
  const state = emptyState(`${NODE_DIR_NAME}/${id}`, podDir);
  state.hooks = readHooks((spec) => (spec.target === 'netns' ? podDir : nodeDir), state.problems);
  const cookie = podCookie(podDir);
  if (cookie === null) {
    state.problems.push('no recorded netns cookie: withdraw and enroll the pod again');
    return state;
  }
  withMaps(nodeDir, (maps) => readMaps(maps, state, cookie));
  state.observe = readObserve(nodeDir);
  return state;
}

/** Every pod under <bpffs>/bpfmesh: pod installs by name, node-wide pods as node/<id>. */
export function inspectAll(root: string, only?: string): PodState[] {
  if (!existsSync(root)) return [];
  const states: PodState[] = [];
  for (const name of readdirSync(root).sort()) {
    if (name === NODE_LOCK_NAME) continue;
    if (name !== NODE_DIR_NAME) {
      if (only === undefined || only === name) states.push(inspectPod(join(root, name), name));
      continue;
    }
    const podsDir = join(root, name, 'pods');
    for (const id of existsSync(podsDir) ? readdirSync(podsDir).sort() : []) {
      if (only === undefined || only === id || only === `${NODE_DIR_NAME}/${id}`) states.push(inspectNodePod(join(root, name), id));
    }
  }
  return states;
}

