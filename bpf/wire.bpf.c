// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// wire.bpf.c: counts every packet on an interface by IPsec class (ESP,
// ESP-in-UDP, AH, IKE, plaintext, ...) and the plaintext packets to or from
// a known IPsec peer. Attached as a TC classifier (tcx or clsact/cls_bpf) at
// ingress and egress; it only reads the packet and always returns
// TC_ACT_UNSPEC (== TCX_NEXT), so the next filter or program decides.
//
// It runs on every packet of every watched interface, IPsec or not, so the
// common path is a handful of loads: headers read in place (direct packet
// access), one per-CPU array slot per packet, and the peer map consulted
// only for plaintext whose remote address passes a one-word filter.
//
// Minimum kernel: 5.7 for __sk_buff.gso_size (gso_segs is 5.1), with
// bpf_skb_load_bytes_relative (4.18) and direct packet access for
// classifiers (4.7) — both Debian 6.1 and 6.12 have them. tcx (6.6) is
// optional: the Go side falls back to clsact + cls_bpf. Only uapi headers
// are used: a classifier needs no kernel internals, so no CO-RE and no
// vmlinux.h.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "counters.h"

// The classes; internal/wire names them from the generated wireWireClass.
enum wire_class {
	WIRE_PLAINTEXT = 0,    // IP, not IPsec
	WIRE_ESP = 1,          // IP protocol 50
	WIRE_ESP_IN_UDP = 2,   // UDP port 4500, non-zero SPI (RFC 3948)
	WIRE_IKE = 3,          // UDP 500; UDP 4500 with the non-ESP marker or NAT keepalive
	WIRE_AH = 4,           // IP protocol 51: authenticated, not encrypted
	WIRE_UDP_FRAGMENT = 5, // a non-first UDP fragment: ports unknown
	WIRE_NON_IP = 6,       // ARP, LLDP, ... (not IPv4 or IPv6)
	WIRE_CLASSES = 7,      // the number of classes, not a class
};

enum wire_direction {
	WIRE_INGRESS = 0,
	WIRE_EGRESS = 1,
	WIRE_DIRECTIONS = 2, // the number of directions, not a direction
};

// The enums reach BTF, and so bpf2go's -type, only through something typed
// with them: two read-only anchors, in the .rodata every instance has anyway.
const volatile enum wire_class wire_class_type = WIRE_PLAINTEXT;
const volatile enum wire_direction wire_direction_type = WIRE_INGRESS;

struct wire_counter {
	__u64 packets;
	__u64 bytes;
};

// Set by the loader for each interface: every interface has its own
// instance of the programs, so these are constants the verifier folds.
//
// netns_slot: the namespace of the interface, in the peer map's keys (a
// peer of one namespace is not one of another).
volatile const __u32 netns_slot = 0;
// ethernet: frames start with a 14-byte Ethernet header (ARPHRD_ETHER), so
// the network header is at data + ETH_HLEN and can be read in place. Other
// link types read through bpf_skb_load_bytes_relative.
volatile const __u8 ethernet = 1;
// sec_path_ext: 1 << SKB_EXT_SEC_PATH, the secpath's bit in
// skb->active_extensions (the enum's value depends on the kernel's config:
// user space reads it from the kernel's BTF), when the kernel has
// bpf_cast_to_kern_ctx (6.2+) and the process may read through it; then the
// ingress program tests the bit itself and calls bpf_skb_get_xfrm_state only
// for a packet that has a secpath (see decrypted). 0: the kfunc call is
// dead code the verifier removes, and the helper is asked every time.
volatile const __u8 sec_path_ext = 0;

// This interface's counters, indexed by direction * WIRE_CLASSES + class:
// a fixed key space, so nothing can overflow. Each interface's instance
// has a map of its own, gone with the interface.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WIRE_DIRECTIONS * WIRE_CLASSES);
	__type(key, __u32);
	__type(value, struct wire_counter);
} wire_counters SEC(".maps");

// A known peer of a namespace; IPv4 as IPv4-mapped (::ffff:a.b.c.d).
struct peer_key {
	__u32 netns;
	__u8 addr[16];
};

// What reached a peer unprotected, by direction.
struct peer_counters {
	struct wire_counter unprotected[WIRE_DIRECTIONS];
};

// The known peers of every watched namespace, shared by all instances and
// kept by user space (internal/peers). The value holds the peer's counters:
// the lookup that finds a peer also finds where to count. Updated
// atomically: the value is shared by all CPUs, and plaintext to a peer is
// rare (a policy hole, a dead tunnel). Not preallocated: memory follows the
// peers there are, max_entries (set by the loader) only bounds them.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct peer_key);
	__type(value, struct peer_counters);
} wire_peers SEC(".maps");

