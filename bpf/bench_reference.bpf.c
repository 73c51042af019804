// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A benchmark baseline, not part of the exporter: the approach IPsec flow
 * tools use today (NetObserv's eBPF agent, bpf/ipsec.h), rewritten small so
 * that `make bench` can compare our per-packet cost with it in the same VM
 * run. Loaded only by bench/baseline.
 *
 * kprobe on xfrm_input / xfrm_output: parse the skb's L2, L3 and L4 headers
 * into a flow id and store it in a hash map (BPF_F_NO_PREALLOC: an
 * allocation per packet) keyed by pid_tgid; kretprobe: look the id up, update
 * or insert the flow's per-CPU metrics with the return value, delete the
 * pid_tgid entry. Per packet and direction: kprobe + kretprobe, three hash
 * operations on the entry map and one or two on the flow map.
 *
 * Minimum kernel: 5.5 (CO-RE reads with bpf_probe_read_kernel).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define EEXIST 17
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define PROTO_TCP 6
#define PROTO_UDP 17

struct ref_flow_id {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u16 eth_protocol;
	__u8 proto;
	__u8 dir;
	__u32 if_index;
};

struct ref_metrics {
	__u64 start_ns;
	__u64 end_ns;
	__s32 ret;
	__u16 eth_protocol;
	__u8 encrypted;
	__u8 pad;
};

/* The packet a CPU's task is inside, per direction, as NetObserv keys it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
	__type(key, __u64);
	__type(value, struct ref_flow_id);
} ref_ingress SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
	__type(key, __u64);
	__type(value, struct ref_flow_id);
} ref_egress SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, struct ref_flow_id);
	__type(value, struct ref_metrics);
} ref_flows SEC(".maps");

static __always_inline void ref_enter(struct sk_buff *skb, void *entries, __u8 dir)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct ref_flow_id id = {};
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 mac = BPF_CORE_READ(skb, mac_header);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	struct ethhdr eth = {};
	__u8 vb = 0;

	id.dir = dir;
	id.if_index = BPF_CORE_READ(skb, skb_iif);
	bpf_probe_read_kernel(&eth, sizeof(eth), head + mac);
	id.eth_protocol = bpf_ntohs(eth.h_proto);
	bpf_probe_read_kernel(&vb, 1, head + nh);
	if ((vb >> 4) == 4) {
		struct iphdr ip = {};
		bpf_probe_read_kernel(&ip, sizeof(ip), head + nh);
		__builtin_memcpy(id.src, &ip.saddr, 4);
		__builtin_memcpy(id.dst, &ip.daddr, 4);
		id.proto = ip.protocol;
	} else if ((vb >> 4) == 6) {
		struct ipv6hdr ip6 = {};
		bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh);
		__builtin_memcpy(id.src, &ip6.saddr, 16);
		__builtin_memcpy(id.dst, &ip6.daddr, 16);
		id.proto = ip6.nexthdr;
	}
	if (id.proto == PROTO_TCP || id.proto == PROTO_UDP) {
		__be16 ports[2] = {};
		bpf_probe_read_kernel(ports, sizeof(ports), head + th);
		id.sport = bpf_ntohs(ports[0]);
		id.dport = bpf_ntohs(ports[1]);
	}
	bpf_map_update_elem(entries, &pid_tgid, &id, BPF_NOEXIST);
}

static __always_inline int ref_update(struct ref_flow_id *id, int ret)
{
	struct ref_metrics *m = bpf_map_lookup_elem(&ref_flows, id);
	if (!m)
		return -1;
	m->end_ns = bpf_ktime_get_ns();
	m->eth_protocol = id->eth_protocol;
	if (ret != 0) {
		m->ret = ret;
		m->encrypted = 0;
	} else {
		m->encrypted = 1;
	}
	return 0;
}

static __always_inline void ref_return(void *entries, int ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct ref_flow_id *id = bpf_map_lookup_elem(entries, &pid_tgid);
	if (!id)
		return;
	if (ref_update(id, ret) != 0) {
		__u64 now = bpf_ktime_get_ns();
		struct ref_metrics m = {
			.start_ns = now,
			.end_ns = now,
			.ret = ret,
			.eth_protocol = id->eth_protocol,
			.encrypted = ret == 0,
		};
		if (bpf_map_update_elem(&ref_flows, id, &m, BPF_NOEXIST) == -EEXIST)
			ref_update(id, ret);
	}
	bpf_map_delete_elem(entries, &pid_tgid);
}

SEC("kprobe/xfrm_input")
int BPF_KPROBE(ref_kprobe_xfrm_input, struct sk_buff *skb)
{
	if (skb)
		ref_enter(skb, &ref_ingress, 1);
	return 0;
}

SEC("kretprobe/xfrm_input")
int BPF_KRETPROBE(ref_kretprobe_xfrm_input, int ret)
{
	ref_return(&ref_ingress, ret);
	return 0;
}

SEC("kprobe/xfrm_output")
int BPF_KPROBE(ref_kprobe_xfrm_output, struct sock *sk, struct sk_buff *skb)
{
	if (skb)
		ref_enter(skb, &ref_egress, 2);
	return 0;
}

SEC("kretprobe/xfrm_output")
int BPF_KRETPROBE(ref_kretprobe_xfrm_output, int ret)
{
	ref_return(&ref_egress, ret);
	return 0;
}
