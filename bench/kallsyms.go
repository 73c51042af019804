package bench

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Categories of kernel code that insnprof's counts are charged to. The lab
// bench prints the ranges of the symbols in them (from the guest's
// /proc/kallsyms and the loaded programs' JIT images); everything else the
// kernel executes is the rest of the path.
const (
	CategoryProgram    = "bpf_prog"       // a BPF program's JIT image
	CategoryTrampoline = "bpf_trampoline" // fentry/fexit trampolines
	CategoryEnterExit  = "bpf_enter_exit" // __bpf_prog_enter*/exit*: a trampoline's per-program bookkeeping
	CategoryKprobe     = "kprobe"         // ftrace entry, kprobe and kretprobe (rethook) handlers
	CategoryTracepoint = "tracepoint"     // tracepoint dispatch into BPF (raw_tp, tp_btf)
	CategoryTC         = "tc"             // TC / TCX classifier dispatch
	CategoryMap        = "map"            // map operations called by programs
	CategoryProbeRead  = "probe_read"     // bpf_probe_read_kernel and its fault-safe copy
	CategoryHelper     = "helper"         // other functions BPF programs call
	CategoryXfrm       = "xfrm"           // the kernel's IPsec path (for context: it is the work measured against)
	CategoryTarget     = "hook_target"    // a function a program is attached to, not in a category above
)

// Machinery says whether code of a category runs only because a BPF
// program is attached: a call from outside these into them is a hook's
// entry.
func Machinery(category string) bool {
	switch category {
	case CategoryProgram, CategoryTrampoline, CategoryEnterExit, CategoryKprobe, CategoryTracepoint,
		CategoryTC, CategoryMap, CategoryProbeRead, CategoryHelper:
		return true
	}
	return false
}

// symbolCategories classify kernel text symbols by name, first match wins.
// They name kernel functions of 6.1 and 6.12 (x86-64), not our programs:
// whatever program set is attached, its hooks go through these.
var symbolCategories = []struct {
	category string
	re       *regexp.Regexp
}{
	{CategoryEnterExit, regexp.MustCompile(`^__bpf_prog_(enter|exit)`)},
	{CategoryTracepoint, regexp.MustCompile(`^(__traceiter_|__SCT__tp_func_|__bpf_trace_|bpf_trace_run[0-9]+$)`)},
	{CategoryKprobe, regexp.MustCompile(`kprobe|rethook|^ftrace_(regs_)?caller|^ftrace_trampoline$|^ftrace_ops_|` +
		`^arch_ftrace_ops_list_func$|^ftrace_stub|^trace_call_bpf$|^perf_trace_buf`)},
	{CategoryTC, regexp.MustCompile(`^(__)?tcf_classify|^cls_bpf_|^tcx_|^sch_handle_(ingress|egress)|^mini_qdisc_|^bpf_mprog_|^tc_run$`)},
	{CategoryProbeRead, regexp.MustCompile(`^bpf_probe_read_kernel|^copy_from_kernel_nofault`)},
	{CategoryMap, regexp.MustCompile(`^(__)?htab_|^array_map_|^percpu_array_|^bpf_map_|^(__)?pcpu_freelist_|` +
		`^alloc_htab_elem|^lookup_(nulls_)?elem_raw|^bpf_percpu_|^__bpf_array_`)},
	{CategoryHelper, regexp.MustCompile(`^(____)?bpf_`)},
	{CategoryXfrm, regexp.MustCompile(`xfrm|^esp[46]?_|^__esp`)},
}

// Categorize returns the category of a kernel text symbol, or "".
func Categorize(name string) string {
	for _, c := range symbolCategories {
		if c.re.MatchString(name) {
			return c.category
		}
	}
	return ""
}

// Symbol is a kernel symbol from /proc/kallsyms with the address range up
// to the next symbol.
type Symbol struct {
	Name   string
	Module string // "" for the core kernel; "bpf", "__builtin__ftrace", a module name
	Type   byte   // t/T for text
	Start  uint64
	End    uint64
}

// maxSymbolSize caps a symbol's range where the next symbol is far away:
// no function here is larger.
const maxSymbolSize = 64 << 10

// ParseKallsyms reads /proc/kallsyms (as root: addresses are zero
// otherwise) and returns the text symbols sorted by address, each ending
// where the next symbol of any kind starts.
func ParseKallsyms(r io.Reader) ([]Symbol, error) {
	var all []Symbol
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 1<<16), 1<<20)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 3 {
			continue
		}
		addr, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("kallsyms line %q: %w", s.Text(), err)
		}
		if addr == 0 {
			continue
		}
		sym := Symbol{Name: f[2], Type: f[1][0], Start: addr}
		if len(f) > 3 {
			sym.Module = strings.Trim(f[3], "[]")
		}
		all = append(all, sym)
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("kallsyms: no symbol with an address (not root, or kptr_restrict)")
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Start < all[j].Start })
	var text []Symbol
	for i := range all {
		sym := all[i]
		if sym.Type != 't' && sym.Type != 'T' {
			continue
		}
		// The next symbol ends this one, if it is of the same module: the
		// last function of a module (or of the core kernel text) is
		// followed by unrelated memory (another module, BPF images), so
		// it gets at most a page.
		sym.End = sym.Start + 4096
		for j := i + 1; j < len(all); j++ {
			if all[j].Start > sym.Start {
				if all[j].Module == sym.Module {
					sym.End = min(sym.Start+maxSymbolSize, all[j].Start)
				} else {
					sym.End = min(sym.End, all[j].Start)
				}
				break
			}
		}
		text = append(text, sym)
	}
	return text, nil
}
