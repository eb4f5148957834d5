/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maps of the data path. Every object includes this file and so declares
 * every map, with identical definitions; all are LIBBPF_PIN_BY_NAME, so the
 * first object loaded with a given pin_root_path creates and pins them and
 * every later object (intercept.bpf.o, then one inbound.bpf.o per pod netns)
 * reuses the pinned maps. libbpf refuses a pinned map whose type, key size,
 * value size, max_entries or flags differ, which is why they live here and
 * nowhere else. Names stay within BPF_OBJ_NAME_LEN - 1 (15) characters so
 * bpftool shows them in full.
 *
 * Include after vmlinux.h, bpf_helpers.h and bpfmesh.h.
 */
#ifndef BPFMESH_MAPS_H
#define BPFMESH_MAPS_H

/* Settings of each meshed pod, by netns cookie. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BPFMESH_MAX_PODS);
	__type(key, __u64);
	__type(value, struct pod_settings);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mesh_settings SEC(".maps");

/* Ignored / redirected port ranges, as prefixes of the port (see port_rule_key). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, BPFMESH_MAX_PORT_RULES);
	__type(key, struct port_rule_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mesh_port_rules SEC(".maps");

/* Ignored subnets, IPv4 (IPv4-mapped IPv6 addresses are looked up here too). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, BPFMESH_MAX_SUBNETS);
	__type(key, struct subnet4_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mesh_subnets4 SEC(".maps");

/* Ignored subnets, IPv6. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, BPFMESH_MAX_SUBNETS);
	__type(key, struct subnet6_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mesh_subnets6 SEC(".maps");

/*
 * Original destination by socket cookie, from connect until the connection
 * is established (then moved to mesh_dst_tuple). A connect that never
 * establishes leaves its row to the LRU.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BPFMESH_MAX_ORIG_DST);
	__type(key, __u64);
	__type(value, struct orig_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mesh_dst_cookie SEC(".maps");

/*
 * Original destination by the app socket's tuple (local = app, remote =
 * proxy), from ACTIVE_ESTABLISHED until the proxy's accepted end closes.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BPFMESH_MAX_ORIG_DST);
	__type(key, struct sock_tuple);
	__type(value, struct orig_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mesh_dst_tuple SEC(".maps");

/*
 * Both ends of every app<->proxy connection, each under its own tuple; the
 * sk_msg and sk_skb verdict programs are attached to this map.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, BPFMESH_MAX_SOCK_PAIRS);
	__type(key, struct sock_tuple);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mesh_sock_pairs SEC(".maps");

/* The proxy's inbound listener per pod and family, for sk_lookup. No programs attached. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, BPFMESH_MAX_PODS * 2);
	__type(key, struct listener_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mesh_listeners SEC(".maps");

/* Per-pod counters; rows are created by user space only (see count()). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, BPFMESH_MAX_PODS * BPFMESH_C__COUNT);
	__type(key, struct counter_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mesh_counters SEC(".maps");

/*
 * Per-socket original destination (struct sock_dst), for the socket's own
 * getsockopt(SO_ORIGINAL_DST) and getpeername(): set by connect4/6 on the
 * app's redirected socket and by sockops on inbound accepted sockets. The
 * kernel frees it with the socket. Pinned so that re-loaded programs see it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mesh_sock_dst SEC(".maps");

/*
 * bpfmesh observe (bpf/observe.h): steering events, emitted only while
 * mesh_obs_cfg holds a lease in the future (one read when off). The ring
 * buffer is bounded (BPFMESH_OBS_RING_BYTES, allocated when the map is
 * created); an event that finds it full is dropped and counted in
 * mesh_obs_drops. One of each per pin folder (a pod install, or node-wide).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct obs_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mesh_obs_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, BPFMESH_OBS_RING_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mesh_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mesh_obs_drops SEC(".maps");

#endif /* BPFMESH_MAPS_H */
