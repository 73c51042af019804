// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Exact IPsec verdicts: one per packet per SA, ok or failed with a reason.
 *
 * Minimum kernel: 5.5 with CONFIG_DEBUG_INFO_BTF, for both sets: CO-RE
 * needs the kernel's BTF, bpf_probe_read_kernel and the fentry/fexit/tp_btf
 * trampolines arrived in 5.5 (bounded loops 5.3). The kprobe set is the
 * fallback where trampolines do not attach (some architectures, locked-down
 * kernels). Tested on Debian's 6.1 and 6.12 in the lab (see README.md).
 * Both sets live in this one object; user space loads one of them
 * (internal/verdict).
 *
 * Program names: <kind>_<hooked function>. Only thin argument handling is
 * here; the logic is in xfrm_verdict.h.
 */
#include "xfrm_verdict.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The enums user space takes its names from (bpf2go -type): referenced here
 * so that the compiler keeps them in the object's BTF. */
const enum verdict_dir *unused_verdict_dir __attribute__((unused));
const enum verdict_result *unused_verdict_result __attribute__((unused));
const enum verdict_error *unused_verdict_error __attribute__((unused));

/* ==== fentry / fexit / tp_btf ============================================ */

SEC("fentry/xfrm_input")
int BPF_PROG(fentry_xfrm_input, struct sk_buff *skb, int nexthdr, __be32 spi, int encap_type)
{
	on_input_enter(skb, encap_type, true);
	return 0;
}

SEC("fexit/xfrm_input")
int BPF_PROG(fexit_xfrm_input, struct sk_buff *skb, int nexthdr, __be32 spi, int encap_type, int ret)
{
	/* The skb may be freed or queued by now: only its address is used. */
	on_input_exit((__u64)skb, true);
	return 0;
}

SEC("fexit/xfrm4_rcv_cb")
int BPF_PROG(fexit_xfrm4_rcv_cb, struct sk_buff *skb, u8 protocol, int err, int ret)
{
	on_rcv_cb_exit((__u64)skb, err, ret);
	return 0;
}

SEC("fexit/xfrm6_rcv_cb")
int BPF_PROG(fexit_xfrm6_rcv_cb, struct sk_buff *skb, u8 protocol, int err, int ret)
{
	on_rcv_cb_exit((__u64)skb, err, ret);
	return 0;
}

SEC("fentry/xfrm_audit_state_icvfail")
int BPF_PROG(fentry_xfrm_audit_state_icvfail, struct xfrm_state *x, struct sk_buff *skb, u8 proto)
{
	set_hint(DIR_DECRYPT, RESULT_INTEGRITY);
	return 0;
}

SEC("fentry/xfrm_audit_state_notfound")
int BPF_PROG(fentry_xfrm_audit_state_notfound, struct sk_buff *skb, u16 family, __be32 spi, __be32 seq)
{
	on_state_notfound();
	return 0;
}

SEC("fexit/xfrm_replay_check")
int BPF_PROG(fexit_xfrm_replay_check, struct xfrm_state *x, struct sk_buff *skb, __be32 net_seq, int ret)
{
	on_replay_check_exit(ret);
	return 0;
}

SEC("fexit/xfrm_replay_recheck")
int BPF_PROG(fexit_xfrm_replay_recheck, struct xfrm_state *x, struct sk_buff *skb, __be32 net_seq, int ret)
{
	if (ret != 0)
		set_hint(DIR_DECRYPT, RESULT_REPLAY);
	return 0;
}

SEC("fentry/xfrm_replay_advance")
int BPF_PROG(fentry_xfrm_replay_advance, struct xfrm_state *x, __be32 net_seq)
{
	on_replay_advance();
	return 0;
}

/* xfrm_input's SA lookup: xfrm_state_lookup on 6.1, xfrm_input_state_lookup
 * (per-CPU input cache) from 6.12.13/6.13. Either may be missing. */
SEC("fexit/xfrm_state_lookup")
int BPF_PROG(fexit_xfrm_state_lookup, struct net *net, u32 mark, const xfrm_address_t *daddr, __be32 spi, u8 proto,
	     unsigned short family, struct xfrm_state *ret)
{
	if (ret)
		on_state_found();
	return 0;
}

SEC("fexit/xfrm_input_state_lookup")
int BPF_PROG(fexit_xfrm_input_state_lookup, struct net *net, u32 mark, const xfrm_address_t *daddr, __be32 spi,
	     u8 proto, unsigned short family, struct xfrm_state *ret)
{
	if (ret)
		on_state_found();
	return 0;
}

