/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Decisions shared by intercept.bpf.c and inbound.bpf.c: counters, address
 * classification, port and subnet rules. Include after maps.h.
 *
 * Canonical address form, used for struct orig_dst, struct sock_tuple and
 * every rule lookup: a connection that is IPv4 on the wire is AF_INET with
 * the address in [0] and [1..3] zero, whether its socket is AF_INET or an
 * AF_INET6 socket with IPv4-mapped addresses (::ffff:a.b.c.d). Only a real
 * IPv6 connection is AF_INET6 with all 16 bytes. So the app's AF_INET6
 * socket connected to ::ffff:127.0.0.1:4140 and the proxy's AF_INET socket
 * accepted on 127.0.0.1:4140 (or an AF_INET6 socket accepted by a
 * dual-stack [::]:4140 listener) describe the same connection with the same
 * tuple, and a mapped destination meets the IPv4 subnet rules.
 */
#ifndef BPFMESH_COMMON_H
#define BPFMESH_COMMON_H

#define BPFMESH_LOOPBACK4 0x7f000001u /* 127.0.0.1, host order */

/*
 * Add one to the pod's counter row, if user space created it. Programs never
 * create rows: a pod's counters exist exactly as long as its install, and a
 * netns that is not meshed costs one failed lookup.
 */
static __always_inline void count(__u64 netns_cookie, __u32 id)
{
	struct counter_key key = { .netns_cookie = netns_cookie, .id = id, ._pad = 0 };
	__u64 *v = bpf_map_lookup_elem(&mesh_counters, &key);

	if (v)
		*v += 1; /* per-CPU row: no atomic needed */
}

static __always_inline struct pod_settings *settings_of(__u64 netns_cookie)
{
	return bpf_map_lookup_elem(&mesh_settings, &netns_cookie);
}

static __always_inline bool ip4_is_loopback(__u32 addr_be)
{
	return (addr_be & bpf_htonl(0xff000000u)) == bpf_htonl(0x7f000000u);
}

static __always_inline bool ip6_is_v4mapped(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffffu);
}

/* ::1 only; callers fold IPv4-mapped addresses to AF_INET first. */
static __always_inline bool ip6_is_loopback(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1);
}

/* Loopback in the canonical form (127/8, ::1; ::ffff:127/104 arrives as AF_INET). */
static __always_inline bool addr_is_loopback(__u32 family, const __u32 a[4])
{
	if (family == AF_INET)
		return ip4_is_loopback(a[0]);
	return ip6_is_loopback(a);
}

static __always_inline bool addr_equal(const __u32 a[4], const __u32 b[4])
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

/*
 * Canonicalise an address read from an AF_INET6 context into out[4] and
 * return its family: AF_INET (v4 in out[0]) when IPv4-mapped.
 */
static __always_inline __u32 canon6(const __u32 in[4], __u32 out[4])
{
	if (ip6_is_v4mapped(in)) {
		out[0] = in[3];
		out[1] = 0;
		out[2] = 0;
		out[3] = 0;
		return AF_INET;
	}
	out[0] = in[0];
	out[1] = in[1];
	out[2] = in[2];
	out[3] = in[3];
	return AF_INET6;
}

/* Is port_be (network order) covered by a rule of this kind for this pod? */
static __always_inline bool port_rule(__u32 kind, __u64 netns_cookie, __u16 port_be)
{
	struct port_rule_key key = {
		.prefixlen = BPFMESH_PORT_KEY_FIXED_BITS + 16,
		.kind = kind,
		.netns_cookie = netns_cookie,
		.port = port_be,
		._pad0 = 0,
		._pad1 = 0,
	};

	return bpf_map_lookup_elem(&mesh_port_rules, &key) != NULL;
}

/* Is the canonical address in a subnet rule of this kind for this pod? */
static __always_inline bool subnet_rule(__u32 kind, __u64 netns_cookie, __u32 family, const __u32 a[4])
{
	if (family == AF_INET) {
		struct subnet4_key k4 = {
			.prefixlen = BPFMESH_SUBNET_KEY_FIXED_BITS + 32,
			.kind = kind,
			.netns_cookie = netns_cookie,
			.addr = a[0],
			._pad = 0,
		};

		return bpf_map_lookup_elem(&mesh_subnets4, &k4) != NULL;
	}

	struct subnet6_key k6 = {
		.prefixlen = BPFMESH_SUBNET_KEY_FIXED_BITS + 128,
		.kind = kind,
		.netns_cookie = netns_cookie,
		.addr = { a[0], a[1], a[2], a[3] },
	};

	return bpf_map_lookup_elem(&mesh_subnets6, &k6) != NULL;
}

#endif /* BPFMESH_COMMON_H */
