package bench

import (
	"strings"
	"testing"
)

func TestParseKallsyms(t *testing.T) {
	const kallsyms = `ffffffff81000000 T _stext
ffffffff81001000 t xfrm_input
ffffffff81001000 t xfrm_input_alias
ffffffff81001400 D some_data
ffffffff81002000 T __bpf_prog_enter
0000000000000000 T hidden
ffffffffc0001000 t esp_output	[esp4]
ffffffffc0100000 t bpf_prog_6deef7357e7b4530_fentry_xfrm_in	[bpf]
`
	syms, err := ParseKallsyms(strings.NewReader(kallsyms))
	if err != nil {
		t.Fatal(err)
	}
	want := []Symbol{
		{Name: "_stext", Type: 'T', Start: 0xffffffff81000000, End: 0xffffffff81001000},
		{Name: "xfrm_input", Type: 't', Start: 0xffffffff81001000, End: 0xffffffff81001400},
		{Name: "xfrm_input_alias", Type: 't', Start: 0xffffffff81001000, End: 0xffffffff81001400},
		{Name: "__bpf_prog_enter", Type: 'T', Start: 0xffffffff81002000, End: 0xffffffff81002000 + 4096}, // the last of the core kernel
		{Name: "esp_output", Module: "esp4", Type: 't', Start: 0xffffffffc0001000, End: 0xffffffffc0001000 + 4096},
		{Name: "bpf_prog_6deef7357e7b4530_fentry_xfrm_in", Module: "bpf", Type: 't', Start: 0xffffffffc0100000,
			End: 0xffffffffc0100000 + 4096},
	}
	if len(syms) != len(want) {
		t.Fatalf("got %d symbols, want %d: %+v", len(syms), len(want), syms)
	}
	for i := range want {
		if syms[i] != want[i] {
			t.Errorf("symbol %d: %+v, want %+v", i, syms[i], want[i])
		}
	}
	if _, err := ParseKallsyms(strings.NewReader("0000000000000000 T x\n")); err == nil {
		t.Error("all-zero addresses (not root) accepted")
	}
}

func TestCategorize(t *testing.T) {
	for name, want := range map[string]string{
		"__bpf_prog_enter_recur":       CategoryEnterExit,
		"__bpf_prog_exit":              CategoryEnterExit,
		"kprobe_ftrace_handler":        CategoryKprobe,
		"arch_rethook_trampoline":      CategoryKprobe,
		"ftrace_regs_caller":           CategoryKprobe,
		"__traceiter_kfree_skb":        CategoryTracepoint,
		"__SCT__tp_func_kfree_skb":     CategoryTracepoint,
		"bpf_trace_run3":               CategoryTracepoint,
		"tcf_classify":                 CategoryTC,
		"cls_bpf_classify":             CategoryTC,
		"tcx_inc":                      CategoryTC,
		"bpf_probe_read_kernel":        CategoryProbeRead,
		"copy_from_kernel_nofault":     CategoryProbeRead,
		"__htab_map_lookup_elem":       CategoryMap,
		"percpu_array_map_lookup_elem": CategoryMap,
		"bpf_skb_load_bytes_relative":  CategoryHelper,
		"xfrm_input":                   CategoryXfrm,
		"esp_output_tail":              CategoryXfrm,
		"tcp_sendmsg":                  "",
		"memcpy":                       "",
	} {
		if got := Categorize(name); got != want {
			t.Errorf("Categorize(%q) = %q, want %q", name, got, want)
		}
	}
}