SEC("fexit/xfrm_state_check_expire")
int BPF_PROG(fexit_xfrm_state_check_expire, struct xfrm_state *x, int ret)
{
	on_check_expire_exit(ret);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_btf_kfree_skb, struct sk_buff *skb, void *location)
{
	on_kfree_skb((__u64)skb);
	return 0;
}

SEC("fentry/xfrm_output_resume")
int BPF_PROG(fentry_xfrm_output_resume, struct sock *sk, struct sk_buff *skb, int err)
{
	on_output_enter(skb, err, true);
	return 0;
}

SEC("fexit/xfrm_output_resume")
int BPF_PROG(fexit_xfrm_output_resume, struct sock *sk, struct sk_buff *skb, int err, int ret)
{
	on_output_exit((__u64)skb, ret, true);
	return 0;
}

SEC("fexit/xfrm_replay_overflow")
int BPF_PROG(fexit_xfrm_replay_overflow, struct xfrm_state *x, struct sk_buff *skb, int ret)
{
	struct xv_frame *f = top_of((__u64)skb, DIR_ENCRYPT);
	if (f)
		on_replay_overflow_exit(f, x, skb, ret, true);
	return 0;
}

SEC("fentry/__ip_local_out")
int BPF_PROG(fentry___ip_local_out, struct net *net, struct sock *sk, struct sk_buff *skb)
{
	on_local_out(skb, true);
	return 0;
}

SEC("fentry/__ip6_local_out")
int BPF_PROG(fentry___ip6_local_out, struct net *net, struct sock *sk, struct sk_buff *skb)
{
	on_local_out(skb, true);
	return 0;
}

SEC("fexit/xfrm_lookup_with_ifid")
int BPF_PROG(fexit_xfrm_lookup_with_ifid, struct net *net, struct dst_entry *dst_orig, const struct flowi *fl,
	     const struct sock *sk, int flags, u32 if_id, struct dst_entry *ret)
{
	long r = (long)ret;
	if (r != -EREMOTE && r != -EAGAIN)
		return 0;
	__u8 family = 0, daddr[16] = {};
	read_flow_daddr(fl, BPF_CORE_READ(dst_orig, ops, family), &family, daddr);
	on_lookup_exit(family, daddr, r);
	return 0;
}

/* ==== kprobe / kretprobe / raw_tracepoint ================================= */

SEC("kprobe/xfrm_input")
int BPF_KPROBE(kprobe_xfrm_input, struct sk_buff *skb, int nexthdr, __be32 spi, int encap_type)
{
	on_input_enter(skb, encap_type, false);
	return 0;
}

SEC("kretprobe/xfrm_input")
int BPF_KRETPROBE(kretprobe_xfrm_input, int ret)
{
	on_input_exit(0, false);
	return 0;
}

/* kretprobes see no arguments: the entry marks the frame, the return reads
 * the result. Nothing else runs xfrm on this CPU in between. */
static __always_inline void rcv_cb_enter(struct sk_buff *skb, int err)
{
	if (err != 0)
		return;
	struct xv_frame *f = top_of((__u64)skb, DIR_DECRYPT);
	if (f)
		f->flags |= F_CB_PENDING;
}

static __always_inline void rcv_cb_return(int ret)
{
	struct xv_frame *f = top_dir(DIR_DECRYPT);
	if (!f || !(f->flags & F_CB_PENDING))
		return;
	f->flags &= ~F_CB_PENDING;
	on_rcv_cb_exit(f->skb, 0, ret);
}

SEC("kprobe/xfrm4_rcv_cb")
int BPF_KPROBE(kprobe_xfrm4_rcv_cb, struct sk_buff *skb, u8 protocol, int err)
{
	rcv_cb_enter(skb, err);
	return 0;
}

SEC("kretprobe/xfrm4_rcv_cb")
int BPF_KRETPROBE(kretprobe_xfrm4_rcv_cb, int ret)
{
	rcv_cb_return(ret);
	return 0;
}

SEC("kprobe/xfrm6_rcv_cb")
int BPF_KPROBE(kprobe_xfrm6_rcv_cb, struct sk_buff *skb, u8 protocol, int err)
{
	rcv_cb_enter(skb, err);
	return 0;
}

SEC("kretprobe/xfrm6_rcv_cb")
int BPF_KRETPROBE(kretprobe_xfrm6_rcv_cb, int ret)
{
	rcv_cb_return(ret);
	return 0;
}

SEC("kprobe/xfrm_audit_state_icvfail")
int BPF_KPROBE(kprobe_xfrm_audit_state_icvfail)
{
	set_hint(DIR_DECRYPT, RESULT_INTEGRITY);
	return 0;
}

