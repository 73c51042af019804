/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The verdict logic shared by both hook modes (fentry/fexit/tp_btf and
 * kprobe/kretprobe/raw_tracepoint). The .bpf.c file only turns each hook's
 * arguments into plain values and calls the functions below, so both modes
 * count exactly the same way. bpf/README.md explains every kernel fact this
 * relies on.
 *
 * One invocation of a funnel function (xfrm_input for decrypt,
 * xfrm_output_resume for encrypt) is a frame on a small per-CPU stack. The
 * frame ends in exactly one of: DROPPED (kfree_skb of the frame's skb before
 * the OK marker), OK (the marker fired) or PENDING (async crypto took the skb:
 * nothing is emitted; the resumed invocation gives the verdict).
 */
#ifndef XFRM_VERDICT_H
#define XFRM_VERDICT_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "counters.h"

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
	RESULT_NONE = 255, /* no hint yet */
};

/* Indexes of verdict_errors: what went wrong in the accounting itself. */
enum verdict_error {
	ERR_MAP_FULL = 0,	 /* a new key did not fit into verdicts */
	ERR_STACK_FULL = 1,	 /* more nested frames than STACK_DEPTH */
	ERR_STALE_FRAME = 2,	 /* a frame was dropped without its exit */
	ERR_UNMATCHED_EXIT = 3, /* an exit found no frame */
	ERR_PENDING_MISS = 4,	 /* an encrypt resume found no pending entry */
	ERR_MAX = 5,
};

/* Frame flags. */
#define F_RESUME 0x01	  /* async completion: crypto already ran */
#define F_LOOKED_UP 0x02  /* decrypt: an SA was found for the SPI */
#define F_CHECKED 0x04	  /* xfrm_state_check_expire passed */
#define F_SEQUENCED 0x08  /* encrypt: replay_overflow passed, bytes final */
#define F_ADVANCED 0x10	  /* decrypt: replay_advance ran, bytes final */
#define F_DONE 0x20	  /* verdict emitted (OK); later drops are not ours */
#define F_DROPPED 0x40	  /* kfree_skb of the frame's skb before F_DONE */
#define F_CB_PENDING 0x80 /* kprobe mode: inside xfrm4/6_rcv_cb(err=0) */

#define STACK_DEPTH 8 /* power of two: indexes are masked for the verifier */

#define AF_INET 2
#define AF_INET6 10
#define EINVAL 22
#define ENOMEM 12
#define EEXIST 17
#define EAGAIN 11
#define EREMOTE 66
#define EHOSTUNREACH 113

struct verdict_key {
	__u8 direction; /* enum verdict_dir */
	__u8 family;	/* 4 or 6 */
	__u8 result;	/* enum verdict_result */
	__u8 pad;
	__u8 peer[16]; /* IPv4 in the first 4 bytes */
};

struct verdict_value {
	__u64 packets;
	__u64 bytes;
};

struct xv_frame {
	__u64 skb;
	__u64 bytes;
	__u64 cand_x; /* kprobe mode: x of the running replay_overflow */
	__u8 peer[16];
	__s32 err_in;
	__u8 dir;
	__u8 family;
	__u8 hint;
	__u8 flags;
};

struct xv_stack {
	__u32 depth;
	__u32 pad;
	struct xv_frame f[STACK_DEPTH];
};

/* kprobe mode only: the arguments of the running xfrm_lookup_with_ifid. */
struct xv_lookup_args {
	__u64 active;
	__u8 family;
	__u8 pad[7];
	__u8 daddr[16];
};

/* The counters user space reads. max_entries is set at load time from
 * --bpf.verdict-map-size. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct verdict_key);
	__type(value, struct verdict_value);
} verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ERR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} verdict_errors SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xv_stack);
} frames SEC(".maps");

/* Encrypt packets on their way to the crypto step: what the kernel added to
 * the SA's lifetime counter, for the async completion, in a slot chosen by
 * the skb's address. An array, not a hash: the verifier inlines its lookup,
 * so the per-packet write costs no helper call, hashing or lock (the LRU hash
 * update it replaces was a quarter of the programs' run time per packet in
 * the lab, see BENCHMARKS.md). A packet
 * whose slot another one took meanwhile finds that one's skb there and counts
 * pending_miss, as an LRU eviction did. */
#define PENDING_SLOTS 8192 /* power of two */