// One bit per hash of (namespace, address): a clear bit means "no peer
// there", so plaintext to a non-peer costs a few instructions instead of a
// hash lookup. User space sets the bits of every peer before adding it to
// wire_peers and clears them only after removing it: the filter never hides
// a peer. 2^18 bits: with 10,000 peers, 4% of plaintext goes on to the
// lookup. A global in a data section of its own (a one-element array map
// that every instance shares): the program addresses it directly, without a
// map lookup. peers is non-zero when any peer has bits set: on a node
// without IPsec peers plaintext skips even the hash.
#define PEER_FILTER_BITS 18
#define PEER_FILTER_WORDS (1 << (PEER_FILTER_BITS - 6))
struct peer_filter {
	__u64 peers;
	__u64 words[PEER_FILTER_WORDS];
};
struct peer_filter wire_peer_filter SEC(".data.wire_peer_filter") = {};

#define IKE_PORT 500
#define NATT_PORT 4500
#define IP_OFFSET_MASK 0x1fff
#define IPV6_FRAG_OFFSET_MASK 0xfff8
#define MAX_IPV6_EXT_HEADERS 6
#define ESP_HEADER_LEN 8 // SPI and sequence number

// The kernel's own sk_buff, through bpf_cast_to_kern_ctx: only the field
// decrypted reads, its offset relocated by CO-RE from the kernel's BTF.
struct sk_buff {
	__u8 active_extensions;
} __attribute__((preserve_access_index));

// Weak: 6.1 does not have it; sec_path_ext is then 0 and the call dead code.
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;

// Where the network header is: in place, or only through the helper.
struct pkt {
	struct __sk_buff *skb;
	void *net; // the network header in the linear data, or NULL
	void *end;
};

// hdr returns len bytes at offset off from the network header: in place
// when they are in the packet's linear data, else copied into buf (a
// header in a page fragment, a link type whose header length is not
// known); NULL when the packet is shorter.
static __always_inline void *hdr(struct pkt *p, __u32 off, void *buf, __u32 len)
{
	if (p->net) {
		void *at = p->net + off;
		if (at + len <= p->end)
			return at;
	}
	if (bpf_skb_load_bytes_relative(p->skb, off, buf, len, BPF_HDR_START_NET) < 0)
		return NULL;
	return buf;
}

struct udp_hdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__be16 check;
};

// CHECK_PEER is or'ed into a class when the packet's remote address is to
// be looked up as a peer: plaintext that IPsec could have protected.
#define CHECK_PEER 0x80

// UDP classes mirror the kernel's own decision in xfrm4_udp_encap_rcv: a
// payload longer than an ESP header whose first word (the SPI) is not zero is
// ESP; anything else on port 4500 -- the 4-byte zero non-ESP marker before an
// IKE message, the 1-byte 0xff NAT keepalive -- belongs to the IKE daemon.
static __always_inline __u8 classify_udp(struct pkt *p, __u32 off)
{
	struct udp_hdr ubuf;
	__u32 wbuf;

	struct udp_hdr *udp = hdr(p, off, &ubuf, sizeof(ubuf));
	if (!udp)
		return WIRE_PLAINTEXT | CHECK_PEER;
	if (udp->source == bpf_htons(IKE_PORT) || udp->dest == bpf_htons(IKE_PORT))
		return WIRE_IKE;
	if (udp->source != bpf_htons(NATT_PORT) && udp->dest != bpf_htons(NATT_PORT))
		return WIRE_PLAINTEXT | CHECK_PEER;
	if (bpf_ntohs(udp->len) <= sizeof(ubuf) + ESP_HEADER_LEN)
		return WIRE_IKE;
	__u32 *spi = hdr(p, off + sizeof(ubuf), &wbuf, sizeof(wbuf));
	if (!spi)
		return WIRE_IKE;
	return *spi != 0 ? WIRE_ESP_IN_UDP : WIRE_IKE;
}

// classify_l4 decides by protocol once the headers before it are known.
// first is false for a non-first fragment, which carries no L4 header.
static __always_inline __u8 classify_l4(struct pkt *p, __u8 proto, __u32 off, int first)
{
	switch (proto) {
	case IPPROTO_ESP:
		return WIRE_ESP;
	case IPPROTO_AH:
		return WIRE_AH;
	case IPPROTO_UDP:
		return first ? classify_udp(p, off) : WIRE_UDP_FRAGMENT;
	case IPPROTO_ICMPV6:
		if (first) {
			__u8 tbuf;
			__u8 *type = hdr(p, off, &tbuf, 1);
			// Neighbour discovery (133-137) cannot be protected by
			// IPsec; it is plaintext but not a leak to the peer.
			if (type && *type >= 133 && *type <= 137)
				return WIRE_PLAINTEXT;
		}
		break;
	}
	return WIRE_PLAINTEXT | CHECK_PEER;
}

