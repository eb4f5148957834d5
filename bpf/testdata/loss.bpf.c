// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A test fixture, not part of the data path: a tc ingress program for a test
 * pod's lo that makes the peer of one port (the proxy's) receive a
 * retransmission that partly overlaps bytes it already has
 * (seq < rcv_nxt < end_seq), the case tcp_read_skb() hands whole to an
 * sk_skb verdict. Without it that case is rare on loopback (about 1-2 % of
 * 64 MiB stress runs, where the sender collapses a retransmission) and this
 * kernel has no netem.
 *
 * Per direction A->B of every connection to or from the port:
 *   1. With a random chance (loss_per_mille), a data segment s of A's is
 *      delivered cut short: its IPv4 total length is lowered so B receives
 *      only its first half (ip_rcv trims the rest). B's rcv_nxt is then in
 *      the middle of s.
 *   2. From then on every segment B->A is dropped (B's ACKs, and B's own
 *      data and retransmissions, which carry the same ACK), so A never
 *      learns how much of s arrived.
 *   3. A's retransmission timer fires and A resends s from its start: that
 *      segment straddles B's rcv_nxt. The first retransmission A->B ends
 *      step 2. If both directions block each other, each side's
 *      retransmission releases the other, and a block ends after
 *      loss_block_max_ns anyway.
 * The pod must run with net.ipv4.tcp_early_retrans=0: a tail loss probe
 * would resend A's last segment instead, and B's answer to it would tell A
 * where B stands.
 *
 * Ingress, not egress: a drop at egress is reported back to TCP
 * (NET_XMIT_DROP), which keeps the segment queued and sends it again, so
 * the peer never sees a loss. Loopback segments carry CHECKSUM_PARTIAL, so
 * only the IPv4 header checksum needs fixing after the cut.
 *
 * Loaded with iproute2 (tc filter add dev lo ingress bpf direct-action obj
 * loss.bpf.o sec tc); tc cannot set .rodata, so the knobs are the defaults
 * below. SYN, FIN and RST segments always pass. Everything done is counted
 * in the .bss (bpftool map dump of the program's .bss map).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define ETH_HLEN_    14
#define ETH_P_IP_    0x0800
#define TC_ACT_OK_   0
#define TC_ACT_SHOT_ 2
#define IP_TOT_LEN_OFF (ETH_HLEN_ + 2)
#define IP_CSUM_OFF    (ETH_HLEN_ + 10)

const volatile __u16 loss_port = 4140;
const volatile __u32 loss_per_mille = 20;
/* Segments shorter than this are left whole (the overlap is half of one). */
const volatile __u32 loss_min_len = 256;
/* A direction blocked longer than this is released. */
const volatile __u64 loss_block_max_ns = 3000000000ull;

__u64 loss_seen_data = 0;
__u64 loss_cut = 0;            /* segments delivered cut short (step 1) */
__u64 loss_dropped = 0;        /* segments B->A dropped (step 2) */
__u64 loss_retransmits = 0;    /* retransmissions A->B seen */
__u64 loss_straddling = 0;     /* of those, ones that start before a cut and end after it */

struct flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
};

struct flow {
	__u32 next;     /* one past the highest data byte A sent (whether B got it or not) */
	__u32 cut;      /* where the cut segment was cut: B's rcv_nxt until A retransmits; 0 if none */
	__u64 blocked;  /* ktime when B->A started being dropped, 0 if not */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct flow_key);
	__type(value, struct flow);
} loss_flows SEC(".maps");

static __always_inline bool blocked(struct flow *f)
{
	if (!f->blocked)
		return false;
	if (bpf_ktime_get_ns() - f->blocked < loss_block_max_ns)
		return true;
	f->blocked = 0;
	return false;
}

/* Lowers the IPv4 total length by drop bytes, so ip_rcv trims the segment's tail. */
static __always_inline int cut_tail(struct __sk_buff *skb, __u16 tot_len, __u32 drop)
{
	__be16 old_len = bpf_htons(tot_len), new_len = bpf_htons(tot_len - drop);

	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_len, new_len, sizeof(new_len)))
		return -1;
	return bpf_skb_store_bytes(skb, IP_TOT_LEN_OFF, &new_len, sizeof(new_len), 0);
}

SEC("tc")
int loss(struct __sk_buff *skb)
{
	struct flow_key key = {}, rkey = {};
	struct flow *f, *rev, fresh = {};
	struct iphdr ip;
	struct tcphdr th;
	__u32 ihl, len, seq, end;
	bool retrans;

	if (skb->protocol != bpf_htons(ETH_P_IP_))
		return TC_ACT_OK_;
	if (bpf_skb_load_bytes(skb, ETH_HLEN_, &ip, sizeof(ip)) || ip.protocol != IPPROTO_TCP)
		return TC_ACT_OK_;
	ihl = ip.ihl * 4;
	if (ihl < sizeof(ip) || bpf_skb_load_bytes(skb, ETH_HLEN_ + ihl, &th, sizeof(th)))
		return TC_ACT_OK_;
	if (th.source != bpf_htons(loss_port) && th.dest != bpf_htons(loss_port))
		return TC_ACT_OK_;
	if (th.syn || th.fin || th.rst)
		return TC_ACT_OK_;

	key.saddr = ip.saddr;
	key.daddr = ip.daddr;
	key.sport = th.source;
	key.dport = th.dest;
	rkey.saddr = ip.daddr;
	rkey.daddr = ip.saddr;
	rkey.sport = th.dest;
	rkey.dport = th.source;
	len = bpf_ntohs(ip.tot_len) - ihl - th.doff * 4;
	seq = bpf_ntohl(th.seq);
	end = seq + len;

	f = bpf_map_lookup_elem(&loss_flows, &key);
	if (len && !f) {
		fresh.next = end;
		bpf_map_update_elem(&loss_flows, &key, &fresh, BPF_ANY);
		return TC_ACT_OK_;
	}
	retrans = len && f && (__s32)(seq - f->next) < 0;
	if (retrans) {
		__sync_fetch_and_add(&loss_retransmits, 1);
		if (f->cut && (__s32)(seq - f->cut) < 0 && (__s32)(end - f->cut) > 0)
			__sync_fetch_and_add(&loss_straddling, 1);
		f->cut = 0;
		f->blocked = 0;
		if ((__s32)(end - f->next) > 0)
			f->next = end;
	}
	/* Step 2: nothing B sends reaches A while A->B is blocked. */
	rev = bpf_map_lookup_elem(&loss_flows, &rkey);
	if (rev && blocked(rev)) {
		__sync_fetch_and_add(&loss_dropped, 1);
		return TC_ACT_SHOT_;
	}
	if (retrans || !len || !f)
		return TC_ACT_OK_;
	__sync_fetch_and_add(&loss_seen_data, 1);
	f->next = end;
	if (f->blocked || len < loss_min_len || bpf_get_prandom_u32() % 1000 >= loss_per_mille)
		return TC_ACT_OK_;
	/* Step 1. */
	if (cut_tail(skb, bpf_ntohs(ip.tot_len), len - len / 2))
		return TC_ACT_OK_;
	__sync_fetch_and_add(&loss_cut, 1);
	f->cut = seq + len / 2;
	f->blocked = bpf_ktime_get_ns();
	return TC_ACT_OK_;
}