struct xv_pending {
	__u64 skb;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PENDING_SLOTS);
	__type(key, __u32);
	__type(value, struct xv_pending);
} pending_encrypt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xv_lookup_args);
} lookup_scratch SEC(".maps");

static __always_inline void count_error(__u32 kind)
{
	__u64 *v = bpf_map_lookup_elem(&verdict_errors, &kind);
	if (v)
		__sync_fetch_and_add(v, 1);
}

/* pending_slot is the pending_encrypt slot of the frame's skb (slab
 * objects: the low bits are alignment, fold higher ones in). The address is
 * read back from the frame: the verifier allows no arithmetic on the skb
 * pointer itself, only on the number stored in the map. */
static __always_inline struct xv_pending *pending_slot(struct xv_frame *f)
{
	__u64 skb = *(volatile __u64 *)&f->skb;
	__u32 idx = ((__u32)(skb >> 8) ^ (__u32)(skb >> 21)) & (PENDING_SLOTS - 1);
	return bpf_map_lookup_elem(&pending_encrypt, &idx);
}

static __always_inline struct xv_stack *get_stack(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&frames, &zero);
}

static __always_inline struct xv_frame *top_frame(struct xv_stack *s)
{
	__u32 d = s->depth;
	if (d == 0 || d > STACK_DEPTH)
		return NULL;
	return &s->f[(d - 1) & (STACK_DEPTH - 1)];
}

/* top_of returns the top frame when it is the given skb's frame in the given
 * direction. Every marker hook starts with it: the fast path for all the
 * packets that are not IPsec is one array lookup and one compare. */
static __always_inline struct xv_frame *top_of(__u64 skb, __u8 dir)
{
	struct xv_stack *s = get_stack();
	if (!s)
		return NULL;
	struct xv_frame *f = top_frame(s);
	if (!f || f->skb != skb || f->dir != dir)
		return NULL;
	return f;
}

/* top_dir is top_of for hooks that do not see the skb (x-only markers,
 * kretprobes). The markers run inside the funnel call, so the top frame is
 * the packet they are about. */
static __always_inline struct xv_frame *top_dir(__u8 dir)
{
	struct xv_stack *s = get_stack();
	if (!s)
		return NULL;
	struct xv_frame *f = top_frame(s);
	if (!f || f->dir != dir)
		return NULL;
	return f;
}

static __always_inline struct xv_frame *push_frame(__u64 skb, __u8 dir)
{
	struct xv_stack *s = get_stack();
	if (!s)
		return NULL;
	if (s->depth >= STACK_DEPTH) {
		/* Only lost exits (a frame whose fexit ran on another CPU, or
		 * a detach mid-call) can fill the stack: start over. */
		count_error(ERR_STACK_FULL);
		s->depth = 0;
	}
	struct xv_frame *f = &s->f[s->depth & (STACK_DEPTH - 1)];
	s->depth++;
	__builtin_memset(f, 0, sizeof(*f));
	f->skb = skb;
	f->dir = dir;
	f->hint = RESULT_NONE;
	return f;
}

/* pop_frame removes the frame of this funnel exit and returns it (the memory
 * stays valid until the next push on this CPU, which cannot happen before
 * the caller is done). With match_skb == 0 (kretprobe: no arguments), the
 * top frame of the direction is taken. Frames above the match lost their
 * exit and are dropped. */
static __always_inline struct xv_frame *pop_frame(__u64 skb, __u8 dir, bool match_skb)
{
	struct xv_stack *s = get_stack();
	if (!s)
		return NULL;
	__u32 d = s->depth;
	if (d == 0 || d > STACK_DEPTH) {
		count_error(ERR_UNMATCHED_EXIT);
		return NULL;
	}
	for (int i = 0; i < STACK_DEPTH; i++) {
		if (i >= d)
			break;
		__u32 idx = (d - 1 - i) & (STACK_DEPTH - 1);
		struct xv_frame *f = &s->f[idx];
		if (f->dir == dir && (!match_skb || f->skb == skb)) {
			if (i > 0)
				count_error(ERR_STALE_FRAME);
			s->depth = idx;
			return f;
		}
	}
	count_error(ERR_UNMATCHED_EXIT);
	return NULL;
}

static __always_inline void emit(__u8 dir, __u8 family, const __u8 *peer, __u8 result, __u64 bytes)
{
	struct verdict_key k = {};
	k.direction = dir;
	k.family = family;
	k.result = result;
	__builtin_memcpy(k.peer, peer, 16);

	struct verdict_value zero = {};
	struct verdict_value *v = counter_slot(&verdicts, &k, &zero);
	if (!v) {
		count_error(ERR_MAP_FULL);
		return;
	}
	counter_add_atomic(&v->packets, &v->bytes, 1, bytes);
}