struct ipv4_hdr {
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
};

struct ipv6_hdr {
	__be32 ver_tc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__be32 saddr[4];
	__be32 daddr[4];
};

struct ipv6_ext {
	__u8 nexthdr;
	__u8 hdrlen;
	__be16 frag_off; // only meaningful in a fragment header
};

// remote is the address to look up as a peer: where it is in the network
// header (in the packet, or in the copy of it), and whether it is IPv4.
// It is read only for plaintext that IPsec could have protected: ESP, the
// common case on a tunnel's uplink, never touches it.
struct remote {
	const __be32 *a;
	int v4;
};

// The network header when it is copied out of the packet (see hdr).
union net_hdr {
	struct ipv4_hdr v4;
	struct ipv6_hdr v6;
};

static __always_inline __u8 classify_ipv4(struct pkt *p, const __u8 direction, struct remote *r,
					  union net_hdr *buf)
{
	struct ipv4_hdr *ip = hdr(p, 0, &buf->v4, sizeof(buf->v4));
	if (!ip)
		return WIRE_PLAINTEXT;
	__u32 ihl = sizeof(buf->v4);
	if (ip->ver_ihl != 0x45) { // options, or not IPv4 at all
		if (ip->ver_ihl >> 4 != 4)
			return WIRE_PLAINTEXT;
		ihl = (ip->ver_ihl & 0x0f) * 4;
		if (ihl < sizeof(buf->v4))
			return WIRE_PLAINTEXT;
	}
	r->a = direction == WIRE_INGRESS ? &ip->saddr : &ip->daddr;
	r->v4 = 1;
	return classify_l4(p, ip->protocol, ihl, (ip->frag_off & bpf_htons(IP_OFFSET_MASK)) == 0);
}

static __always_inline __u8 classify_ipv6(struct pkt *p, const __u8 direction, struct remote *r,
					  union net_hdr *buf)
{
	struct ipv6_ext ebuf;
	__u32 off = sizeof(buf->v6);
	int first = 1;

	struct ipv6_hdr *ip6 = hdr(p, 0, &buf->v6, sizeof(buf->v6));
	if (!ip6 || (ip6->ver_tc_flow & bpf_htonl(0xf0000000)) != bpf_htonl(0x60000000))
		return WIRE_PLAINTEXT;
	r->a = direction == WIRE_INGRESS ? ip6->saddr : ip6->daddr;
	r->v4 = 0;
	__u8 proto = ip6->nexthdr;
	// Extension headers are rare: most packets leave at the first test.
#pragma unroll
	for (int i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
		if (proto != IPPROTO_HOPOPTS && proto != IPPROTO_ROUTING && proto != IPPROTO_DSTOPTS &&
		    proto != IPPROTO_FRAGMENT)
			break;
		struct ipv6_ext *ext = hdr(p, off, &ebuf, sizeof(ebuf));
		if (!ext)
			return WIRE_PLAINTEXT | CHECK_PEER; // truncated: the peer still checked
		if (proto == IPPROTO_FRAGMENT) {
			if (ext->frag_off & bpf_htons(IPV6_FRAG_OFFSET_MASK))
				first = 0;
			off += 8;
		} else {
			off += (ext->hdrlen + 1) * 8;
		}
		proto = ext->nexthdr;
	}
	// More extension headers than we follow: plaintext, peer still checked.
	if (proto == IPPROTO_HOPOPTS || proto == IPPROTO_ROUTING || proto == IPPROTO_DSTOPTS ||
	    proto == IPPROTO_FRAGMENT)
		return WIRE_PLAINTEXT | CHECK_PEER;
	return classify_l4(p, proto, off, first);
}

// filter_bit is the peer filter's bit for a remote address in this
// namespace: a multiplicative hash of the address's four words (IPv4
// mapped) xor-folded. internal/wire's filterBit computes the same.
static __always_inline __u32 filter_bit(__u32 fold)
{
	__u32 x = fold ^ (netns_slot * 0x85ebca6bu);
	return (x * 0x9e3779b1u) >> (32 - PEER_FILTER_BITS);
}

