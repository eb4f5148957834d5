/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Structs and constants shared by the BPF programs and user space.
 * src/bpf/codecs.ts mirrors every struct here byte for byte; the loader
 * checks each codec's size against the map's key/value size at load time,
 * so a change here that is not made there fails loudly.
 *
 * Every row that belongs to a pod is keyed by the pod's network-namespace
 * cookie, so the same programs work attached to one pod's cgroup or to the
 * cgroup2 root for a whole node.
 */
#ifndef BPFMESH_H
#define BPFMESH_H

/* Sizes of the maps. */
#define BPFMESH_MAX_PODS        1024
#define BPFMESH_MAX_PORT_RULES  16384
#define BPFMESH_MAX_SUBNETS     16384
#define BPFMESH_MAX_ORIG_DST    65536
#define BPFMESH_MAX_SOCK_PAIRS  65536

/* A uid/gid setting that is not set (proxy-init's --proxy-gid default). */
#define BPFMESH_ID_UNSET 0xffffffffu

/* pod_settings.flags */
#define BPFMESH_F_FAIL_OPEN          (1u << 0) /* steer only once the proxy listens */
#define BPFMESH_F_SOCKPATH           (1u << 1) /* same-host socket path (sk_msg) on */
#define BPFMESH_F_INBOUND_ONLY_LISTED (1u << 2) /* --ports-to-redirect: steer only listed inbound ports */
/* Socket path asked for, but the start-up probe found that this kernel cannot bound it: loopback TCP. */
#define BPFMESH_F_SOCKPATH_REFUSED   (1u << 3)
/* Served by the node proxy (`bpfmesh node --proxy`): its sockets carry BPFMESH_NODE_PROXY_MARK, not the proxy uid. */
#define BPFMESH_F_NODE_PROXY         (1u << 4)
#define BPFMESH_NODE_PROXY_MARK      0x2102u

/* Socket path marks (bytes queued at the peer, its sk_rmem_alloc): above HIGH a write takes loopback TCP. */
#define BPFMESH_SOCKPATH_HIGH_DEFAULT (2u << 20)
#define BPFMESH_SOCKPATH_HIGH_MIN     (64u << 10)

/* Settings of one pod; map mesh_settings, key: __u64 netns cookie. */
struct pod_settings {
	__u16 incoming_port; /* host order; the proxy's inbound listener (4143) */
	__u16 outgoing_port; /* host order; the proxy's outbound listener (4140) */
	__u16 admin_port;    /* host order; 4191 */
	__u16 control_port;  /* host order; 4190 */
	__u32 proxy_uid;
	__u32 proxy_gid;     /* BPFMESH_ID_UNSET when not set */
	__u32 flags;         /* BPFMESH_F_* */
	__u32 sockpath_high; /* bytes; 0: BPFMESH_SOCKPATH_HIGH_DEFAULT. The low mark is a quarter of it */
};

/* port_rule_key.kind and subnet keys' kind */
#define BPFMESH_RULE_INBOUND_IGNORE   1 /* ports: destination port; subnets: source */
#define BPFMESH_RULE_OUTBOUND_IGNORE  2 /* ports and subnets: destination */
#define BPFMESH_RULE_INBOUND_REDIRECT 3 /* ports only: --ports-to-redirect */

/*
 * LPM trie mesh_port_rules. A port range is stored as the few prefixes that
 * cover it, so 1-65535 costs 16 rows, not 65535. prefixlen counts the bits of
 * kind (32) + netns_cookie (64) + the port's leading bits (0..16).
 * Value: __u8, 1.
 */
struct port_rule_key {
	__u32 prefixlen;
	__u32 kind;
	__u64 netns_cookie;
	__u16 port;  /* network order, so that prefixes are leading bits */
	__u16 _pad0;
	__u32 _pad1;
};
#define BPFMESH_PORT_KEY_FIXED_BITS (32 + 64)

/* LPM tries mesh_subnets4 / mesh_subnets6. prefixlen = 96 + CIDR length. Value: __u8, 1. */
struct subnet4_key {
	__u32 prefixlen;
	__u32 kind;
	__u64 netns_cookie;
	__u32 addr; /* network order */
	__u32 _pad;
};