static __always_inline void emit_frame(struct xv_frame *f, __u8 result)
{
	emit(f->dir, f->family, f->peer, result, f->bytes);
}

/* XV_READ reads a field of a kernel object. btf (a constant at every call
 * site) says the pointer is a BTF-typed argument of an fentry/fexit program:
 * then it is one load, which the verifier guards, instead of a
 * bpf_probe_read_kernel call (the helper calls were a fifth of the
 * programs' run time per packet in the lab, see BENCHMARKS.md). kprobe
 * programs and pointers read from memory always take the helper. */
#define XV_READ(btf, p, field) ((btf) ? (p)->field : BPF_CORE_READ(p, field))

/* The outer IP header is still at skb->network_header whenever xfrm_input is
 * entered, also on the async resume (esp_input_done2 moves only data and the
 * transport header). */
static __always_inline void read_outer_source(struct sk_buff *skb, struct xv_frame *f, bool btf)
{
	unsigned char *head = XV_READ(btf, skb, head);
	__u16 nh = XV_READ(btf, skb, network_header);
	__u8 vb = 0;

	bpf_probe_read_kernel(&vb, 1, head + nh);
	if ((vb >> 4) == 4) {
		f->family = 4;
		bpf_probe_read_kernel(f->peer, 4, head + nh + 12);
	} else if ((vb >> 4) == 6) {
		f->family = 6;
		bpf_probe_read_kernel(f->peer, 16, head + nh + 8);
	}
}

static __always_inline void read_sa_peer(struct xfrm_state *x, struct xv_frame *f, bool btf)
{
	if (!x)
		return;
	__u16 family = XV_READ(btf, x, props.family);
	__u32 *peer = (__u32 *)f->peer;
	if (family == AF_INET) {
		f->family = 4;
		if (btf)
			peer[0] = x->id.daddr.a4;
		else
			bpf_core_read(f->peer, 4, &x->id.daddr);
	} else if (family == AF_INET6) {
		f->family = 6;
		if (btf) {
			peer[0] = x->id.daddr.a6[0];
			peer[1] = x->id.daddr.a6[1];
			peer[2] = x->id.daddr.a6[2];
			peer[3] = x->id.daddr.a6[3];
		} else {
			bpf_core_read(f->peer, 16, &x->id.daddr);
		}
	}
}

/* skb_dst(skb)->xfrm: the SA the packet is about to be transformed with. */
static __always_inline struct xfrm_state *skb_dst_xfrm(struct sk_buff *skb, bool btf)
{
	unsigned long refdst = XV_READ(btf, skb, _skb_refdst);
	struct dst_entry *dst = (struct dst_entry *)(refdst & ~1UL);
	if (!dst)
		return NULL;
	return BPF_CORE_READ(dst, xfrm);
}

/* ---- decrypt ---------------------------------------------------------- */

static __always_inline void on_input_enter(struct sk_buff *skb, int encap_type, bool btf)
{
	struct xv_frame *f = push_frame((__u64)skb, DIR_DECRYPT);
	if (!f)
		return;
	if (encap_type == -1)
		f->flags |= F_RESUME;
	f->bytes = XV_READ(btf, skb, len);
	read_outer_source(skb, f, btf);
}

static __always_inline __u8 decrypt_reason(struct xv_frame *f)
{
	if (f->hint != RESULT_NONE)
		return f->hint;
	if (f->flags & F_ADVANCED)
		return RESULT_MODE_ERROR; /* inner mode / nested header after decrypt */
	if (f->flags & (F_RESUME | F_CHECKED))
		return RESULT_PROTO_ERROR; /* decrypt failed without -EBADMSG */
	if (f->flags & F_LOOKED_UP)
		return RESULT_INVALID_STATE; /* SA found, not VALID / encap mismatch / no dst */
	return RESULT_HEADER_ERROR;	     /* before the SA lookup */
}

static __always_inline void on_input_exit(__u64 skb, bool match_skb)
{
	struct xv_frame *f = pop_frame(skb, DIR_DECRYPT, match_skb);
	if (!f)
		return;
	if (f->flags & F_DONE)
		return;
	if (f->flags & F_DROPPED)
		emit_frame(f, decrypt_reason(f));
	/* else PENDING: the async completion re-enters xfrm_input(..., -1). */
}

