// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Exact IPsec verdicts: one per packet per SA, ok or failed with a reason.
 *
 * Minimum kernel: 5.17 with CONFIG_DEBUG_INFO_BTF, for both sets: CO-RE
 * needs the kernel's BTF, bpf_probe_read_kernel and the fentry/fexit/tp_btf
 * trampolines arrived in 5.5; the drop reason of kfree_skb, which the encrypt
 * side tests, and bpf_get_func_arg in 5.17; xfrm_state.repl_mode in 5.14; the
 * counter table's atomics with a result in 5.12. The kprobe set is the
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
/* The known-peer set's key: only the inner map definition names it, which
 * leaves the type forward-declared in BTF unless it is referenced. */
const struct known_peer_key *unused_known_peer_key __attribute__((unused));

/* ==== fentry / fexit / tp_btf ============================================ */

SEC("fentry/xfrm_replay_recheck")
int BPF_PROG(fentry_xfrm_replay_recheck, struct xfrm_state *x, struct sk_buff *skb, __be32 net_seq)
{
	on_replay_recheck(x, skb, true);
	return 0;
}

/* fexit: the return value tells an xfrm interface's refusal (rejected). */
SEC("fexit/xfrm_rcv_cb")
int BPF_PROG(fexit_xfrm_rcv_cb, struct sk_buff *skb, unsigned int family, u8 protocol, int err, int ret)
{
	on_rcv_cb(skb, err, true, ret);
	return 0;
}

SEC("fentry/xfrm_audit_state_icvfail")
int BPF_PROG(fentry_xfrm_audit_state_icvfail, struct xfrm_state *x, struct sk_buff *skb, u8 proto)
{
	set_decrypt_hint((__u64)skb, (__u64)x, RESULT_INTEGRITY);
	return 0;
}

SEC("fentry/xfrm_audit_state_notfound")
int BPF_PROG(fentry_xfrm_audit_state_notfound, struct sk_buff *skb, u16 family, __be32 spi, __be32 seq)
{
	set_decrypt_hint((__u64)skb, 0, RESULT_NO_STATE);
	return 0;
}

SEC("fentry/xfrm_audit_state_replay")
int BPF_PROG(fentry_xfrm_audit_state_replay, struct xfrm_state *x, struct sk_buff *skb, __be32 net_seq)
{
	set_decrypt_hint((__u64)skb, (__u64)x, RESULT_REPLAY);
	return 0;
}

SEC("fentry/xfrm_replay_overflow")
int BPF_PROG(fentry_xfrm_replay_overflow, struct xfrm_state *x, struct sk_buff *skb)
{
	/* skb as a number, for its pending slot: bpf_get_func_arg (5.17) is
	 * inlined into a load from the trampoline's frame, where address_of
	 * costs a per-CPU map lookup (a helper call before 6.10). */
	__u64 skb_addr = 0;
	bpf_get_func_arg(ctx, 1, &skb_addr);
	on_replay_overflow(x, skb, skb_addr, true);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_btf_kfree_skb, struct sk_buff *skb, void *location, int reason)
{
	on_kfree_skb(skb, reason);
	return 0;
}

SEC("fexit/xfrm_resolve_and_create_bundle")
int BPF_PROG(fexit_xfrm_resolve_and_create_bundle, struct xfrm_policy **pols, int num_pols, const struct flowi *fl,
	     u16 family, struct dst_entry *dst_orig, struct xfrm_dst *ret)
{
	long r = (long)ret;
	if (r != -EAGAIN)
		return 0;
	__u8 fam = 0;
	__u32 daddr[4] = {};
	read_flow_daddr(fl, family, &fam, daddr);
	on_bundle_failed(fam, daddr, r);
	return 0;
}

/* ==== kprobe / kretprobe / raw_tracepoint ================================= */

SEC("kprobe/xfrm_replay_recheck")
int BPF_KPROBE(kprobe_xfrm_replay_recheck, struct xfrm_state *x, struct sk_buff *skb)
{
	on_replay_recheck(x, skb, false);
	return 0;
}

/* kprobes see no return value: an xfrm interface's refusal is counted as
 * the drop that follows it (bpf/README.md). */
SEC("kprobe/xfrm_rcv_cb")
int BPF_KPROBE(kprobe_xfrm_rcv_cb, struct sk_buff *skb, unsigned int family, u8 protocol, int err)
{
	on_rcv_cb(skb, err, false, 0);
	return 0;
}

SEC("kprobe/xfrm_audit_state_icvfail")
int BPF_KPROBE(kprobe_xfrm_audit_state_icvfail, struct xfrm_state *x, struct sk_buff *skb)
{
	set_decrypt_hint((__u64)skb, (__u64)x, RESULT_INTEGRITY);
	return 0;
}

SEC("kprobe/xfrm_audit_state_notfound")
int BPF_KPROBE(kprobe_xfrm_audit_state_notfound, struct sk_buff *skb)
{
	set_decrypt_hint((__u64)skb, 0, RESULT_NO_STATE);
	return 0;
}

SEC("kprobe/xfrm_audit_state_replay")
int BPF_KPROBE(kprobe_xfrm_audit_state_replay, struct xfrm_state *x, struct sk_buff *skb)
{
	set_decrypt_hint((__u64)skb, (__u64)x, RESULT_REPLAY);
	return 0;
}

SEC("kprobe/xfrm_replay_overflow")
int BPF_KPROBE(kprobe_xfrm_replay_overflow, struct xfrm_state *x, struct sk_buff *skb)
{
	on_replay_overflow(x, skb, (__u64)skb, false); /* kprobe arguments are numbers */
	return 0;
}

/* args: skb, location, reason (6.12 adds rx_sk last). */
SEC("raw_tracepoint/kfree_skb")
int raw_tracepoint_kfree_skb(struct bpf_raw_tracepoint_args *ctx)
{
	on_kfree_skb((struct sk_buff *)ctx->args[0], (int)ctx->args[2]);
	return 0;
}

SEC("kprobe/xfrm_resolve_and_create_bundle")
int BPF_KPROBE(kprobe_xfrm_resolve_and_create_bundle, struct xfrm_policy **pols, int num_pols, const struct flowi *fl,
	       u16 family)
{
	__u32 zero = 0;
	struct xv_bundle_args *a = bpf_map_lookup_elem(&bundle_scratch, &zero);
	if (!a)
		return 0;
	__builtin_memset(a->daddr, 0, sizeof(a->daddr));
	a->family = 0;
	read_flow_daddr(fl, family, &a->family, a->daddr);
	a->active = 1;
	return 0;
}

SEC("kretprobe/xfrm_resolve_and_create_bundle")
int BPF_KRETPROBE(kretprobe_xfrm_resolve_and_create_bundle, long ret)
{
	__u32 zero = 0;
	struct xv_bundle_args *a = bpf_map_lookup_elem(&bundle_scratch, &zero);
	if (!a || !a->active)
		return 0;
	a->active = 0;
	on_bundle_failed(a->family, a->daddr, ret);
	return 0;
}
