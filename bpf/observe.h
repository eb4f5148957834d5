/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * bpfmesh observe: steering events into the ring buffer mesh_events. Every
 * emitting site is guarded by obs_on(), which costs one inlined ARRAY
 * lookup and one load while no observer holds the lease, so the programs
 * pay nothing measurable when observation is off. Include after common.h.
 */
#ifndef BPFMESH_OBSERVE_H
#define BPFMESH_OBSERVE_H

/*
 * Does an observer want this pod's events now? Off (until_ns == 0) reads
 * no clock; a pod the observer did not ask for is left out here, so it
 * takes no room in the ring (node-wide folders hold every pod's events).
 */
static __always_inline bool obs_on(__u64 netns_cookie)
{
	__u32 key = 0;
	struct obs_config *cfg = bpf_map_lookup_elem(&mesh_obs_cfg, &key);
	__u64 until, only;

	if (!cfg)
		return false;
	until = cfg->until_ns;
	if (until == 0)
		return false;
	only = cfg->netns_cookie;
	if (only != 0 && only != netns_cookie)
		return false;
	return bpf_ktime_get_ns() < until;
}

/* A zeroed event in the ring, or NULL (ring full: counted in mesh_obs_drops). */
static __always_inline struct obs_event *obs_reserve(__u64 netns_cookie, __u32 id)
{
	struct obs_event *e = bpf_ringbuf_reserve(&mesh_events, sizeof(*e), 0);
	__u32 key = 0;
	__u64 *drops;

	if (!e) {
		drops = bpf_map_lookup_elem(&mesh_obs_drops, &key);
		if (drops)
			*drops += 1; /* per-CPU slot */
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->netns_cookie = netns_cookie;
	e->event = id;
	e->uid = BPFMESH_ID_UNSET;
	return e;
}

/* The calling task: only in hooks that run in the task's context (connect, bind, getsockopt). */
static __always_inline void obs_task(struct obs_event *e)
{
	e->pid = (__u32)(bpf_get_current_pid_tgid() >> 32);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

/*
 * Hand the event to the reader. Waking the reader is an irq_work per event
 * (a self-IPI: a VM exit under a hypervisor, measured at several us), so
 * only a ring a quarter full wakes it; the reader also drains every
 * BPFMESH_OBS_POLL_MS on its own (src/observe/session.ts).
 */
static __always_inline void obs_submit(struct obs_event *e)
{
	__u64 waiting = bpf_ringbuf_query(&mesh_events, BPF_RB_AVAIL_DATA);

	bpf_ringbuf_submit(e, waiting >= BPFMESH_OBS_RING_BYTES / 4 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

static __always_inline void obs_copy_addr(__u32 out[4], const __u32 in[4])
{
	out[0] = in[0];
	out[1] = in[1];
	out[2] = in[2];
	out[3] = in[3];
}

/* From a connection seen from one end (local = src unless swap). */
static __always_inline void obs_tuple(struct obs_event *e, const struct sock_tuple *t, bool remote_is_src)
{
	e->family = t->family;
	if (remote_is_src) {
		obs_copy_addr(e->src_addr, t->remote_addr);
		obs_copy_addr(e->dst_addr, t->local_addr);
		e->src_port = (__u16)t->remote_port;
		e->dst_port = (__u16)t->local_port;
	} else {
		obs_copy_addr(e->src_addr, t->local_addr);
		obs_copy_addr(e->dst_addr, t->remote_addr);
		e->src_port = (__u16)t->local_port;
		e->dst_port = (__u16)t->remote_port;
	}
}

static __always_inline void obs_dst(struct obs_event *e, const struct orig_dst *d)
{
	e->family = d->family;
	obs_copy_addr(e->dst_addr, d->addr);
	e->dst_port = bpf_ntohs(d->port);
}

#endif /* BPFMESH_OBSERVE_H */