struct subnet6_key {
	__u32 prefixlen;
	__u32 kind;
	__u64 netns_cookie;
	__u32 addr[4]; /* network order */
};
#define BPFMESH_SUBNET_KEY_FIXED_BITS (32 + 64)

/* An original destination. Value of mesh_dst_cookie and mesh_dst_tuple. */
struct orig_dst {
	__u32 family;  /* AF_INET or AF_INET6 */
	__u32 addr[4]; /* network order; IPv4 in addr[0] */
	__u16 port;    /* network order */
	__u16 _pad;
};

/*
 * A TCP connection seen from one end. Key of mesh_dst_tuple (seen from the
 * application's socket: local = app, remote = proxy listener) and of the
 * SOCKHASH mesh_sock_pairs (seen from the socket that is the map element).
 */
struct sock_tuple {
	__u64 netns_cookie;
	__u32 family;      /* AF_INET or AF_INET6 */
	__u32 local_port;  /* host order */
	__u32 remote_port; /* host order */
	__u32 local_addr[4];  /* network order; IPv4 in [0], rest zero */
	__u32 remote_addr[4]; /* network order; IPv4 in [0], rest zero */
	__u32 _pad;
};

/* Key of the SOCKHASH mesh_listeners: the proxy's inbound listener per pod and family. */
struct listener_key {
	__u64 netns_cookie;
	__u32 family;
	__u32 _pad;
};

/*
 * Counters: PERCPU_HASH mesh_counters, key counter_key, value __u64.
 * User space creates every row of a pod at install time; programs only
 * increment rows that exist, so a pod's counters vanish with its rows.
 */
struct counter_key {
	__u64 netns_cookie;
	__u32 id; /* enum bpfmesh_counter */
	__u32 _pad;
};

enum bpfmesh_counter {
	BPFMESH_C_OUT_REDIRECTED = 0,     /* connect rewritten to the outbound proxy */
	BPFMESH_C_OUT_PASS_PROXY,         /* caller is the proxy (uid or gid) */
	BPFMESH_C_OUT_PASS_LOOPBACK,      /* destination on loopback */
	BPFMESH_C_OUT_PASS_PORT,          /* destination port ignored */
	BPFMESH_C_OUT_PASS_SUBNET,        /* destination subnet ignored */
	BPFMESH_C_OUT_PASS_NO_PROXY,      /* fail-open and no proxy listening */
	BPFMESH_C_OUT_RECORD_FAILED,      /* original destination could not be stored */
	BPFMESH_C_IN_STEERED,             /* sk_lookup selected the proxy's listener */
	BPFMESH_C_IN_PASS_PORT,           /* destination port ignored or not listed */
	BPFMESH_C_IN_PASS_SUBNET,         /* source subnet ignored */
	BPFMESH_C_IN_PASS_LOCAL,          /* source is local (the proxy reaching the app) */
	BPFMESH_C_IN_PASS_NO_PROXY,       /* fail-open and no listener registered */
	BPFMESH_C_IN_DROP_NO_PROXY,       /* fail-closed and no listener registered */
	BPFMESH_C_IN_DROP_ASSIGN,         /* bpf_sk_assign failed */
	BPFMESH_C_ORIG_DST_ANSWERED,      /* SO_ORIGINAL_DST answered from the map */
	BPFMESH_C_ORIG_DST_MISSING,       /* SO_ORIGINAL_DST asked, no record */
	BPFMESH_C_SOCKPATH_PAIRED,        /* sockets put into mesh_sock_pairs */
	BPFMESH_C_SOCKPATH_PAIR_FAILED,   /* sock_hash_update failed */
	BPFMESH_C_SOCKPATH_REDIRECTED,    /* sk_msg: message redirected to the peer */
	BPFMESH_C_SOCKPATH_PASSED,        /* sk_msg: message took TCP (peer unknown, above the mark, not drained) */
	BPFMESH_C_BIND_DENIED,            /* bind to a proxy port by another uid */
	BPFMESH_C_LISTENER_REGISTERED,    /* proxy's inbound listener put into mesh_listeners */
	BPFMESH_C_SOCKPATH_FALLBACK,      /* sk_msg: peer above the high mark, writer moved to TCP */
	BPFMESH_C_SOCKPATH_SWITCHBACK,    /* sk_msg: below the low mark and drained, back to the redirect */
	BPFMESH_C_SOCKPATH_TRIMMED,       /* sk_skb: retransmitted bytes already delivered cut off an skb */
	BPFMESH_C_SOCKPATH_TRIM_FAILED,   /* sk_skb: an overlap could not be cut (delivered as it came) */
	BPFMESH_C_SOCKPATH_REFUSED,       /* connection kept on TCP: this kernel cannot bound the path */
	BPFMESH_C__COUNT
};

