// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Inbound steering: an sk_lookup program linked to one pod's network
 * namespace selects the proxy's inbound listener for connections to the
 * pod, unless the port or source is ignored or the source is local. No
 * packet is rewritten; the accepted socket's local address is the original
 * destination.
 *
 * sk_lookup programs cannot call bpf_get_netns_cookie, so each pod's netns
 * gets its own instance of this object with the pod's cookie in .rodata,
 * set by user space before load. The maps are the shared pinned ones.
 *
 * Byte orders (bpf_sk_lookup, verified on 6.18): local_port is host order
 * (__u32); remote_port is __be16; addresses are network order.
 */
/* Context structs (bpf_sock_addr, bpf_sock_ops, bpf_sockopt, bpf_sk_lookup, sk_msg_md)
 * are UAPI: the verifier rewrites their accesses, so they need no CO-RE
 * relocation. Without relocations libbpf does not parse the kernel BTF at
 * load time, which halves the load time of each object. Kernel-internal
 * structs, if a program ever reads one, need BPF_CORE_READ explicitly. */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "bpfmesh.h"
#include "maps.h"
#include "common.h"
#include "observe.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * The pod's netns cookie. .rodata holds only this: 8 bytes at offset 0.
 * 0 (never a real cookie) matches no settings, so an instance loaded
 * without it passes everything.
 */
const volatile __u64 pod_netns_cookie = 0;

/* IPPROTO_TCP comes from vmlinux.h (an enum there, so it cannot be #defined here). */

struct inbound_conn {
	__u32 family;   /* canonical, see common.h */
	__u32 local_port; /* host order */
	__u32 remote_port; /* host order */
	__u32 local[4];
	__u32 remote[4];
};

/*
 * Should this connection go to the proxy? Returns BPFMESH_C_IN_STEERED, or
 * the counter of the reason to pass (counted here).
 */
static __always_inline __u32 inbound_verdict(__u64 cookie, const struct pod_settings *s,
					     const struct inbound_conn *c)
{
	__u16 port_be = bpf_htons((__u16)c->local_port);
	__u32 why;

	/* Loopback: the app's own local traffic, and the proxy forwarding to it. */
	if (addr_is_loopback(c->family, c->local) || addr_is_loopback(c->family, c->remote) ||
	    addr_equal(c->local, c->remote))
		why = BPFMESH_C_IN_PASS_LOCAL;
	else if (port_rule(BPFMESH_RULE_INBOUND_IGNORE, cookie, port_be))
		why = BPFMESH_C_IN_PASS_PORT;
	else if ((s->flags & BPFMESH_F_INBOUND_ONLY_LISTED) &&
		 !port_rule(BPFMESH_RULE_INBOUND_REDIRECT, cookie, port_be))
		why = BPFMESH_C_IN_PASS_PORT;
	else if (subnet_rule(BPFMESH_RULE_INBOUND_IGNORE, cookie, c->family, c->remote))
		why = BPFMESH_C_IN_PASS_SUBNET;
	else
		return BPFMESH_C_IN_STEERED;
	count(cookie, why);
	return why;
}

/* bpfmesh observe: an inbound decision, src = the peer, dst = the address it dialled. */
static __always_inline void observe_lookup(__u64 cookie, __u32 id, const struct inbound_conn *c)
{
	struct obs_event *e;

	if (!obs_on(cookie))
		return;
	e = obs_reserve(cookie, id);
	if (!e)
		return;
	e->family = c->family;
	e->src_addr[0] = c->remote[0];
	e->src_addr[1] = c->remote[1];
	e->src_addr[2] = c->remote[2];
	e->src_addr[3] = c->remote[3];
	e->dst_addr[0] = c->local[0];
	e->dst_addr[1] = c->local[1];
	e->dst_addr[2] = c->local[2];
	e->dst_addr[3] = c->local[3];
	e->src_port = (__u16)c->remote_port;
	e->dst_port = (__u16)c->local_port;
	obs_submit(e);
}

/*
 * Select the proxy's listener. An IPv4 connection may also go to an AF_INET6
 * listener, which is dual-stack unless IPV6_V6ONLY (then the assign fails).
 *
 * SK_DROP here makes the listener lookup fail, so the peer gets a reset
 * (connection refused), not a silent drop.
 *
 * An assign failure refuses rather than passes: a listener is registered,
 * so the proxy is up, and passing would hand the connection to the app's
 * own listener, silently bypassing the proxy's mTLS and policy. The failure
 * is visible as IN_DROP_ASSIGN, and the peer can retry.
 */
static __always_inline int steer(struct bpf_sk_lookup *ctx, __u64 cookie, const struct pod_settings *s,
				 __u32 family, __u32 *why)
{
	struct listener_key key = { .netns_cookie = cookie, .family = family, ._pad = 0 };
	struct bpf_sock *sk;
	long err;

	sk = bpf_map_lookup_elem(&mesh_listeners, &key);
	if (!sk && family == AF_INET) {
		key.family = AF_INET6;
		sk = bpf_map_lookup_elem(&mesh_listeners, &key);
	}
	if (!sk) {
		*why = (s->flags & BPFMESH_F_FAIL_OPEN) ? BPFMESH_C_IN_PASS_NO_PROXY : BPFMESH_C_IN_DROP_NO_PROXY;
		count(cookie, *why);
		return *why == BPFMESH_C_IN_PASS_NO_PROXY ? SK_PASS : SK_DROP;
	}
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	*why = err ? BPFMESH_C_IN_DROP_ASSIGN : BPFMESH_C_IN_STEERED;
	count(cookie, *why);
	return err ? SK_DROP : SK_PASS;
}

SEC("sk_lookup")
int mesh_sk_lookup(struct bpf_sk_lookup *ctx)
{
	__u64 cookie = pod_netns_cookie;
	struct inbound_conn c = {};
	struct pod_settings *s;
	__u32 family, local4, remote4, why;
	int verdict;

	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	s = settings_of(cookie);
	if (!s)
		return SK_PASS;

	/*
	 * barrier_var() pins each load to its branch: without it clang merges the
	 * IPv4 and IPv6 loads into one load through a computed ctx pointer, which
	 * the verifier refuses ("dereference of modified ctx ptr").
	 */
	family = ctx->family;
	c.local_port = ctx->local_port;
	c.remote_port = bpf_ntohs((__u16)ctx->remote_port);
	if (family == AF_INET) {
		local4 = ctx->local_ip4;
		remote4 = ctx->remote_ip4;
		barrier_var(local4);
		barrier_var(remote4);
		c.local[0] = local4;
		c.remote[0] = remote4;
	} else if (family == AF_INET6) {
		c.local[0] = ctx->local_ip6[0];
		c.local[1] = ctx->local_ip6[1];
		c.local[2] = ctx->local_ip6[2];
		c.local[3] = ctx->local_ip6[3];
		c.remote[0] = ctx->remote_ip6[0];
		c.remote[1] = ctx->remote_ip6[1];
		c.remote[2] = ctx->remote_ip6[2];
		c.remote[3] = ctx->remote_ip6[3];
	} else {
		return SK_PASS;
	}
	c.family = family;

	why = inbound_verdict(cookie, s, &c);
	if (why != BPFMESH_C_IN_STEERED) {
		observe_lookup(cookie, why, &c);
		return SK_PASS;
	}
	verdict = steer(ctx, cookie, s, family, &why);
	observe_lookup(cookie, why, &c);
	return verdict;
}
