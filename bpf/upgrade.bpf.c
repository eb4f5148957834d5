/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Upgrade in place (src/intercept/upgrade.ts): copies the members of an old
 * SOCKHASH into this layout's one, which user space cannot do (it would
 * need each socket's fd). Loaded with the new maps folder as its pin root,
 * so the maps below are the new ones; run as an iterator over the old map
 * (SEC("iter/sockmap"): 5.10+, like updating a sockhash from an iterator).
 * Only mesh_listeners: a socket of mesh_sock_pairs already has a psock with
 * the old sk_msg program, and a second map with programs refuses it
 * (EBUSY); those connections keep the old programs until they close.
 * Writes one byte per socket copied, so the reader counts them.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "bpfmesh.h"
#include "maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("iter/sockmap")
int mesh_copy_listeners(struct bpf_iter__sockmap *ctx)
{
	struct listener_key *key = ctx->key;
	struct sock *sk = ctx->sk;
	struct listener_key k;
	char one = 1;

	if (!key || !sk)
		return 0;
	/* The iterator's key is a read-only buffer, which 6.1's map helpers do not take: copy it to the stack. */
	__builtin_memcpy(&k, key, sizeof(k));
	if (bpf_map_update_elem(&mesh_listeners, &k, sk, BPF_ANY) == 0)
		bpf_seq_write(ctx->meta->seq, &one, sizeof(one));
	return 0;
}
