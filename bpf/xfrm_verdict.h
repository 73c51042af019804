/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The verdict logic shared by both hook modes (fentry/fexit/tp_btf and
 * kprobe/kretprobe/raw_tracepoint). The .bpf.c file only turns each hook's
 * arguments into plain values and calls the functions below, so both modes
 * count exactly the same way. bpf/README.md explains every kernel fact this
 * relies on.
 *
 * A good packet costs one program run where the kernel counts it into the
 * SA: xfrm_replay_overflow on encrypt, xfrm_replay_recheck on decrypt (the
 * kernel adds skb->len to x->curlft right after either), where the ok is
 * counted with the SA's peer and exactly those bytes. Everything that can
 * still fail after that point is seen at the drop, which takes the ok back
 * (a "retracted" counter user space subtracts). Failures are classified at
 * the drop: on decrypt at xfrm_rcv_cb(..., err != 0), which xfrm_input calls
 * on every failure right before it frees the skb, from the failure-only audit
 * calls before it and the state of the skb and SA; on encrypt at kfree_skb
 * of a transformed skb whose route is the SA's.
 */
#ifndef XFRM_VERDICT_H
#define XFRM_VERDICT_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "counters.h"
#include "verdict_counters.h"

/* Stable numbers: user space maps them to label values (internal/verdict,
 * which gets these enums from the object's BTF through bpf2go -type). */
enum verdict_dir {
	DIR_ENCRYPT = 1,
	DIR_DECRYPT = 2,
};

enum verdict_result {
	RESULT_OK = 0,
	RESULT_INTEGRITY = 1,
	RESULT_PROTO_ERROR = 2,
	RESULT_REPLAY = 3,
	RESULT_EXPIRED = 4,
	RESULT_NO_STATE = 5,
	RESULT_MODE_ERROR = 6,
	RESULT_INVALID_STATE = 7,
	RESULT_HEADER_ERROR = 8,
	RESULT_REJECTED = 9,
	RESULT_SEQ_OVERFLOW = 10,
	RESULT_OUTPUT_ERROR = 11,
	RESULT_RETRACTED = 12, /* internal: an ok taken back by a later drop */
	RESULT_NONE = 255,     /* internal: no hint */
};

/* Indexes of verdict_errors: what went wrong in the accounting itself. */
enum verdict_error {
	ERR_MAP_FULL = 0, /* a new key did not fit into verdicts */
	ERR_MAX = 1,
};

#define AF_INET 2
#define AF_INET6 10
#define EAGAIN 11
#define IPPROTO_UDP 17
#define IPPROTO_ESP 50
#define IPPROTO_AH 51
#define IPPROTO_COMP 108

/* IPCB(skb)->flags / IP6CB(skb)->flags bit that xfrm_output sets on every
 * skb it transforms (include/net/ip.h, include/linux/ipv6.h; unchanged
 * since 2.6). #defines, so not in BTF. */
#define IPSKB_XFRM_TRANSFORMED 4
#define IP6SKB_XFRM_TRANSFORMED 1

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ERR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} verdict_errors SEC(".maps");

/* The node's known IPsec peers (addresses of its SAs and policies, and the
 * peer-names file), filled by user space. A failure whose peer comes from
 * the packet instead of an SA (decrypt no_state and header_error: the
 * outer source, which anyone can spoof; encrypt no_state: the flow's
 * destination) is counted under that peer only if it is known, else under
 * the one "unknown" peer (family 0, address zero): spoofed sources cannot
 * add keys. user space swaps in a whole new set at once (array of maps:
 * the outer slot's update is atomic); no set yet means every such peer is
 * unknown. IPv4 as IPv4-mapped IPv6. */
#define KNOWN_PEERS_MAX 16384

struct known_peer_key {
	__u8 addr[16];
};

struct known_peer_set {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KNOWN_PEERS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct known_peer_key);
	__type(value, __u8);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct known_peer_set);
} known_peers SEC(".maps");

/* known_or_unknown returns family when peer is a known peer, else 0 with
 * peer zeroed: the unknown peer. */
static __always_inline __u8 known_or_unknown(__u8 family, __u32 *peer)
{
	__u32 zero = 0;
	void *set = bpf_map_lookup_elem(&known_peers, &zero);
	if (set && (family == 4 || family == 6)) {
		struct known_peer_key k = {};
		if (family == 4) {
			k.addr[10] = 0xff;
			k.addr[11] = 0xff;
			__builtin_memcpy(&k.addr[12], peer, 4);
		} else {
			__builtin_memcpy(k.addr, peer, 16);
		}
		if (bpf_map_lookup_elem(set, &k))
			return family;
	}
	__builtin_memset(peer, 0, 16);
	return 0;
}

