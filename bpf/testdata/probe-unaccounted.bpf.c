// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test fixture: probe.bpf.o's interface, but the redirect goes to slot 1's
 * egress, so the bytes leave the receiving socket instead of queueing in
 * it. To the start-up probe this looks like a kernel that does not count
 * redirected bytes in the receiver's sk_rmem_alloc (before 6.1.123,
 * 6.12.8, 6.13): the socket path must then stay off
 * (test/kernel/sockpath-bound.test.ts, BPFMESH_OBJECT_PROBE).
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

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} probe_stats SEC(".maps");

SEC("sk_msg")
int probe_sk_msg(struct sk_msg_md *msg)
{
	__u32 size = msg->size, slot;
	__u64 *v;

	if (bpf_msg_redirect_map(msg, &probe_socks, 1, 0) != SK_PASS)
		return SK_PASS;
	slot = 0;
	v = bpf_map_lookup_elem(&probe_stats, &slot);
	if (v)
		__sync_fetch_and_add(v, 1);
	slot = 1;
	v = bpf_map_lookup_elem(&probe_stats, &slot);
	if (v)
		__sync_fetch_and_add(v, size);
	return SK_PASS;
}
