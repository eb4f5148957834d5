// What bpfmesh installs for a pod and under which names. Pins live in
// <bpffs>/bpfmesh/<pod>/: links as link_<hook>, maps under their own names
// (libbpf pins them by name, so both objects share them) in the layout's
// folder v<layout>/ (versions.ts).
import type { NativeObject } from '../bpf/native.js';
import { native } from '../bpf/native.js';
import * as c from '../bpf/codecs.js';
import { TypedMap } from '../bpf/typed-map.js';
import { join } from 'node:path';
import { mapsDirOf } from './versions.js';

export const MapNames = {
  settings: 'mesh_settings',
  portRules: 'mesh_port_rules',
  subnets4: 'mesh_subnets4',
  subnets6: 'mesh_subnets6',
  dstCookie: 'mesh_dst_cookie',
  dstTuple: 'mesh_dst_tuple',
  sockPairs: 'mesh_sock_pairs',
  listeners: 'mesh_listeners',
  counters: 'mesh_counters',
  /** SK_STORAGE (per socket, freed with it): not read from user space. */
  sockDst: 'mesh_sock_dst',
  /** bpfmesh observe: the lease (ARRAY, 1), the event ring buffer, the per-CPU count of events lost to a full ring. */
  obsCfg: 'mesh_obs_cfg',
  events: 'mesh_events',
  obsDrops: 'mesh_obs_drops',
} as const;

export type HookTarget = 'cgroup' | 'netns';

export interface LinkSpec {
  object: 'intercept' | 'inbound';
  program: string;
  target: HookTarget;
  pin: string;
  /** libbpf's name of the attach type, as link info reports it. */
  attachType: string;
  what: string;
}

export const LINKS: readonly LinkSpec[] = [
  { object: 'intercept', program: 'mesh_connect4', target: 'cgroup', pin: 'link_connect4', attachType: 'cgroup_inet4_connect', what: 'outbound redirect (IPv4)' },
  { object: 'intercept', program: 'mesh_connect6', target: 'cgroup', pin: 'link_connect6', attachType: 'cgroup_inet6_connect', what: 'outbound redirect (IPv6)' },
  { object: 'intercept', program: 'mesh_sockops', target: 'cgroup', pin: 'link_sockops', attachType: 'cgroup_sock_ops', what: 'records, socket pairs, listener registration' },
  { object: 'intercept', program: 'mesh_getsockopt', target: 'cgroup', pin: 'link_getsockopt', attachType: 'cgroup_getsockopt', what: 'SO_ORIGINAL_DST answers' },
  { object: 'intercept', program: 'mesh_bind4', target: 'cgroup', pin: 'link_bind4', attachType: 'cgroup_inet4_bind', what: 'proxy ports reserved (IPv4)' },
  { object: 'intercept', program: 'mesh_bind6', target: 'cgroup', pin: 'link_bind6', attachType: 'cgroup_inet6_bind', what: 'proxy ports reserved (IPv6)' },
  { object: 'intercept', program: 'mesh_getpeername4', target: 'cgroup', pin: 'link_getpeername4', attachType: 'cgroup_inet4_getpeername', what: 'app sees the address it dialled (IPv4)' },
  { object: 'intercept', program: 'mesh_getpeername6', target: 'cgroup', pin: 'link_getpeername6', attachType: 'cgroup_inet6_getpeername', what: 'app sees the address it dialled (IPv6)' },
  { object: 'inbound', program: 'mesh_sk_lookup', target: 'netns', pin: 'link_sk_lookup', attachType: 'sk_lookup', what: 'inbound steering' },
];

export interface MapProgramSpec {
  program: string;
  kind: 'sk_msg_verdict' | 'sk_skb_verdict';
  what: string;
}

/** Programs attached to mesh_sock_pairs itself; they live as long as the map. */
export const SOCKMAP_PROGRAMS: readonly MapProgramSpec[] = [
  { program: 'mesh_sk_msg', kind: 'sk_msg_verdict', what: 'same-host socket path' },
  // Kernels with 929e30f93125 stall sockets in a sockmap without an SK_SKB verdict (fixed by 04af4efde58a).
  { program: 'mesh_sk_skb', kind: 'sk_skb_verdict', what: 'pass-through verdict (sockmap stall workaround)' },
];

/** The pod's maps through their codecs. */
export interface PodMaps {
  settings: TypedMap<bigint, c.PodSettings>;
  portRules: TypedMap<c.PortRuleKey, number>;
  subnets4: TypedMap<c.SubnetKey, number>;
  subnets6: TypedMap<c.SubnetKey, number>;
  dstCookie: TypedMap<bigint, c.OrigDst>;
  dstTuple: TypedMap<c.SockTuple, c.OrigDst>;
  sockPairs: TypedMap<c.SockTuple, bigint>;
  listeners: TypedMap<c.ListenerKey, bigint>;
  counters: TypedMap<c.CounterKey, bigint>;
}

type MapOpener = (name: string) => ReturnType<NativeObject['map']>;

function wrapMaps(open: MapOpener): PodMaps {
  return {
    settings: new TypedMap(open(MapNames.settings), c.netnsCookieKey, c.podSettings),
    portRules: new TypedMap(open(MapNames.portRules), c.portRuleKey, c.u8Value),
    subnets4: new TypedMap(open(MapNames.subnets4), c.subnet4Key, c.u8Value),
    subnets6: new TypedMap(open(MapNames.subnets6), c.subnet6Key, c.u8Value),
    dstCookie: new TypedMap(open(MapNames.dstCookie), c.netnsCookieKey, c.origDst),
    dstTuple: new TypedMap(open(MapNames.dstTuple), c.sockTuple, c.origDst),
    sockPairs: new TypedMap(open(MapNames.sockPairs), c.sockTuple, c.u64Sum),
    listeners: new TypedMap(open(MapNames.listeners), c.listenerKey, c.u64Sum),
    counters: new TypedMap(open(MapNames.counters), c.counterKey, c.u64Sum),
  };
}

export const mapsOfObject = (obj: NativeObject): PodMaps => wrapMaps((n) => obj.map(n));
/** The maps of an install folder (its current layout's folder, see versions.ts). */
export const mapsOfPinDir = (pinDir: string): PodMaps => {
  const dir = mapsDirOf(pinDir);
  return wrapMaps((n) => native().openPinnedMap(join(dir, n)));
};

export function closeMaps(maps: PodMaps): void {
  for (const m of Object.values(maps) as Array<TypedMap<unknown, unknown>>) m.close();
}
