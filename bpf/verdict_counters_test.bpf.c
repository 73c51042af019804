// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A TC program that counts into the verdict counter table (verdict_counters.h)
 * for internal/verdict's host tests: BPF_PROG_TEST_RUN hands it a "packet"
 * that is a struct verdict_key followed by a byte count, and it returns 1
 * when the key was counted, 0 when the table refused it. The table code runs
 * in the host's kernel exactly as in the verdict programs; only the hook
 * differs (tracing programs do not load on every host).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "counters.h"
#include "verdict_counters.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define ETH_HEADER_LEN 14

struct count_request {
	struct verdict_key key;
	__u32 bytes;
};

SEC("tc")
int count_key(struct __sk_buff *skb)
{
	struct count_request req;
	if (bpf_skb_load_bytes(skb, ETH_HEADER_LEN, &req, sizeof(req)))
		return 2;
	struct verdict_value *v = verdict_counter(&req.key);
	if (!v)
		return 0;
	counter_add_atomic(&v->packets, &v->bytes, 1, req.bytes);
	return 1;
}
