package main

import (
	"strings"
	"testing"

	"github.com/ipsec-exporter/ipsec_exporter/bench"
)

// Addresses of a made-up window (the trampolines are not among them: the
// report finds them from the hooked functions' entry calls): a traced
// function with a trampoline and
// an fexit program that calls a map helper, a kprobe'd function with a
// kretprobe, a tracepoint, a TC program entered from the receive path.
var testRanges = []bench.Record{
	{Kind: "range", Symbol: "xfrm_input", Category: bench.CategoryXfrm, Start: 0x1000, End: 0x1400},
	{Kind: "range", Symbol: "fexit_xfrm_input", Category: bench.CategoryProgram, Start: 0xa000, End: 0xa200, Mark: 2,
		Hook: "fexit xfrm_input"},
	{Kind: "range", Symbol: "__htab_map_lookup_elem", Category: bench.CategoryMap, Start: 0x2000, End: 0x2100},
	{Kind: "range", Symbol: "__bpf_prog_enter", Category: bench.CategoryEnterExit, Start: 0x2200, End: 0x2240},
	{Kind: "range", Symbol: "xfrm_replay_advance", Category: bench.CategoryXfrm, Start: 0x3000, End: 0x3100},
	{Kind: "range", Symbol: "arch_rethook_trampoline", Category: bench.CategoryKprobe, Start: 0x2400, End: 0x2480},
	{Kind: "range", Symbol: "kprobe_xfrm_replay_advance", Category: bench.CategoryProgram, Start: 0xa400, End: 0xa480,
		Mark: 2, Hook: "kprobe xfrm_replay_advance"},
	{Kind: "range", Symbol: "__SCT__tp_func_kfree_skb", Category: bench.CategoryTracepoint, Start: 0x2500, End: 0x2508},
	{Kind: "range", Symbol: "wire_ingress", Category: bench.CategoryProgram, Start: 0xa800, End: 0xa900, Mark: 2, Hook: "tc"},
	{Kind: "range", Symbol: "__netif_receive_skb_core", Category: "", Start: 0x4000, End: 0x4800},
	// The last function of a module, whose range seems to reach over the
	// trampoline at 0x9000: the entry call still says what is there.
	{Kind: "range", Symbol: "last_of_a_module", Category: "", Start: 0x8f00, End: 0xc000},
}

const testProfile = `insnprof 1 target x86_64 vcpus 1 api 0-1
mark 1 insns 10 kernel 10 user 0 rep 0 lock 0
t 1000 10 1 0 0
end 1
mark 2 insns 100000 kernel 90000 user 10000 rep 700 lock 130
t 1000 20 100 0 0
t 9000 30 100 0 0
t a000 40 100 0 100
t 2000 25 100 0 0
t 5000 10 10 500 0
e 9010 1009 100 2000
e 1004 9000 100 9000
e 9020 a000 100 6000
e a010 2000 100 2500
e 9030 2200 100 800
e 3004 b000 50 1500
h 3000 2400 50 1000
e b010 a400 50 300
e 6000 2500 7 700
e 4010 a800 200 3000
end 2
mark 3 insns 5 kernel 5 user 0 rep 0 lock 0
`

func TestProfileCharges(t *testing.T) {
	var static []bench.Record
	for _, r := range testRanges {
		if r.Mark == 0 {
			static = append(static, r)
		}
	}
	costs, err := readProfile(strings.NewReader(testProfile), func(mark int) spans {
		if mark != 2 {
			return newSpans(static)
		}
		return newSpans(testRanges)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(costs) != 2 || costs[3] != nil {
		t.Fatalf("want windows 1 and 2 (3 has no end), have %v", costs)
	}
	w := costs[2]
	if w.user != 10000 || w.kernel != 90000 || w.lock != 130 || w.userLock != 30 {
		t.Errorf("totals: %+v", w)
	}
	if w.userRep != 200 { // 700 in all, 500 of them in a kernel block
		t.Errorf("user rep %d, want 200", w.userRep)
	}
	if w.hookLock != 100 { // the lock insns of the program's blocks
		t.Errorf("lock in hooks %d, want 100", w.hookLock)
	}
	p := w.programs["fexit_xfrm_input"]
	if p == nil || p.body != 4000 || p.helpers != 2500 || p.runs != 100 {
		t.Errorf("fexit program: %+v, want body 4000, helpers 2500, runs 100", p)
	}
	if got := w.categories[bench.CategoryMap]; got != 2500 {
		t.Errorf("map category %d, want 2500 (25 insns x 100)", got)
	}
	if got := w.categories[""]; got != 100 {
		t.Errorf("the rest %d, want 100 (the unnamed block)", got)
	}
	for name, want := range map[string]hookCost{
		// the trampoline entry (9000) minus the call back into xfrm_input (2000)
		"xfrm_input": {insns: 7000, entries: 100},
		// the ftrace entry and the hijacked return (rethook)
		"xfrm_replay_advance":  {insns: 2500, entries: 100},
		"tracepoint kfree_skb": {insns: 700, entries: 7},
		"tc":                   {insns: 3000, entries: 200},
	} {
		if h := w.hooks[name]; h == nil || *h != want {
			t.Errorf("hook %s: %+v, want %+v", name, h, want)
		}
	}
	if len(w.hooks) != 4 {
		t.Errorf("hooks %v: calls from one program or trampoline into another part of the machinery are not entries", w.hooks)
	}
	if got, _ := w.hooksAllIn(); got != 7000+2500+700+3000 {
		t.Errorf("all in %d", got)
	}
	if p := w.programs["kprobe_xfrm_replay_advance"]; p == nil || p.runs != 50 {
		t.Errorf("kprobe program entered through the kprobe machinery: %+v", p)
	}
}

func TestProfileRejectsGarbage(t *testing.T) {
	for _, bad := range []string{
		"mark 1 insns x kernel 1 user 1 rep 1 lock 1\n",
		"mark 1 insns 1 kernel 1 user 1 rep 1 lock 1\nt zz 1 1 0 0\nend 1\n",
		"mark 1 insns 1 kernel 1 user 1 rep 1 lock 1\ne 10 20 1\nend 1\n",
		"what 1\n",
	} {
		if _, err := readProfile(strings.NewReader(bad), func(int) spans { return nil }); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