/* What one xfrm_input call on this CPU has seen so far. xfrm_input runs
 * with bottom halves disabled (softirq, or BH-disabled crypto completion),
 * so no other call interleaves on this CPU; every call that got this far
 * ends in xfrm_rcv_cb, which consumes the state. */
struct xv_decrypt {
	__u64 ok_skb; /* counted ok at xfrm_replay_recheck */
	__u64 ok_x;
	__u64 ok_bytes;
	__u64 hint_skb; /* a failure-only audit call named the reason */
	__u64 hint_x;
	__u64 rejected_skb; /* counted rejected at xfrm_rcv_cb(0) */
	struct verdict_key ok_key; /* counted in place: no copy per packet */
	__u8 hint;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xv_decrypt);
} decrypt_state SEC(".maps");

/* Encrypt packets between their sequencing (where the ok is counted) and
 * the crypto step's end, in a slot chosen by the skb's address: a failure
 * after sequencing finds its ok here to take it back, also when async
 * crypto (pcrypt) completes it on another CPU. An array, not a hash: the
 * verifier inlines its lookup, so the write per packet costs no helper call,
 * hashing or lock. The slot is not cleared on success: the sequence number
 * tells a stale slot from this packet's. */
#define PENDING_SLOTS 8192 /* power of two */

struct xv_pending {
	__u64 skb;
	__u64 x;
	__u64 bytes;
	__u32 seq; /* XFRM_SKB_CB(skb)->seq.output.low the packet gets */
	struct verdict_key ok_key; /* counted in place: no copy per packet */
	__u8 done; /* the failure was counted */
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PENDING_SLOTS);
	__type(key, __u32);
	__type(value, struct xv_pending);
} pending_encrypt SEC(".maps");

/* kprobe mode only: the flow of the running xfrm_resolve_and_create_bundle. */
struct xv_bundle_args {
	__u64 active;
	__u8 family;
	__u8 pad[7];
	__u32 daddr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xv_bundle_args);
} bundle_scratch SEC(".maps");

static __always_inline void count_error(__u32 kind)
{
	__u64 *v = bpf_map_lookup_elem(&verdict_errors, &kind);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline void count_key(const struct verdict_key *k, __u64 bytes)
{
	struct verdict_value *v = verdict_counter(k);
	if (!v) {
		count_error(ERR_MAP_FULL);
		return;
	}
	counter_add_atomic(&v->packets, &v->bytes, 1, bytes);
}

static __always_inline void emit(__u8 dir, __u8 family, const __u32 *peer, __u8 result, __u64 bytes)
{
	struct verdict_key k = {};
	k.direction = dir;
	k.family = family;
	k.result = result;
	__builtin_memcpy(k.peer, peer, 16);
	count_key(&k, bytes);
}

static __always_inline struct xv_decrypt *decrypt_state_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&decrypt_state, &zero);
}

/* address_of turns a kernel pointer into a number the program may compute
 * with: the verifier forbids arithmetic on pointers, and a pointer stored in
 * a map value (allowed with CAP_PERFMON, which tracing programs need anyway)
 * reads back as a plain number. A per-CPU slot: nothing else runs between
 * the store and the load on this CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} address_scratch SEC(".maps");

static __always_inline __u64 address_of(const void *p)
{
	__u32 zero = 0;
	__u64 *slot = bpf_map_lookup_elem(&address_scratch, &zero);
	if (!slot)
		return 0;
	*(volatile __u64 *)slot = (__u64)p;
	return *(volatile __u64 *)slot;
}

/* pending_slot_at is the pending_encrypt slot of the skb at address a
 * (slab objects: the low bits are alignment, fold higher ones in). */
static __always_inline struct xv_pending *pending_slot_at(__u64 a)
{
	__u32 idx = ((__u32)(a >> 8) ^ (__u32)(a >> 21)) & (PENDING_SLOTS - 1);
	return bpf_map_lookup_elem(&pending_encrypt, &idx);
}

static __always_inline struct xv_pending *pending_slot(const struct sk_buff *skb)
{
	return pending_slot_at(address_of(skb));
}

