// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// wire.bpf.c: counts every packet on an interface by IPsec class (ESP,
// ESP-in-UDP, AH, IKE, plaintext, ...) and the plaintext packets to or from
// an IPsec peer. Attached as a TC classifier (tcx or clsact/cls_bpf) at
// ingress and egress; it only reads the packet and always returns
// TC_ACT_UNSPEC (== TCX_NEXT), so the next filter or program decides.
//
// Minimum kernel: 5.7 for __sk_buff.gso_segs with bpf_skb_load_bytes_relative
// (4.18) — both Debian 6.1 and 6.12 have them. tcx (6.6) is optional: the Go
// side falls back to clsact + cls_bpf. Only uapi headers are used: a
// classifier needs no kernel internals, so no CO-RE and no vmlinux.h.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Classes, in the order internal/wire/class.go names them.
enum wire_class {
	WIRE_PLAINTEXT = 0,    // IP, not IPsec
	WIRE_ESP = 1,          // IP protocol 50
	WIRE_ESP_IN_UDP = 2,   // UDP port 4500, non-zero SPI (RFC 3948)
	WIRE_IKE = 3,          // UDP 500; UDP 4500 with the non-ESP marker or NAT keepalive
	WIRE_AH = 4,           // IP protocol 51: authenticated, not encrypted
	WIRE_UDP_FRAGMENT = 5, // a non-first UDP fragment: ports unknown
	WIRE_NON_IP = 6,       // ARP, LLDP, ... (not IPv4 or IPv6)
};

enum wire_direction {
	WIRE_INGRESS = 0,
	WIRE_EGRESS = 1,
};

// Indexes of wire_overflow: which map was full when a new key came.
enum wire_overflow_index {
	OVERFLOW_WIRE_COUNTERS = 0,
	OVERFLOW_UNPROTECTED_COUNTERS = 1,
	OVERFLOW_MAX = 2,
};

struct wire_key {
	__u32 ifindex;
	__u8 direction;
	__u8 class;
	__u16 pad;
};

struct wire_value {
	__u64 packets;
	__u64 bytes;
};

// An address as IPv6; IPv4 as IPv4-mapped (::ffff:a.b.c.d).
struct peer_key {
	__u8 addr[16];
};

struct unprotected_key {
	__u8 addr[16];
	__u8 direction;
	__u8 pad[3];
};

// Map sizes are defaults; the loader may change max_entries before loading.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct wire_key);
	__type(value, struct wire_value);
} wire_counters SEC(".maps");

// Filled by user space from the kernel's SAs and policies; the value is unused.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct peer_key);
	__type(value, __u8);
} wire_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 2048);
	__type(key, struct unprotected_key);
	__type(value, struct wire_value);
} unprotected_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OVERFLOW_MAX);
	__type(key, __u32);
	__type(value, __u64);
} wire_overflow SEC(".maps");

#define IKE_PORT 500
#define NATT_PORT 4500
#define IP_OFFSET_MASK 0x1fff
#define IPV6_FRAG_OFFSET_MASK 0xfff8
#define MAX_IPV6_EXT_HEADERS 6
#define ESP_HEADER_LEN 8 // SPI and sequence number
#define EEXIST_ 17

// What classify found: the class and, for plaintext, whether the remote
// address should be looked up in wire_peers.
struct verdict {
	__u8 class;
	__u8 check_peer;
	struct peer_key remote;
};

static __always_inline int load_net(struct __sk_buff *skb, __u32 off, void *to, __u32 len)
{
	return bpf_skb_load_bytes_relative(skb, off, to, len, BPF_HDR_START_NET);
}

