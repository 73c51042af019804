// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * insnprof: a QEMU TCG plugin that counts the guest instructions executed
 * per kernel address, and per kernel call edge the instructions executed
 * inside the call, so that `make bench` can charge the cost of a hook
 * (trampoline, kprobe handler, helper calls and all) to the hook that
 * caused it instead of guessing it by subtraction. Loaded by
 * bench/qemu/qemu-system-x86_64 when BENCH_PLUGIN names it; built by
 * scripts/bench.sh with gcc (it is host code, not BPF).
 *
 * What it counts, per vCPU, on each translation block (TB) executed:
 *   - instructions: the TB's instruction count. Under -icount this is what
 *     the guest clock advances by; a `rep` string instruction ends its TB
 *     and each iteration re-executes it, so every iteration counts once
 *     (QEMU disables its rep optimisation under icount), as the clock does;
 *   - rep iterations (executions of a TB ending in a rep-prefixed string
 *     instruction) and lock-prefixed instructions, the two places where an
 *     instruction count is furthest from hardware cycles;
 *   - call edges (kernel only): a TB that ends in a call pushes a frame
 *     (call site, callee = the next TB's address, expected return address,
 *     instruction clock); a TB that ends in a ret is resolved against the
 *     next TB's address: the topmost frame expecting that address is popped
 *     with everything above it, and each popped frame adds its calls and
 *     inclusive instructions to its edge (site, callee). A return that no
 *     frame expects is a hijacked return (kretprobe's rethook trampoline,
 *     a retpoline thunk's ret into its target): the top frame is popped and
 *     a frame is pushed in its place for the edge "returning function ->
 *     where it returned to", expecting the popped frame's return address,
 *     so a kretprobe's return handler is charged to the probed function;
 *   - indirect-call thunks are transparent: a call whose callee is a short
 *     block ending in an indirect jmp (`__x86_indirect_thunk_rax` patched
 *     to `jmp *%rax`, or its lfence form) is charged to the jmp's target,
 *     and so is a retpoline (the thunk calls 2 instructions ahead and
 *     returns into the target: a hijacked return of a frame pushed by the
 *     callee's first instruction and 2 instructions old).
 *
 * The guest says when: a user program executes the mark instruction, an
 * 8-byte NOP no compiler emits (0f 1f 84 00 'I' 'N' 'S' 'P', nopl
 * 0x50534e49(%rax,%rax,1); bench/mark_amd64.s). At each mark the plugin
 * appends to the output file what changed since the previous mark:
 *
 *   mark SEQ insns N kernel N user N rep N lock N
 *   t VADDR NINSNS EXECS REP LOCK     kernel TB: address, size, executions,
 *                                     rep iterations, lock instructions
 *   e SITE CALLEE CALLS INSNS         call edge: calls, inclusive insns
 *   h FROM TO CALLS INSNS             hijacked-return edge
 *   end SEQ
 *
 * Addresses are guest virtual, in hex; names come from the guest's
 * /proc/kallsyms, which the bench prints next to each mark. Single-threaded
 * TCG only (the wrapper forces thread=single): the counters are not atomic.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_api.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

#define KERNEL_BASE 0xffff800000000000ULL
#define MAX_DEPTH 1024

static const unsigned char mark_insn[8] = {0x0f, 0x1f, 0x84, 0x00, 'I', 'N', 'S', 'P'};

enum tb_end { END_OTHER, END_CALL, END_RET, END_JMP_INDIRECT };

/* One translated block's shape and its execution count. */
struct tb {
	uint64_t vaddr;
	uint64_t last; /* address of the last instruction: the call site */
	uint64_t next; /* address after it: where a call returns */
	uint64_t execs, execs_dumped;
	uint32_t n;
	uint8_t end, rep, lock, mark, kernel;
	struct tb *chain; /* in tbs[] by address */
	struct tb *all;	  /* every kernel record, for dumps */
};

struct edge {
	uint64_t from, to;
	uint64_t calls, insns, calls_dumped, insns_dumped;
	int hijack; /* 0: used slot of a call edge, 1: hijacked return, -1: free */
};

struct frame {
	uint64_t site, callee, ret, start;
	int hijack;
};

struct vcpu {
	uint64_t clock; /* instructions executed on this vCPU */
	int pending;	/* END_CALL or END_RET of the previous TB */
	uint64_t p_site, p_ret;
	int relabel; /* the top frame's callee is a thunk: take the next TB's address */
	int depth;
	struct frame stack[MAX_DEPTH];
};

static FILE *out;
static struct vcpu *vcpus;
static int nvcpus;
static uint64_t seq, insns_all, insns_kernel, insns_user, reps, locks;
static uint64_t dumped_all, dumped_kernel, dumped_user, dumped_reps, dumped_locks;

#define TB_BUCKETS (1u << 20)
static struct tb **tbs;
static struct tb *kernel_tbs;

static struct edge *edges;
static size_t edge_cap, edge_len;

static uint64_t mix(uint64_t a, uint64_t b)
{
	uint64_t h = a * 0x9e3779b97f4a7c15ULL ^ (b + 0x632be59bd9b4e019ULL + (a << 6) + (a >> 2));
	return h ^ (h >> 29);
}

static void edges_grow(void);

static struct edge *edge_of(uint64_t from, uint64_t to, int hijack)
{
	if (2 * (edge_len + 1) > edge_cap)
		edges_grow();
	size_t i = mix(from, to ^ (uint64_t)hijack) & (edge_cap - 1);
	for (;; i = (i + 1) & (edge_cap - 1)) {
		struct edge *e = &edges[i];
		if (e->hijack < 0) {
			*e = (struct edge){.from = from, .to = to, .hijack = hijack};
			edge_len++;
			return e;
		}
		if (e->from == from && e->to == to && e->hijack == hijack)
			return e;
	}
}

static void edges_grow(void)
{
	struct edge *old = edges;
	size_t old_cap = edge_cap;
	edge_cap = old_cap ? 2 * old_cap : 1u << 16;
	edges = malloc(edge_cap * sizeof(*edges));
	if (!edges) {
		fprintf(stderr, "insnprof: out of memory\n");
		abort();
	}
	for (size_t i = 0; i < edge_cap; i++)
		edges[i].hijack = -1;
	edge_len = 0;
	for (size_t i = 0; i < old_cap; i++) {
		if (old[i].hijack < 0)
			continue;
		struct edge *e = edge_of(old[i].from, old[i].to, old[i].hijack);
		*e = old[i];
	}
	free(old);
}

static void pop(struct vcpu *v)
{
	struct frame *f = &v->stack[--v->depth];
	struct edge *e = edge_of(f->site, f->callee, f->hijack);
	e->calls++;
	e->insns += v->clock - f->start;
}

static void push(struct vcpu *v, uint64_t site, uint64_t callee, uint64_t ret, int hijack)
{
	if (v->depth == MAX_DEPTH) {
		/* Runaway (a stack switch the frames never saw): forget the
		 * older half rather than stop counting. */
		memmove(v->stack, v->stack + MAX_DEPTH / 2, sizeof(v->stack) / 2);
		v->depth = MAX_DEPTH / 2;
	}
	v->stack[v->depth++] =
		(struct frame){.site = site, .callee = callee, .ret = ret, .start = v->clock, .hijack = hijack};
}

static void returned_to(struct vcpu *v, uint64_t target)
{
	for (int i = v->depth - 1; i >= 0; i--) {
		if (v->stack[i].ret != target)
			continue;
		while (v->depth > i)
			pop(v);
		return;
	}
	if (v->depth == 0)
		return;
	struct frame f = v->stack[v->depth - 1];
	if (v->depth >= 2 && v->stack[v->depth - 2].callee == f.site && v->clock - f.start <= 4) {
		/* A retpoline: the call it made was to itself. */
		v->depth--;
		v->stack[v->depth - 1].callee = target;
		return;
	}
	pop(v);
	push(v, f.callee, target, f.ret, 1);
}

static void dump(void)
{
	seq++;
	fprintf(out, "mark %lu insns %lu kernel %lu user %lu rep %lu lock %lu\n", seq, insns_all - dumped_all,
		insns_kernel - dumped_kernel, insns_user - dumped_user, reps - dumped_reps, locks - dumped_locks);
	dumped_all = insns_all, dumped_kernel = insns_kernel, dumped_user = insns_user;
	dumped_reps = reps, dumped_locks = locks;
	for (struct tb *t = kernel_tbs; t; t = t->all) {
		uint64_t d = t->execs - t->execs_dumped;
		if (!d)
			continue;
		fprintf(out, "t %lx %u %lu %lu %lu\n", t->vaddr, t->n, d, t->rep ? d : 0, d * t->lock);
		t->execs_dumped = t->execs;
	}
	for (size_t i = 0; i < edge_cap; i++) {
		struct edge *e = &edges[i];
		if (e->hijack < 0 || e->calls == e->calls_dumped)
			continue;
		fprintf(out, "%c %lx %lx %lu %lu\n", e->hijack ? 'h' : 'e', e->from, e->to, e->calls - e->calls_dumped,
			e->insns - e->insns_dumped);
		e->calls_dumped = e->calls, e->insns_dumped = e->insns;
	}
	fprintf(out, "end %lu\n", seq);
	fflush(out);
}

static void on_exec(unsigned int cpu, void *udata)
{
	struct tb *t = udata;
	struct vcpu *v = &vcpus[cpu < (unsigned)nvcpus ? cpu : 0];

	if (t->kernel) {
		if (v->relabel && v->depth > 0)
			v->stack[v->depth - 1].callee = t->vaddr;
		v->relabel = 0;
		if (v->pending == END_CALL) {
			push(v, v->p_site, t->vaddr, v->p_ret, 0);
			v->relabel = t->end == END_JMP_INDIRECT && t->n <= 3;
		} else if (v->pending == END_RET) {
			returned_to(v, t->vaddr);
		}
	}
	v->pending = END_OTHER;
	t->execs++;
	v->clock += t->n;
	insns_all += t->n;
	reps += t->rep;
	locks += t->lock;
	if (t->kernel) {
		insns_kernel += t->n;
		if (t->end == END_CALL || t->end == END_RET) {
			v->pending = t->end;
			v->p_site = t->last;
			v->p_ret = t->next;
		}
	} else {
		insns_user += t->n;
		if (t->mark)
			dump();
	}
}

/* decode reads the prefixes and opcode of one x86 instruction. */
static void decode(const unsigned char *p, size_t len, struct tb *t, int is_last)
{
	int lock = 0, rep = 0;
	size_t i = 0;
	for (; i < len; i++) {
		unsigned char b = p[i];
		if (b == 0xf0)
			lock = 1;
		else if (b == 0xf2 || b == 0xf3)
			rep = 1;
		else if (b == 0x2e || b == 0x36 || b == 0x3e || b == 0x26 || b == 0x64 || b == 0x65 || b == 0x66 ||
			 b == 0x67)
			continue;
		else
			break;
	}
	if (i < len && (p[i] & 0xf0) == 0x40) /* REX */
		i++;
	if (i >= len)
		return;
	unsigned char op = p[i];
	t->lock += lock;
	if (!is_last)
		return;
	if (op == 0xe8 || (op == 0xff && i + 1 < len && ((p[i + 1] >> 3) & 7) == 2))
		t->end = END_CALL;
	else if (op == 0xc3 || op == 0xc2)
		t->end = END_RET;
	else if (op == 0xff && i + 1 < len && ((p[i + 1] >> 3) & 7) == 4)
		t->end = END_JMP_INDIRECT;
	else if (rep && ((op >= 0xa4 && op <= 0xa7) || (op >= 0xaa && op <= 0xaf) || (op >= 0x6c && op <= 0x6f)))
		t->rep = 1;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *qtb)
{
	(void)id;
	struct tb shape = {.vaddr = qemu_plugin_tb_vaddr(qtb), .n = (uint32_t)qemu_plugin_tb_n_insns(qtb)};
	shape.kernel = shape.vaddr >= KERNEL_BASE;
	for (size_t i = 0; i < shape.n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(qtb, i);
		const unsigned char *p = qemu_plugin_insn_data(insn);
		size_t len = qemu_plugin_insn_size(insn);
		decode(p, len, &shape, i + 1 == shape.n);
		if (len == sizeof(mark_insn) && !memcmp(p, mark_insn, len))
			shape.mark = 1;
		if (i + 1 == shape.n) {
			shape.last = qemu_plugin_insn_vaddr(insn);
			shape.next = shape.last + len;
		}
	}
	/* One record per distinct block: retranslations of the same code
	 * (after a flush, or shorter blocks made to end an icount budget)
	 * count into the record they had. */
	uint32_t b = (uint32_t)mix(shape.vaddr, shape.n) & (TB_BUCKETS - 1);
	struct tb *t = tbs[b];
	for (; t; t = t->chain)
		if (t->vaddr == shape.vaddr && t->n == shape.n && t->last == shape.last && t->end == shape.end &&
		    t->rep == shape.rep && t->lock == shape.lock && t->mark == shape.mark)
			break;
	if (!t) {
		t = malloc(sizeof(*t));
		if (!t) {
			fprintf(stderr, "insnprof: out of memory\n");
			abort();
		}
		*t = shape;
		t->chain = tbs[b];
		tbs[b] = t;
		if (t->kernel) {
			t->all = kernel_tbs;
			kernel_tbs = t;
		}
	}
	qemu_plugin_register_vcpu_tb_exec_cb(qtb, on_exec, QEMU_PLUGIN_CB_NO_REGS, t);
}

static void at_exit(qemu_plugin_id_t id, void *udata)
{
	(void)id, (void)udata;
	if (out)
		fclose(out);
	out = NULL;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
	const char *path = NULL;
	for (int i = 0; i < argc; i++)
		if (!strncmp(argv[i], "out=", 4))
			path = argv[i] + 4;
	if (!path || !info->system_emulation) {
		fprintf(stderr, "insnprof: needs out=FILE and system emulation\n");
		return -1;
	}
	out = fopen(path, "w");
	if (!out) {
		perror(path);
		return -1;
	}
	nvcpus = info->system.max_vcpus > 0 ? info->system.max_vcpus : 1;
	vcpus = calloc((size_t)nvcpus, sizeof(*vcpus));
	tbs = calloc(TB_BUCKETS, sizeof(*tbs));
	if (!vcpus || !tbs)
		return -1;
	edges_grow();
	fprintf(out, "insnprof 1 target %s vcpus %d api %d-%d\n", info->target_name, nvcpus, info->version.min,
		info->version.cur);
	fflush(out);
	qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
	qemu_plugin_register_atexit_cb(id, at_exit, NULL);
	return 0;
}