/* XV_READ reads a field of a kernel object. btf (a constant at every call
 * site) says the pointer is a BTF-typed argument of an fentry/fexit/tp_btf
 * program: then it is one load, which the verifier guards, instead of a
 * bpf_probe_read_kernel call. kprobe programs and pointers read from memory
 * always take the helper. */
#define XV_READ(btf, p, field) ((btf) ? (p)->field : BPF_CORE_READ(p, field))

/* The SA's addresses: id.daddr is where an outbound SA sends to,
 * props.saddr where an inbound SA's packets come from; both are the peer. */
static __always_inline __u8 sa_peer(struct xfrm_state *x, bool outbound, bool btf, __u32 *p)
{
	__u16 family = XV_READ(btf, x, props.family);
	xfrm_address_t *a = outbound ? &x->id.daddr : &x->props.saddr;

	if (family != AF_INET && family != AF_INET6)
		return 0;
	/* The whole key is compared: an IPv4 peer's other 12 bytes must be
	 * zero, also in a slot an IPv6 peer used before. */
	if (family == AF_INET) {
		p[0] = btf ? a->a4 : BPF_CORE_READ(a, a4);
		p[1] = 0;
		p[2] = 0;
		p[3] = 0;
		return 4;
	}
	if (btf) {
		p[0] = a->a6[0];
		p[1] = a->a6[1];
		p[2] = a->a6[2];
		p[3] = a->a6[3];
	} else {
		bpf_core_read(p, 16, a);
	}
	return 6;
}

/* ok_key fills k, where the ok is counted in place, as dir's ok key with
 * the SA's peer; false when the SA's family is neither IPv4 nor IPv6. */
static __always_inline bool ok_key(struct verdict_key *k, __u8 dir, struct xfrm_state *x, bool outbound, bool btf)
{
	__u8 family = sa_peer(x, outbound, btf, (__u32 *)k->peer);
	k->direction = dir;
	k->family = family;
	k->result = RESULT_OK;
	k->pad = 0;
	return family != 0;
}

/* ---- decrypt ------------------------------------------------------------ */

/* xfrm_replay_recheck(x, skb, seq) runs after the crypto step, under
 * x->lock; when it passes, xfrm_replay_advance and x->curlft.bytes +=
 * skb->len follow without anything that can fail in between (6.1:660-665,
 * 6.12 the same). So this is the SA's ok, with the SA's bytes. A recheck
 * failure (xfrm_audit_state_replay) or a later drop in the same call takes
 * it back. In a transport bundle each SA passes here once. */
static __always_inline void on_replay_recheck(struct xfrm_state *x, struct sk_buff *skb, bool btf)
{
	struct xv_decrypt *s = decrypt_state_get();
	if (!s)
		return;
	if (!ok_key(&s->ok_key, DIR_DECRYPT, x, false, btf))
		return;
	s->ok_skb = (__u64)skb;
	s->ok_x = (__u64)x;
	s->ok_bytes = XV_READ(btf, skb, len);
	count_key(&s->ok_key, s->ok_bytes);
}

/* The failure-only audit calls name the reason of the drop that follows in
 * the same xfrm_input call (they return early inside when auditing is off,
 * but are entered: CONFIG_AUDITSYSCALL=y on both Debian kernels). */
static __always_inline void set_decrypt_hint(__u64 skb, __u64 x, __u8 result)
{
	struct xv_decrypt *s = decrypt_state_get();
	if (!s)
		return;
	s->hint_skb = skb;
	s->hint_x = x;
	s->hint = result;
}

/* The outer IP header is still at skb->network_header when xfrm_input
 * drops a packet before an SA took it (the SA's inner mode moves it). */
static __always_inline __u8 packet_source(struct sk_buff *skb, __u32 *peer)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u8 vb = 0;

	bpf_probe_read_kernel(&vb, 1, head + nh);
	if ((vb >> 4) == 4) {
		bpf_probe_read_kernel(peer, 4, head + nh + 12);
		return 4;
	}
	if ((vb >> 4) == 6) {
		bpf_probe_read_kernel(peer, 16, head + nh + 8);
		return 6;
	}
	return 0;
}

/* last_sa is the SA the failing xfrm_input call was processing: the last
 * entry of the skb's secpath (xfrm_input adds it before any state check), or
 * NULL when the packet failed before an SA was found (every such failure
 * resets or never creates the secpath). */