static __always_inline void on_rcv_cb_exit(__u64 skb, int err, int ret)
{
	if (err != 0)
		return;
	struct xv_frame *f = top_of(skb, DIR_DECRYPT);
	if (!f || (f->flags & (F_DONE | F_DROPPED)))
		return;
	if (ret == 0) {
		emit_frame(f, RESULT_OK);
		f->flags |= F_DONE;
	} else {
		f->hint = RESULT_REJECTED;
	}
}

static __always_inline void set_hint(__u8 dir, __u8 result)
{
	struct xv_frame *f = top_dir(dir);
	if (f && f->hint == RESULT_NONE && !(f->flags & F_DONE))
		f->hint = result;
}

static __always_inline void on_replay_advance(void)
{
	struct xv_frame *f = top_dir(DIR_DECRYPT);
	if (!f)
		return;
	/* The kernel adds skb->len to x->curlft.bytes right after this. */
	struct sk_buff *skb = (struct sk_buff *)f->skb;
	f->bytes = BPF_CORE_READ(skb, len);
	f->flags |= F_ADVANCED;
}

/* A transport-mode bundle (e.g. ESP in ESP) is processed by one xfrm_input
 * call, one SA after the other. When the next SA's processing starts (its
 * lookup, its not-found audit or its replay check) after an earlier SA
 * advanced, that SA did all its work: its verdict is ok, and the frame
 * starts over for the next SA. One verdict per SA, as on output. */
static __always_inline struct xv_frame *next_input_sa(void)
{
	struct xv_frame *f = top_dir(DIR_DECRYPT);
	if (!f || (f->flags & F_DONE) || !(f->flags & F_ADVANCED))
		return f;
	emit_frame(f, RESULT_OK);
	f->flags = 0;
	f->hint = RESULT_NONE;
	struct sk_buff *skb = (struct sk_buff *)f->skb;
	f->bytes = BPF_CORE_READ(skb, len);
	return f;
}

static __always_inline void on_state_found(void)
{
	struct xv_frame *f = next_input_sa();
	if (f)
		f->flags |= F_LOOKED_UP;
}

static __always_inline void on_state_notfound(void)
{
	next_input_sa();
	set_hint(DIR_DECRYPT, RESULT_NO_STATE);
}

static __always_inline void on_replay_check_exit(int ret)
{
	next_input_sa();
	if (ret != 0)
		set_hint(DIR_DECRYPT, RESULT_REPLAY);
}

/* ---- both directions ---------------------------------------------------- */

/* xfrm_output_one runs consecutive transport-mode SAs of a bundle in one
 * loop, without leaving through local_out in between. When the next SA's
 * checks start (its lifetime check or sequence number) after an earlier SA
 * got its sequence number, that SA did all its work: its verdict is ok, and
 * the frame starts over for the next SA. */
static __always_inline void next_output_sa(struct xv_frame *f)
{
	if (!(f->flags & F_SEQUENCED) || (f->flags & F_DONE))
		return;
	emit_frame(f, RESULT_OK);
	f->flags = 0;
	f->hint = RESULT_NONE;
	f->err_in = 1;
	struct sk_buff *skb = (struct sk_buff *)f->skb;
	f->bytes = BPF_CORE_READ(skb, len);
}

static __always_inline void on_check_expire_exit(int ret)
{
	struct xv_stack *s = get_stack();
	if (!s)
		return;
	struct xv_frame *f = top_frame(s);
	if (!f || (f->flags & F_DONE))
		return;
	if (f->dir == DIR_ENCRYPT)
		next_output_sa(f);
	if (ret == 0)
		f->flags |= F_CHECKED;
	else if (f->hint == RESULT_NONE)
		f->hint = RESULT_EXPIRED;
}

static __always_inline void on_kfree_skb(__u64 skb)
{
	struct xv_stack *s = get_stack();
	if (!s || s->depth == 0)
		return;
	struct xv_frame *f = top_frame(s);
	if (!f || f->skb != skb || (f->flags & F_DONE))
		return;
	f->flags |= F_DROPPED;
}

/* ---- encrypt ------------------------------------------------------------ */

