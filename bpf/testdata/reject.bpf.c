// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A test fixture, not part of the data path: a program that compiles
 * cleanly but that the verifier rejects, always and for the same reason, so
 * tests can check that a verifier rejection reaches the caller as an error
 * carrying the verifier's log (errno EACCES, log mentioning
 * "invalid bpf_context access").
 *
 * It reads 4 bytes at offset 1024 of struct bpf_sock_addr, far past its end;
 * sock_addr_is_valid_access() refuses any offset beyond the struct on every
 * kernel, so the rejection does not depend on the kernel version.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("cgroup/connect4")
int mesh_reject(struct bpf_sock_addr *ctx)
{
	/* volatile keeps clang from folding the read away. */
	volatile __u32 past_end = *(volatile __u32 *)((char *)ctx + 1024);

	return past_end ? 1 : 0;
}