static __always_inline struct xfrm_state *last_sa(struct sk_buff *skb)
{
	__u8 active = BPF_CORE_READ(skb, active_extensions);
	int id = bpf_core_enum_value(enum skb_ext_id, SKB_EXT_SEC_PATH);
	if (!(active & (1 << (id & 7))))
		return NULL;
	struct skb_ext *ext = BPF_CORE_READ(skb, extensions);
	__u8 off = 0;
	bpf_probe_read_kernel(&off, 1, (void *)ext + bpf_core_field_offset(struct skb_ext, offset) + (id & 3));
	struct sec_path *sp = (struct sec_path *)((void *)ext + (__u64)off * 8);
	int len = BPF_CORE_READ(sp, len);
	if (len <= 0 || len > 6)
		return NULL;
	struct xfrm_state *x = NULL;
	bpf_probe_read_kernel(&x, sizeof(x), &sp->xvec[(len - 1) & 7]);
	return x;
}

/* limits_reached: xfrm_state_check_expire found a hard limit; the limits
 * stay readable after the timer deleted the SA. */
static __always_inline bool limits_reached(struct xfrm_state *x)
{
	__u64 bytes = BPF_CORE_READ(x, curlft.bytes), packets = BPF_CORE_READ(x, curlft.packets);
	return bytes >= BPF_CORE_READ(x, lft.hard_byte_limit) || packets >= BPF_CORE_READ(x, lft.hard_packet_limit);
}

/* The reason of a decrypt drop that no audit call named, from the state of
 * the SA and of the skb (bpf/README.md: the checks in xfrm_input's order). */
static __always_inline __u8 decrypt_state_reason(struct sk_buff *skb, struct xfrm_state *x)
{
	if (limits_reached(x))
		return RESULT_EXPIRED;
	if (BPF_CORE_READ(x, km.state) != XFRM_STATE_VALID)
		return RESULT_INVALID_STATE;
	if (!(BPF_CORE_READ(skb, _skb_refdst) & ~1UL))
		return RESULT_INVALID_STATE; /* no route for the packet */
	/* The SA expects ESP in UDP (or not) and the packet disagrees. */
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u8 vb = 0, outer_proto = 0;
	bpf_probe_read_kernel(&vb, 1, head + nh);
	if ((vb >> 4) == 4)
		bpf_probe_read_kernel(&outer_proto, 1, head + nh + 9);
	else
		bpf_probe_read_kernel(&outer_proto, 1, head + nh + 6);
	bool encap = BPF_CORE_READ(x, encap) != NULL;
	if (encap != (outer_proto == IPPROTO_UDP))
		return RESULT_INVALID_STATE;
	/* Before and after a failed crypto step the packet still starts with
	 * the SA's header; a successful one pulled it. The SPI is at offset 0
	 * of ESP, 4 of AH; an IPComp SA's SPI is its 16-bit CPI, at offset 2. */
	__u8 proto = BPF_CORE_READ(x, id.proto);
	__u32 spi = BPF_CORE_READ(x, id.spi), at = 0;
	unsigned char *data = BPF_CORE_READ(skb, data);
	if (proto == IPPROTO_AH)
		data += 4;
	bpf_probe_read_kernel(&at, 4, data);
	if (proto == IPPROTO_COMP) {
		__u8 *a = (__u8 *)&at, *b = (__u8 *)&spi;
		if (a[2] == b[2] && a[3] == b[3])
			return RESULT_PROTO_ERROR;
	} else if (at == spi) {
		return RESULT_PROTO_ERROR;
	}
	return RESULT_MODE_ERROR;
}

/* xfrm_rcv_cb(skb, family, proto, err): xfrm_input calls it once with err
 * 0 after every SA of the call passed (a non-zero return is an xfrm
 * interface refusing the packet: xfrm_input then drops it), and with err -1
 * at its drop label, right before kfree_skb, for every failure. ret_known
 * says ret is the callback's return (fexit); kprobes do not see it. */
