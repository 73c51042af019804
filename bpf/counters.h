/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet and byte counters in per-CPU maps, shared by every program of the
 * project. The includer provides __u64 (vmlinux.h or linux/types.h) and the
 * libbpf helpers (bpf/bpf_helpers.h).
 *
 * Atomic or plain add? A per-CPU slot has one writer CPU, so the only race
 * is a second writer on the same CPU interrupting the first between its load
 * and its store:
 *
 * - Tracing programs (fentry/fexit, kprobes, tracepoints) run in whatever
 *   context the hooked function runs in. The XFRM functions run in process
 *   context (sendmsg -> xfrm_output) and in softirq (receive, and TCP ACKs
 *   sent from softirq), and a softirq can interrupt a process-context program
 *   on the same CPU: the BPF trampoline and kprobe handlers disable
 *   migration, not bottom halves, and preemptible kernels can also switch
 *   tasks there. Both contexts can hit the same key (encrypt ok towards one
 *   peer), so these adds must be atomic. An uncontended lock-prefixed add on
 *   a cache line the CPU owns costs a few cycles.
 * - TC programs run with bottom halves disabled (ingress in softirq, egress
 *   under rcu_read_lock_bh in __dev_queue_xmit), so nothing else that writes
 *   their maps can run on that CPU in between: a plain add is exact.
 * - A value shared by all CPUs (a plain hash map, like wire.bpf.c's
 *   wire_peers) has writers on every CPU at once, whatever the context:
 *   atomic.
 */
#ifndef COUNTERS_H
#define COUNTERS_H

/* counter_add_atomic adds to a packets/bytes pair that programs in
 * different contexts of one CPU (tracing programs), or on several CPUs (a
 * shared value), may update. */
static __always_inline void counter_add_atomic(__u64 *packets, __u64 *bytes, __u64 n, __u64 len)
{
	__sync_fetch_and_add(packets, n);
	__sync_fetch_and_add(bytes, len);
}

/* counter_add_bh adds to a pair only programs running with bottom halves
 * disabled update (TC programs). */
static __always_inline void counter_add_bh(__u64 *packets, __u64 *bytes, __u64 n, __u64 len)
{
	*packets += n;
	*bytes += len;
}

#endif /* COUNTERS_H */
