// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Start-up probe of the socket path (src/intercept/probe-sockpath.ts): a
 * scratch SOCKMAP holding two connected loopback sockets, and an sk_msg
 * program that redirects every write of slot 0 into slot 1's receive queue,
 * as mesh_sk_msg does for an app<->proxy pair. User space then reads
 * whether the reader's sk_rmem_alloc counts the redirected bytes: the bound
 * in mesh_sk_msg depends on that (commits 54f89b3178d5 and d888b7af7c14:
 * 6.13, 6.12.8, 6.1.123). Nothing here is pinned.
 */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} probe_socks SEC(".maps");

/* [0]: messages redirected, [1]: bytes redirected. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} probe_stats SEC(".maps");

static __always_inline void add(__u32 slot, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&probe_stats, &slot);

	if (v)
		__sync_fetch_and_add(v, n);
}

SEC("sk_msg")
int probe_sk_msg(struct sk_msg_md *msg)
{
	__u32 size = msg->size;

	if (bpf_msg_redirect_map(msg, &probe_socks, 1, BPF_F_INGRESS) == SK_PASS) {
		add(0, 1);
		add(1, size);
	}
	return SK_PASS;
}