static __always_inline void count_unprotected(const struct remote *r, const __u8 direction, __u64 packets,
					      __u64 bytes)
{
	// ::ffff:a.b.c.d folds to a.b.c.d ^ htonl(0xffff).
	__u32 fold = r->v4 ? r->a[0] ^ bpf_htonl(0xffff) : r->a[0] ^ r->a[1] ^ r->a[2] ^ r->a[3];
	__u32 bit = filter_bit(fold);
	if (!(wire_peer_filter.words[bit >> 6] & (1ull << (bit & 63))))
		return;

	struct peer_key key = {.netns = netns_slot};
	if (r->v4) {
		__be32 mapped[4] = {0, 0, bpf_htonl(0xffff), r->a[0]};
		__builtin_memcpy(key.addr, mapped, 16);
	} else {
		__builtin_memcpy(key.addr, r->a, 16);
	}
	struct peer_counters *c = bpf_map_lookup_elem(&wire_peers, &key);
	if (!c)
		return;
	counter_add_atomic(&c->unprotected[direction].packets, &c->unprotected[direction].bytes, packets, bytes);
}

// decrypted tells whether IPsec already decrypted this packet: the inner
// packet of a tunnel-mode SA re-enters the receive path on the same device
// (xfrm_input -> gro_cells_receive) and passes the ingress hook a second
// time. Its ESP packet was counted; the inner one is not on the wire.
//
// A packet without a secpath was not decrypted. The secpath is an skb
// extension (5.4+): bit SKB_EXT_SEC_PATH of skb->active_extensions, one load
// through bpf_cast_to_kern_ctx (6.2+; CO-RE finds the field).
// The helper gives the answer only through a call that, for the packet
// without a secpath -- nearly all of them --, clears its 28-byte output:
// it is asked only when the bit is set (a secpath may hold no state yet).
static __always_inline int decrypted(struct __sk_buff *skb)
{
	struct bpf_xfrm_state x;

	if (sec_path_ext) {
		struct sk_buff *k = bpf_cast_to_kern_ctx(skb);
		if (!(k->active_extensions & sec_path_ext))
			return 0;
	}
	return bpf_skb_get_xfrm_state(skb, 0, &x, sizeof(x), 0) == 0;
}

static __always_inline int count(struct __sk_buff *skb, const __u8 direction)
{
	void *data = (void *)(long)skb->data;
	struct pkt p = {.skb = skb, .end = (void *)(long)skb->data_end};
	union net_hdr buf;
	struct remote r;
	__u8 class;

	// In place only when the frame's own EtherType is the protocol the
	// kernel parsed: an untagged frame, or one whose tag the kernel
	// moved to skb->vlan_tci.
	// 32 bits: the context field is, and the kernel's 16-bit value needs
	// no masking before the compares.
	__u32 protocol = skb->protocol;
	if (ethernet && data + ETH_HLEN <= p.end && *(__be16 *)(data + 12) == protocol)
		p.net = data + ETH_HLEN;

	if (protocol == bpf_htons(ETH_P_IP))
		class = classify_ipv4(&p, direction, &r, &buf);
	else if (protocol == bpf_htons(ETH_P_IPV6))
		class = classify_ipv6(&p, direction, &r, &buf);
	else
		class = WIRE_NON_IP;

	// An ESP or AH packet has not been decrypted yet when it arrives (the
	// inner ESP of a nested tunnel would be, and is counted again, see
	// bpf/README.md); everything else may be a tunnel's inner packet.
	if (direction == WIRE_INGRESS && class != WIRE_ESP && class != WIRE_ESP_IN_UDP && class != WIRE_AH &&
	    decrypted(skb))
		return TC_ACT_UNSPEC;

	// A GSO skb stands for gso_segs packets on the wire; any other for
	// one. The kernel trusts gso_segs only when gso_size is set
	// (skb_is_gso() is gso_size != 0, qdisc_pkt_len_init reads gso_segs
	// only then), and leaves a stale gso_segs behind when it clears
	// gso_size (napi_gro_complete of a one-packet flow, napi_reuse_skb);
	// __sk_buff.gso_segs reads shinfo->gso_segs unconditionally.
	// A GSO skb from an untrusted source (SKB_GSO_DODGY: tap, packet
	// socket) may have gso_segs 0 until segmented: one, as before.
	// gso_segs first: a non-GSO skb has 0 or 1 and needs no second load.
	__u32 segs = skb->gso_segs;
	__u64 packets = 1;
	if (segs > 1 && skb->gso_size)
		packets = segs;
	__u32 slot = direction * WIRE_CLASSES + (class & ~CHECK_PEER);
	// Per-CPU, written by TC programs only (bottom halves disabled).
	struct wire_counter *c = bpf_map_lookup_elem(&wire_counters, &slot);
	if (c)
		counter_add_bh(&c->packets, &c->bytes, packets, skb->len);
	if ((class & CHECK_PEER) && wire_peer_filter.peers)
		count_unprotected(&r, direction, packets, skb->len);
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
