// What is installed, per pod: hooks, pins, settings, rules, live records,
// socket-path size and counters, read from the pins alone (no state file).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { native } from '../bpf/native.js';
import * as c from '../bpf/codecs.js';
import { formatCidr } from '../util/ip.js';
import { formatPortRange } from '../util/ports.js';
import { LINKS, closeMaps, mapsOfPinDir, type PodMaps } from '../intercept/layout.js';
import { cgroup2Mount } from '../intercept/mounts.js';

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
  settings: (c.PodSettings & { mode: string; socketPath: boolean }) | null;
  inboundPortsIgnored: string[];
  outboundPortsIgnored: string[];
  inboundPortsRedirected: string[];
  subnetsIgnored: Array<{ direction: 'inbound' | 'outbound'; cidr: string }>;
  originalDestinations: Array<{ app: string; proxy: string; originalDst: string }>;
  pendingRedirects: number;
  socketPathSockets: number;
  listeners: Array<{ family: string; registered: boolean }>;
  counters: Record<string, string>;
  problems: string[];
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

function readHooks(pinDir: string, problems: string[]): HookState[] {
  const hooks: HookState[] = [];
  for (const spec of LINKS) {
    const path = join(pinDir, spec.pin);
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

function readMaps(maps: PodMaps, state: PodState): void {
  const settings = maps.settings.entries();
  const first = settings[0];
  if (first === undefined) {
    state.problems.push('no settings row: the programs pass everything');
    return;
  }
  const [cookie, s] = first;
  state.netnsCookie = cookie.toString();
  state.settings = { ...s, mode: s.flags & c.Flags.FAIL_OPEN ? 'fail-open' : 'fail-closed', socketPath: (s.flags & c.Flags.SOCKPATH) !== 0 };
  for (const k of maps.portRules.keys()) {
    if (k.netnsCookie !== cookie) continue;
    const list = k.kind === c.RuleKind.INBOUND_IGNORE ? state.inboundPortsIgnored : k.kind === c.RuleKind.OUTBOUND_IGNORE ? state.outboundPortsIgnored : state.inboundPortsRedirected;
    list.push(rangeOf(k));
  }
  for (const m of [maps.subnets4, maps.subnets6]) {
    for (const k of m.keys()) {
      if (k.netnsCookie !== cookie) continue;
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

export function inspectPod(pinDir: string, pod: string): PodState {
  const state: PodState = {
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
    originalDestinations: [],
    pendingRedirects: 0,
    socketPathSockets: 0,
    listeners: [],
    counters: {},
    problems: [],
  };
  state.hooks = readHooks(pinDir, state.problems);
  const maps = mapsOfPinDir(pinDir);
  try {
    readMaps(maps, state);
  } finally {
    closeMaps(maps);
  }
  return state;
}

export function inspectAll(root: string, only?: string): PodState[] {
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((p) => only === undefined || p === only)
    .sort()
    .map((p) => inspectPod(join(root, p), p));
}

