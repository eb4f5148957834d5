// What an install needs from the kernel. Program types, attach types and map
// types are read from the built BPF objects themselves (opened, not loaded),
// so the list follows bpf/*.bpf.c; helpers are listed here by hand (an ELF
// does not name them) and test/unit/check-requirements.test.ts keeps the
// list in step with the helpers bpf/*.bpf.c calls.
import { existsSync } from 'node:fs';
import { bpfObjectPath } from '../config/paths.js';
import { native } from '../bpf/native.js';
import { SOCKMAP_PROGRAMS } from '../intercept/layout.js';

/** bpfmesh observe (bpf/observe.h): the lease's clock and the ring buffer; in task context also the caller. */
const OBSERVE = ['ktime_get_ns', 'ringbuf_reserve', 'ringbuf_submit', 'ringbuf_query'];
const OBSERVE_IN_TASK = [...OBSERVE, 'get_current_pid_tgid', 'get_current_cgroup_id', 'get_current_comm'];

/** Helpers (BPF_FUNC_ suffix) each program type calls in bpf/*.bpf.c. */
export const HELPERS: Readonly<Record<string, readonly string[]>> = {
  cgroup_sock_addr: ['map_lookup_elem', 'map_update_elem', 'get_netns_cookie', 'get_socket_cookie', 'get_current_uid_gid', 'sk_lookup_tcp', 'sk_release', 'sk_storage_get', 'sk_storage_delete', ...OBSERVE_IN_TASK],
  sock_ops: ['map_lookup_elem', 'map_update_elem', 'map_delete_elem', 'get_netns_cookie', 'get_socket_cookie', 'sock_hash_update', 'sock_ops_cb_flags_set', 'sk_storage_get', ...OBSERVE],
  cgroup_sockopt: ['map_lookup_elem', 'get_netns_cookie', 'sk_storage_get', ...OBSERVE_IN_TASK],
  // msg_redirect_map: bpf/probe.bpf.c (the socket-path start-up probe). probe_read_kernel: what BPF_CORE_READ / bpf_core_read expand to (the socket-path bound reads the peer's queue).
  sk_msg: ['map_lookup_elem', 'get_netns_cookie', 'msg_redirect_hash', 'msg_redirect_map', 'sk_storage_get', 'skc_to_tcp_sock', 'probe_read_kernel', ...OBSERVE],
  sk_skb: ['map_lookup_elem', 'get_socket_cookie', 'skb_adjust_room', 'probe_read_kernel'],
  sk_lookup: ['map_lookup_elem', 'sk_assign', 'sk_release', ...OBSERVE],
  // bpf/upgrade.bpf.c, an iterator run only by an upgrade that must carry sockets over; optional (README "Upgrading"), so not probed: check asks only what intercept and inbound load.
  tracing: ['map_update_elem', 'seq_write'],
};

export interface Requirements {
  progTypes: string[];
  /** [program type, attach type] pairs. */
  attachTypes: Array<[string, string]>;
  mapTypes: string[];
  /** [program type, helper, attach type] */
  helpers: Array<[string, string, string]>;
}

/** Throws BPFMESH_E_OBJECT_MISSING (from the caller's view) when an object is not built. */
export function requirementsOfObjects(): Requirements | { missing: string } {
  const progTypes = new Set<string>();
  const attach = new Map<string, [string, string]>();
  const mapTypes = new Set<string>();
  for (const name of ['intercept', 'inbound'] as const) {
    const path = bpfObjectPath(name);
    if (!existsSync(path)) return { missing: path };
    const obj = native().openObject(path);
    try {
      for (const p of obj.programs()) {
        progTypes.add(p.type);
        const sockmap = SOCKMAP_PROGRAMS.find((s) => s.program === p.name);
        const at = sockmap?.kind ?? p.attachType;
        if (at !== '') attach.set(`${p.type}/${at}`, [p.type, at]);
      }
      for (const m of obj.maps()) mapTypes.add(m.type);
    } finally {
      obj.close();
    }
  }
  const helpers: Array<[string, string, string]> = [];
  for (const t of progTypes) {
    const at = [...attach.values()].find(([pt]) => pt === t)?.[1] ?? '';
    for (const h of HELPERS[t] ?? []) helpers.push([t, h, at]);
  }
  return { progTypes: [...progTypes], attachTypes: [...attach.values()], mapTypes: [...mapTypes], helpers };
}