static __always_inline void on_output_enter(struct sk_buff *skb, int err, bool btf)
{
	struct xv_frame *f = push_frame((__u64)skb, DIR_ENCRYPT);
	if (!f)
		return;
	f->err_in = err;
	f->bytes = XV_READ(btf, skb, len);
	read_sa_peer(skb_dst_xfrm(skb, btf), f, false); /* the SA pointer comes from memory */
	if (err > 0)
		return;
	/* Async completion (or packet offload, which has no pending entry). */
	f->flags |= F_RESUME;
	struct xv_pending *p = pending_slot(f);
	if (p && p->skb == f->skb) {
		f->bytes = p->bytes;
		f->flags |= F_SEQUENCED;
		p->skb = 0;
	} else {
		count_error(ERR_PENDING_MISS);
	}
}

static __always_inline void on_replay_overflow_exit(struct xv_frame *f, struct xfrm_state *x, struct sk_buff *skb, int ret,
						    bool btf)
{
	next_output_sa(f);
	if (ret != 0) {
		if (f->hint == RESULT_NONE)
			f->hint = RESULT_SEQ_OVERFLOW;
		return;
	}
	/* The kernel adds skb->len to x->curlft.bytes right after this. */
	f->bytes = XV_READ(btf, skb, len);
	f->flags |= F_SEQUENCED;
	read_sa_peer(x, f, btf);
	/* Remember the bytes for an async completion now, before the crypto
	 * step: pcrypt may complete on another CPU before this call returns.
	 * A stale entry is harmless: the next packet with this skb address
	 * passes here first and overwrites it. */
	struct xv_pending *p = pending_slot(f);
	if (p) {
		p->bytes = f->bytes;
		p->skb = f->skb;
	}
}

/* The encrypted packet leaves through skb_dst(skb)->ops->local_out: the SA
 * did its work. In a bundle (tunnel in tunnel) the same call continues with
 * the next SA, which skb_dst(skb) now points to. */
static __always_inline void on_local_out(struct sk_buff *skb, bool btf)
{
	struct xv_frame *f = top_of((__u64)skb, DIR_ENCRYPT);
	if (!f || (f->flags & (F_DONE | F_DROPPED)))
		return;
	emit_frame(f, RESULT_OK);
	struct xfrm_state *next = skb_dst_xfrm(skb, btf);
	if (!next) {
		f->flags |= F_DONE;
		return;
	}
	f->flags = 0;
	f->hint = RESULT_NONE;
	f->err_in = 1;
	f->bytes = XV_READ(btf, skb, len);
	read_sa_peer(next, f, false); /* the SA pointer comes from memory */
}

static __always_inline __u8 encrypt_reason(struct xv_frame *f, int ret)
{
	if (f->hint != RESULT_NONE)
		return f->hint;
	if ((f->flags & F_RESUME) && f->err_in < 0)
		return RESULT_PROTO_ERROR; /* async crypto error */
	if (f->flags & (F_SEQUENCED | F_CHECKED)) {
		if (ret == -EHOSTUNREACH)
			return RESULT_OUTPUT_ERROR; /* no dst / dst_pop failed */
		return RESULT_PROTO_ERROR;	    /* type->output failed, +1 = crypto backlog full */
	}
	if (ret == -EINVAL)
		return RESULT_INVALID_STATE;
	if (ret == -ENOMEM)
		return RESULT_OUTPUT_ERROR; /* xfrm_skb_check_space */
	return RESULT_MODE_ERROR;	    /* outer mode output, e.g. -EMSGSIZE */
}

static __always_inline void on_output_exit(__u64 skb, int ret, bool match_skb)
{
	struct xv_frame *f = pop_frame(skb, DIR_ENCRYPT, match_skb);
	if (!f || (f->flags & F_DONE))
		return;
	if (f->flags & F_DROPPED) {
		emit_frame(f, encrypt_reason(f, ret));
		return;
	}
	/* PENDING: esp_output_done calls xfrm_output_resume(skb, err) later,
	 * which finds the bytes in pending_encrypt. */
}

/* Output without state: xfrm_lookup found a policy that needs an SA and no
 * SA (larval drop); the kernel counts XfrmOutNoStates once per lookup and
 * sends the packet to a blackhole route. No SA means no SA peer: the packet's
 * destination is the peer. */
static __always_inline void on_lookup_exit(__u8 family, const __u8 *daddr, long ret)
{
	if (ret != -EREMOTE && ret != -EAGAIN)
		return;
	emit(DIR_ENCRYPT, family, daddr, RESULT_NO_STATE, 0);
}

static __always_inline void read_flow_daddr(const struct flowi *fl, __u16 family, __u8 *fam, __u8 *daddr)
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