static __always_inline void on_rcv_cb(struct sk_buff *skb, int err, bool ret_known, int ret)
{
	struct xv_decrypt *s = decrypt_state_get();
	if (!s)
		return;
	__u64 self = (__u64)skb;
	if (err == 0) {
		if (ret_known && ret != 0 && s->ok_skb == self) {
			emit(DIR_DECRYPT, s->ok_key.family, (const __u32 *)s->ok_key.peer, RESULT_RETRACTED, s->ok_bytes);
			emit(DIR_DECRYPT, s->ok_key.family, (const __u32 *)s->ok_key.peer, RESULT_REJECTED, BPF_CORE_READ(skb, len));
			s->rejected_skb = self;
		}
		s->ok_skb = 0;
		s->hint_skb = 0;
		return;
	}
	if (s->rejected_skb == self) { /* counted at rcv_cb(0) */
		s->rejected_skb = 0;
		return;
	}
	__u32 peer[4] = {};
	__u8 family = 0, result;
	struct xfrm_state *x;
	if (s->hint_skb == self) {
		result = s->hint;
		x = (struct xfrm_state *)s->hint_x;
	} else {
		x = last_sa(skb);
		if (!x)
			result = RESULT_HEADER_ERROR;
		else if (s->ok_skb == self && s->ok_x == (__u64)x)
			result = RESULT_MODE_ERROR; /* after recheck: inner mode, nested header */
		else
			result = decrypt_state_reason(skb, x);
	}
	/* The ok of the failing SA is taken back; an earlier SA of a bundle
	 * that passed keeps its ok, as the kernel keeps its counters. */
	if (s->ok_skb == self && s->ok_x == (__u64)x)
		emit(DIR_DECRYPT, s->ok_key.family, (const __u32 *)s->ok_key.peer, RESULT_RETRACTED, s->ok_bytes);
	if (x)
		family = sa_peer(x, false, false, peer);
	else
		family = known_or_unknown(packet_source(skb, peer), peer);
	emit(DIR_DECRYPT, family, peer, result, BPF_CORE_READ(skb, len));
	s->ok_skb = 0;
	s->hint_skb = 0;
}

/* ---- encrypt ------------------------------------------------------------ */

/* The sequence number xfrm_replay_overflow is about to give the packet
 * (XFRM_SKB_CB(skb)->seq.output.low = ++oseq in every replay mode; the
 * state is stable under x->lock, which the caller holds). */
static __always_inline __u32 next_output_seq(struct xfrm_state *x, bool btf)
{
	if (XV_READ(btf, x, repl_mode) == bpf_core_enum_value(enum xfrm_replay_mode, XFRM_REPLAY_MODE_LEGACY))
		return XV_READ(btf, x, replay.oseq) + 1;
	return BPF_CORE_READ(x, replay_esn, oseq) + 1;
}

/* xfrm_replay_overflow(x, skb): its only caller, xfrm_output_one, adds
 * skb->len to x->curlft.bytes when it returns 0, once per SA per packet or
 * GSO segment, for sync and async crypto. The ok is counted here; a drop
 * after this point (also the sequence overflow this call may find) takes it
 * back. skb_addr is skb as a number (pending_slot_at). */
static __always_inline void on_replay_overflow(struct xfrm_state *x, struct sk_buff *skb, __u64 skb_addr, bool btf)
{
	struct xv_pending *p = pending_slot_at(skb_addr);
	if (!p)
		return;
	if (!ok_key(&p->ok_key, DIR_ENCRYPT, x, true, btf))
		return;
	p->skb = (__u64)skb;
	p->x = (__u64)x;
	p->bytes = XV_READ(btf, skb, len);
	p->seq = next_output_seq(x, btf);
	p->done = 0;
	count_key(&p->ok_key, p->bytes);
}

/* transformed: xfrm_output marked the skb (IPCB/IP6CB flags, by the
 * family of the SA's outer header); packets before it (the plaintext pass)
 * and after the stack took it again on receive (ip_rcv clears IPCB) are not. */
static __always_inline bool transformed(struct sk_buff *skb, __u16 family)
{
	__u16 flags = 0;
	if (family == AF_INET) {
		bpf_probe_read_kernel(&flags, 2, (void *)skb + bpf_core_field_offset(struct sk_buff, cb) +
							     bpf_core_field_offset(struct inet_skb_parm, flags));
		return flags & IPSKB_XFRM_TRANSFORMED;
	}
	bpf_probe_read_kernel(&flags, 2, (void *)skb + bpf_core_field_offset(struct sk_buff, cb) +
						     bpf_core_field_offset(struct inet6_skb_parm, flags));
	return flags & IP6SKB_XFRM_TRANSFORMED;
}

static __always_inline __u16 gso_size(struct sk_buff *skb)
{
	struct skb_shared_info *sh = (struct skb_shared_info *)(BPF_CORE_READ(skb, head) + BPF_CORE_READ(skb, end));
	return BPF_CORE_READ(sh, gso_size);
}