SEC("kprobe/xfrm_audit_state_notfound")
int BPF_KPROBE(kprobe_xfrm_audit_state_notfound)
{
	on_state_notfound();
	return 0;
}

SEC("kretprobe/xfrm_replay_check")
int BPF_KRETPROBE(kretprobe_xfrm_replay_check, int ret)
{
	on_replay_check_exit(ret);
	return 0;
}

SEC("kretprobe/xfrm_replay_recheck")
int BPF_KRETPROBE(kretprobe_xfrm_replay_recheck, int ret)
{
	if (ret != 0)
		set_hint(DIR_DECRYPT, RESULT_REPLAY);
	return 0;
}

SEC("kprobe/xfrm_replay_advance")
int BPF_KPROBE(kprobe_xfrm_replay_advance)
{
	on_replay_advance();
	return 0;
}

SEC("kretprobe/xfrm_state_lookup")
int BPF_KRETPROBE(kretprobe_xfrm_state_lookup, void *ret)
{
	if (ret)
		on_state_found();
	return 0;
}

SEC("kretprobe/xfrm_input_state_lookup")
int BPF_KRETPROBE(kretprobe_xfrm_input_state_lookup, void *ret)
{
	if (ret)
		on_state_found();
	return 0;
}

SEC("kretprobe/xfrm_state_check_expire")
int BPF_KRETPROBE(kretprobe_xfrm_state_check_expire, int ret)
{
	on_check_expire_exit(ret);
	return 0;
}

SEC("raw_tracepoint/kfree_skb")
int raw_tracepoint_kfree_skb(struct bpf_raw_tracepoint_args *ctx)
{
	on_kfree_skb(ctx->args[0]);
	return 0;
}

SEC("kprobe/xfrm_output_resume")
int BPF_KPROBE(kprobe_xfrm_output_resume, struct sock *sk, struct sk_buff *skb, int err)
{
	on_output_enter(skb, err, false);
	return 0;
}

SEC("kretprobe/xfrm_output_resume")
int BPF_KRETPROBE(kretprobe_xfrm_output_resume, int ret)
{
	on_output_exit(0, ret, false);
	return 0;
}

SEC("kprobe/xfrm_replay_overflow")
int BPF_KPROBE(kprobe_xfrm_replay_overflow, struct xfrm_state *x, struct sk_buff *skb)
{
	struct xv_frame *f = top_of((__u64)skb, DIR_ENCRYPT);
	if (f)
		f->cand_x = (__u64)x;
	return 0;
}

SEC("kretprobe/xfrm_replay_overflow")
int BPF_KRETPROBE(kretprobe_xfrm_replay_overflow, int ret)
{
	struct xv_frame *f = top_dir(DIR_ENCRYPT);
	if (!f || !f->cand_x)
		return 0;
	struct xfrm_state *x = (struct xfrm_state *)f->cand_x;
	f->cand_x = 0;
	on_replay_overflow_exit(f, x, (struct sk_buff *)f->skb, ret, false);
	return 0;
}

SEC("kprobe/__ip_local_out")
int BPF_KPROBE(kprobe___ip_local_out, struct net *net, struct sock *sk, struct sk_buff *skb)
{
	on_local_out(skb, false);
	return 0;
}

SEC("kprobe/__ip6_local_out")
int BPF_KPROBE(kprobe___ip6_local_out, struct net *net, struct sock *sk, struct sk_buff *skb)
{
	on_local_out(skb, false);
	return 0;
}

SEC("kprobe/xfrm_lookup_with_ifid")
int BPF_KPROBE(kprobe_xfrm_lookup_with_ifid, struct net *net, struct dst_entry *dst_orig, const struct flowi *fl)
{
	__u32 zero = 0;
	struct xv_lookup_args *a = bpf_map_lookup_elem(&lookup_scratch, &zero);
	if (!a)
		return 0;
	__builtin_memset(a->daddr, 0, sizeof(a->daddr));
	a->family = 0;
	read_flow_daddr(fl, BPF_CORE_READ(dst_orig, ops, family), &a->family, a->daddr);
	a->active = 1;
	return 0;
}

SEC("kretprobe/xfrm_lookup_with_ifid")
int BPF_KRETPROBE(kretprobe_xfrm_lookup_with_ifid, long ret)
{
	__u32 zero = 0;
	struct xv_lookup_args *a = bpf_map_lookup_elem(&lookup_scratch, &zero);
	if (!a || !a->active)
		return 0;
	a->active = 0;
	on_lookup_exit(a->family, a->daddr, ret);
	return 0;
}
