/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The verdict counters: one packets/bytes pair per {direction, family,
 * result, peer} key, in a table built so that a packet's count costs a few
 * dozen instructions instead of a hash map lookup (a 20-byte jhash and a
 * bucket walk through a helper call, ~300 instructions per count).
 *
 * Three arrays share the counter numbers 0..capacity-1:
 * - verdict_counts (PERCPU_ARRAY): the packets and bytes of counter i;
 * - verdict_keys (ARRAY): the key of counter i, which user space reads;
 * - verdict_used[0]: how many counter numbers were handed out.
 * And verdict_index (ARRAY, four times the capacity rounded up to a power
 * of two, so at most a quarter full) finds a key's counter: open addressing
 * by a multiplicative hash of the key, linear probing over at most
 * INDEX_PROBES slots (a free slot ends the search of a new key). ARRAY lookups
 * are inlined by the verifier (no helper call, no lock); the per-CPU one is
 * too from 6.10, and a short helper before.
 *
 * A slot's tag is 0 (free), SLOT_CLAIMED (a program is filling it in, or
 * gave up because the counters were all handed out: probes pass it), or
 * SLOT_READY | hash bits | counter number: one 64-bit load gives both the
 * check and the number, so a reader never pairs a key with another key's
 * counter. Slots are never freed (keys are never deleted), so a key's
 * probe sequence never crosses a hole that was not there when it was
 * added.
 *
 * Two programs adding the same new key at once (two CPUs) can give it two
 * counters: the loser finds the winner's slot claimed but not ready and
 * probes on. User space sums counters by key, so the sum is exact; it
 * costs one counter of capacity. A slot read while it is being published
 * can only look wrong (its key not yet visible), never like another key:
 * the probe then goes on, with the same duplicate as the only effect.
 *
 * What user space relies on (internal/verdict/maps.go): the key of counter
 * i is written before any count of counter i (the publishing exchange is a
 * full barrier), so a reader that reads the counts first and the keys
 * after, and skips counters whose counts are all zero, never reads a count
 * under a key not yet written.
 */
#ifndef VERDICT_COUNTERS_H
#define VERDICT_COUNTERS_H

struct verdict_key {
	__u8 direction; /* enum verdict_dir */
	__u8 family;	/* 4 or 6 */
	__u8 result;	/* enum verdict_result */
	__u8 pad;
	__u8 peer[16]; /* IPv4 in the first 4 bytes */
} __attribute__((aligned(4))); /* copied and compared as five 32-bit words */

struct verdict_value {
	__u64 packets;
	__u64 bytes;
};

struct verdict_slot {
	__u64 tag;
	struct verdict_key key;
	__u32 pad;
};

#define SLOT_CLAIMED 1ULL
#define SLOT_READY (1ULL << 63)
#define SLOT_HASH_MASK 0x7fffffff00000000ULL
#define INDEX_PROBES 32

/* Set by user space before loading (--bpf.verdict-map-size): the number of
 * counters, and the index size minus one (a power of two minus one). The
 * map sizes below are placeholders, replaced at load time too. */
const volatile __u32 counter_capacity = 1;
const volatile __u32 index_mask = 1;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct verdict_value);
} verdict_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct verdict_key);
} verdict_keys SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct verdict_slot);
} verdict_index SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} verdict_used SEC(".maps");

/* Multiply-xorshift over the key's five words: every word reaches the low
 * bits (the index) and the high bits (the tag); an IPv4 peer, whose words
 * 2-4 are zero, included. */
static __always_inline __u64 verdict_key_hash(const __u32 *w)
{
	__u64 h = (((__u64)w[1] << 32) | w[2]) * 0x9e3779b97f4a7c15ULL;
	h ^= h >> 32;
	h ^= (((__u64)w[3] << 32) | w[4]) ^ w[0];
	h *= 0xc2b2ae3d27d4eb4fULL;
	return h ^ (h >> 32);
}

static __always_inline bool verdict_key_equal(const __u32 *a, const __u32 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4];
}

/* verdict_counter returns this CPU's counter of key, adding the key when it
 * is new; NULL when it is new and no counter or probe slot is left (the
 * caller counts the overflow). */
static __always_inline struct verdict_value *verdict_counter(const struct verdict_key *key)
{
	const __u32 *w = (const __u32 *)key;
	__u64 h = verdict_key_hash(w);
	__u64 want = SLOT_READY | (h & SLOT_HASH_MASK);
	__u32 i;

#pragma clang loop unroll(disable)
	for (i = 0; i < INDEX_PROBES; i++) {
		__u32 at = ((__u32)h + i) & index_mask;
		struct verdict_slot *s = bpf_map_lookup_elem(&verdict_index, &at);
		if (!s)
			return 0;
		__u64 tag = *(volatile __u64 *)&s->tag;
		if ((tag & ~0xffffffffULL) == want) {
			if (!verdict_key_equal((const __u32 *)&s->key, w))
				continue;
			__u32 n = (__u32)tag;
			return bpf_map_lookup_elem(&verdict_counts, &n);
		}
		if (tag != 0)
			continue;
		/* A free slot: the key is new. */
		__u32 zero = 0;
		__u64 *used = bpf_map_lookup_elem(&verdict_used, &zero);
		if (!used || *(volatile __u64 *)used >= counter_capacity)
			return 0;
		if (__sync_val_compare_and_swap(&s->tag, 0, SLOT_CLAIMED) != 0)
			continue; /* another program took it first */
		__u32 n = (__u32)__sync_fetch_and_add(used, 1);
		if (n >= counter_capacity)
			return 0; /* lost the last counters to a concurrent claim: the slot stays claimed */
		struct verdict_key *k = bpf_map_lookup_elem(&verdict_keys, &n);
		if (!k)
			return 0;
		*k = *key;
		s->key = *key;
		__sync_lock_test_and_set(&s->tag, want | n);
		return bpf_map_lookup_elem(&verdict_counts, &n);
	}
	return 0;
}

#endif /* VERDICT_COUNTERS_H */