/* The encrypt side of a drop (kfree_skb with reason "not specified", which
 * is what every failure of xfrm_output and xfrm_output_one uses):
 * - the packet's pending slot holds it with its sequence number, and its
 *   route is still the SA's (or gone): it failed at or after sequencing:
 *   seq_overflow when the number wrapped to 0 (xfrm_replay_overflow
 *   refuses it), else crypto error, sync or async (proto_error) or no route
 *   (output_error); its ok is taken back;
 * - else its route is an SA's: it failed before sequencing: expired,
 *   invalid_state or mode_error by the SA's state.
 * A GSO skb is not one: xfrm_output_gso frees the original after
 * segmenting it, and each segment is sequenced on its own. */
static __always_inline void on_kfree_skb(struct sk_buff *skb, int reason)
{
	if (reason != bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED))
		return;
	struct dst_entry *dst = (struct dst_entry *)(BPF_CORE_READ(skb, _skb_refdst) & ~1UL);
	struct xfrm_state *x = dst ? BPF_CORE_READ(dst, xfrm) : NULL;
	struct xv_pending *p = pending_slot(skb);
	if (!p)
		return;
	/* A GSO skb is never sequenced itself (xfrm_output hands it to
	 * xfrm_output_gso, which segments it and kfree_skb()s it, NOT_SPECIFIED).
	 * Its slot may still hold a segment that once lived at the same address,
	 * and __skb_gso_segment wrote SKB_GSO_CB(skb)->mac_offset (the headroom)
	 * at cb offset 32, where xfrm_skb_cb keeps seq.output.low: a headroom
	 * equal to that segment's sequence number looked like its failure. */
	if (p->skb == (__u64)skb && (!dst || x == (struct xfrm_state *)p->x) && !gso_size(skb)) {
		__u32 seq = 0;
		bpf_probe_read_kernel(&seq, 4,
				      (void *)skb + bpf_core_field_offset(struct sk_buff, cb) +
					      bpf_core_field_offset(struct xfrm_skb_cb, seq.output.low));
		if (seq == p->seq) {
			if (p->done || !transformed(skb, p->ok_key.family == 4 ? AF_INET : AF_INET6))
				return;
			p->done = 1;
			emit(DIR_ENCRYPT, p->ok_key.family, (const __u32 *)p->ok_key.peer, RESULT_RETRACTED, p->bytes);
			__u8 result = RESULT_OUTPUT_ERROR;
			if (seq == 0)
				result = RESULT_SEQ_OVERFLOW;
			else if (dst)
				result = RESULT_PROTO_ERROR;
			emit(DIR_ENCRYPT, p->ok_key.family, (const __u32 *)p->ok_key.peer, result, BPF_CORE_READ(skb, len));
			return;
		}
	}
	if (!x || gso_size(skb))
		return;
	__u16 family = BPF_CORE_READ(x, props.family);
	if (!transformed(skb, family))
		return;
	__u8 result = RESULT_MODE_ERROR;
	if (limits_reached(x))
		result = RESULT_EXPIRED;
	else if (BPF_CORE_READ(x, km.state) != XFRM_STATE_VALID)
		result = RESULT_INVALID_STATE;
	__u32 peer[4] = {};
	__u8 fam = sa_peer(x, true, false, peer);
	emit(DIR_ENCRYPT, fam, peer, result, BPF_CORE_READ(skb, len));
}

/* Output without state: xfrm_resolve_and_create_bundle found policies that
 * need SAs and no SA (-EAGAIN): xfrm_lookup_with_ifid counts XfrmOutNoStates
 * for it (larval drop) and the packet goes to a blackhole route. Only route
 * lookups that match an IPsec policy get here. No SA means no SA peer: the
 * flow's destination is the peer. */
static __always_inline void on_bundle_failed(__u8 family, __u32 *daddr, long ret)
{
	if (ret != -EAGAIN)
		return;
	family = known_or_unknown(family, daddr);
	emit(DIR_ENCRYPT, family, daddr, RESULT_NO_STATE, 0);
}

static __always_inline void read_flow_daddr(const struct flowi *fl, __u16 family, __u8 *fam, __u32 *daddr)
{
	if (family == AF_INET) {
		*fam = 4;
		bpf_core_read(daddr, 4, &fl->u.ip4.daddr);
	} else if (family == AF_INET6) {
		*fam = 6;
		bpf_core_read(daddr, 16, &fl->u.ip6.daddr);
	}
}

#endif /* XFRM_VERDICT_H */