// UDP classes mirror the kernel's own decision in xfrm4_udp_encap_rcv: a
// payload longer than an ESP header whose first word (the SPI) is not zero is
// ESP; anything else on port 4500 -- the 4-byte zero non-ESP marker before an
// IKE message, the 1-byte 0xff NAT keepalive -- belongs to the IKE daemon.
static __always_inline __u8 classify_udp(struct __sk_buff *skb, __u32 off)
{
	struct {
		__be16 source;
		__be16 dest;
		__be16 len;
		__be16 check;
	} udp;
	__u32 payload_len;
	__u32 word = 0;


	if (load_net(skb, off, &udp, sizeof(udp)) < 0)
		return WIRE_PLAINTEXT;
	if (udp.source == bpf_htons(IKE_PORT) || udp.dest == bpf_htons(IKE_PORT))
		return WIRE_IKE;
	if (udp.source != bpf_htons(NATT_PORT) && udp.dest != bpf_htons(NATT_PORT))
		return WIRE_PLAINTEXT;

	payload_len = bpf_ntohs(udp.len);
	if (payload_len <= sizeof(udp) + ESP_HEADER_LEN)
		return WIRE_IKE;
	if (load_net(skb, off + sizeof(udp), &word, sizeof(word)) < 0)
		return WIRE_IKE;
	return word != 0 ? WIRE_ESP_IN_UDP : WIRE_IKE;
}

// classify_l4 decides by protocol once the headers before it are known.
// first is false for a non-first fragment, which carries no L4 header.
static __always_inline void classify_l4(struct __sk_buff *skb, __u8 proto, __u32 off, int first,
					struct verdict *v)
{
	switch (proto) {
	case IPPROTO_ESP:
		v->class = WIRE_ESP;
		return;
	case IPPROTO_AH:
		v->class = WIRE_AH;
		return;
	case IPPROTO_UDP:
		v->class = first ? classify_udp(skb, off) : WIRE_UDP_FRAGMENT;
		break;
	case IPPROTO_ICMPV6:
		v->class = WIRE_PLAINTEXT;
		if (first) {
			__u8 type = 0;
			// Neighbour discovery (133-137) cannot be protected by
			// IPsec; it is plaintext but not a leak to the peer.
			if (load_net(skb, off, &type, 1) == 0 && type >= 133 && type <= 137)
				return;
		}
		break;
	default:
		v->class = WIRE_PLAINTEXT;
		break;
	}
	v->check_peer = v->class == WIRE_PLAINTEXT;
}

static __always_inline void classify_ipv4(struct __sk_buff *skb, __u8 direction, struct verdict *v)
{
	struct {
		__u8 ver_ihl;
		__u8 tos;
		__be16 tot_len;
		__be16 id;
		__be16 frag_off;
		__u8 ttl;
		__u8 protocol;
		__be16 check;
		__be32 saddr;
		__be32 daddr;
	} ip;
	__u32 ihl;

	v->class = WIRE_PLAINTEXT;
	if (load_net(skb, 0, &ip, sizeof(ip)) < 0 || ip.ver_ihl >> 4 != 4)
		return;
	ihl = (ip.ver_ihl & 0x0f) * 4;
	if (ihl < sizeof(ip))
		return;

	v->remote.addr[10] = 0xff;
	v->remote.addr[11] = 0xff;
	__builtin_memcpy(&v->remote.addr[12], direction == WIRE_INGRESS ? &ip.saddr : &ip.daddr, 4);
	classify_l4(skb, ip.protocol, ihl, (ip.frag_off & bpf_htons(IP_OFFSET_MASK)) == 0, v);
}