/* Constants that vmlinux.h does not carry (they are #defines in uapi). */
#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif
#ifndef SOL_IP
#define SOL_IP 0
#endif
#ifndef SOL_IPV6
#define SOL_IPV6 41
#endif
#define BPFMESH_SO_ORIGINAL_DST 80     /* SO_ORIGINAL_DST and IP6T_SO_ORIGINAL_DST */

/* Rule kind of mesh_subnets4/6 rows that are the pod's own addresses (/32, /128): not a subnet to ignore. */
#define BPFMESH_RULE_LOCAL_ADDR 4

/* sock_dst.kind */
#define BPFMESH_SD_REDIRECTED 1 /* the app's socket, connect rewritten to the proxy: dst is what it dialled */
#define BPFMESH_SD_INBOUND    2 /* a passively opened socket (inbound, e.g. steered by sk_lookup): dst is its local address */

/*
 * Value of the SK_STORAGE map mesh_sock_dst: what a socket answers for
 * itself (SO_ORIGINAL_DST; getpeername for REDIRECTED). Lives and dies with
 * the socket, so it needs no cleanup and no bound of its own.
 */
struct sock_dst {
	struct orig_dst dst;
	__u32 kind; /* BPFMESH_SD_* */
};

/*
 * bpfmesh observe. Value of the one-element ARRAY mesh_obs_cfg: events are
 * emitted while bpf_ktime_get_ns() (CLOCK_MONOTONIC) < until_ns; 0 is off.
 * An observer refreshes it, so a killed one turns it off by expiring.
 */
struct obs_config {
	__u64 until_ns;
	__u64 netns_cookie; /* only this pod's events; 0: every pod of the pin folder */
};

/* Size of the ring buffer mesh_events (a power of two, a multiple of the page size). */
#define BPFMESH_OBS_RING_BYTES (256u << 10)
/* How often the reader drains the ring without a wakeup (see obs_submit), in ms. */
#define BPFMESH_OBS_POLL_MS 100

/*
 * One steering decision, in mesh_events. event is the enum bpfmesh_counter
 * id of the counter the decision increments (so the set of reasons is the
 * counters', and append-only). Addresses are canonical (see common.h).
 */
struct obs_event {
	__u64 ts_ns;        /* bpf_ktime_get_ns() */
	__u64 netns_cookie; /* the pod */
	__u64 cgroup_id;    /* the calling task's cgroup v2 id; 0 outside a task (sk_lookup, sockops, sk_msg) */
	__u64 sock_cookie;  /* the socket's cookie; 0 where the hook has none */
	__u32 event;        /* enum bpfmesh_counter */
	__u32 family;       /* AF_INET or AF_INET6; 0 when there are no addresses */
	__u32 pid;          /* tgid of the calling task; 0 outside a task */
	__u32 uid;          /* its uid; BPFMESH_ID_UNSET outside a task */
	__u32 src_addr[4];  /* network order; IPv4 in [0] */
	__u32 dst_addr[4];
	__u16 src_port;     /* host order */
	__u16 dst_port;     /* host order */
	__u32 _pad;
	char comm[16];      /* the calling task's comm; empty outside a task */
};

#endif /* BPFMESH_H */