static __always_inline void classify_ipv6(struct __sk_buff *skb, __u8 direction, struct verdict *v)
{
	struct {
		__be32 ver_tc_flow;
		__be16 payload_len;
		__u8 nexthdr;
		__u8 hop_limit;
		__u8 saddr[16];
		__u8 daddr[16];
	} ip6;
	struct {
		__u8 nexthdr;
		__u8 hdrlen;
		__be16 frag_off; // only meaningful in a fragment header
	} ext;
	__u32 off = sizeof(ip6);
	__u8 proto;
	int first = 1;

	v->class = WIRE_PLAINTEXT;
	if (load_net(skb, 0, &ip6, sizeof(ip6)) < 0 || (ip6.ver_tc_flow & bpf_htonl(0xf0000000)) != bpf_htonl(0x60000000))
		return;
	__builtin_memcpy(v->remote.addr, direction == WIRE_INGRESS ? ip6.saddr : ip6.daddr, 16);
	v->check_peer = 1;
	proto = ip6.nexthdr;

#pragma unroll
	for (int i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
		if (proto != IPPROTO_HOPOPTS && proto != IPPROTO_ROUTING && proto != IPPROTO_DSTOPTS &&
		    proto != IPPROTO_FRAGMENT)
			break;
		if (load_net(skb, off, &ext, sizeof(ext)) < 0)
			return;
		if (proto == IPPROTO_FRAGMENT) {
			if (ext.frag_off & bpf_htons(IPV6_FRAG_OFFSET_MASK))
				first = 0;
			off += 8;
		} else {
			off += (ext.hdrlen + 1) * 8;
		}
		proto = ext.nexthdr;
	}
	// More extension headers than we follow: plaintext, peer still checked.
	if (proto == IPPROTO_HOPOPTS || proto == IPPROTO_ROUTING || proto == IPPROTO_DSTOPTS ||
	    proto == IPPROTO_FRAGMENT)
		return;
	v->check_peer = 0;
	classify_l4(skb, proto, off, first, v);
}

static __always_inline void add(void *map, void *key, __u32 overflow_index, __u64 packets, __u64 bytes)
{
	struct wire_value *val = bpf_map_lookup_elem(map, key);

	if (!val) {
		struct wire_value zero = {};
		long err = bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
		if (err && err != -EEXIST_ /* another CPU was first */) {
			__u64 *overflow = bpf_map_lookup_elem(&wire_overflow, &overflow_index);
			if (overflow)
				*overflow += 1;
			return;
		}
		val = bpf_map_lookup_elem(map, key);
		if (!val)
			return;
	}
	val->packets += packets;
	val->bytes += bytes;
}

// decrypted tells whether IPsec already decrypted this packet: the inner
// packet of a tunnel-mode SA re-enters the receive path on the same device
// (xfrm_input -> gro_cells_receive) and passes the ingress hook a second
// time. Its ESP packet was counted; the inner one is not on the wire.
static __always_inline int decrypted(struct __sk_buff *skb)
{
	struct bpf_xfrm_state x;

	return bpf_skb_get_xfrm_state(skb, 0, &x, sizeof(x), 0) == 0;
}

static __always_inline int count(struct __sk_buff *skb, __u8 direction)
{
	struct verdict v = {};
	__u64 packets = skb->gso_segs ? skb->gso_segs : 1;

	if (direction == WIRE_INGRESS && decrypted(skb))
		return TC_ACT_UNSPEC;

	if (skb->protocol == bpf_htons(ETH_P_IP))
		classify_ipv4(skb, direction, &v);
	else if (skb->protocol == bpf_htons(ETH_P_IPV6))
		classify_ipv6(skb, direction, &v);
	else
		v.class = WIRE_NON_IP;

	struct wire_key key = {
		.ifindex = skb->ifindex,
		.direction = direction,
		.class = v.class,
	};
	add(&wire_counters, &key, OVERFLOW_WIRE_COUNTERS, packets, skb->len);

	if (v.check_peer && bpf_map_lookup_elem(&wire_peers, &v.remote)) {
		struct unprotected_key ukey = {.direction = direction};
		__builtin_memcpy(ukey.addr, v.remote.addr, 16);
		add(&unprotected_counters, &ukey, OVERFLOW_UNPROTECTED_COUNTERS, packets, skb->len);
	}
	return TC_ACT_UNSPEC;
}

SEC("tc")
int wire_ingress(struct __sk_buff *skb)
{
	return count(skb, WIRE_INGRESS);
}

SEC("tc")
int wire_egress(struct __sk_buff *skb)
{
	return count(skb, WIRE_EGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
