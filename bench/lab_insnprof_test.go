package bench

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// A window is one measured stretch of guest execution between two insnprof
// marks. Before it opens, the bench prints the address ranges the plugin's
// counts are charged to: the JIT images of every loaded BPF program with
// the hook it is on, and (each once per run) the hooked functions, what the
// programs call, and the kernel functions of the machinery categories of
// kallsyms.go. benchreport joins them with the plugin's output by mark.
//
// Everything printed goes through the emulated serial port and every
// kallsyms read formats ~150k symbols in the emulated kernel: both are slow
// under TCG, so /proc/kallsyms is read once per run (the core kernel and
// the modules do not move) and a window prints only what is new. The
// trampolines, which kallsyms alone could place, are found by benchreport
// from the calls the hooked functions' patched entries make.
type window struct {
	workload, variant string
	round             int
}

// hookSet maps a loaded program's name to "kind target", as the variant
// attached it. Loaded programs missing from it are reported by type.
type hookSet map[string]string

var (
	symbolsOnce  sync.Once
	symbols      []Symbol
	symbolByName map[string][]Symbol
	symbolByAddr map[uint64]string
	callBase     uint64              // __bpf_call_base: xlated helper calls are relative to it
	printed      = map[string]bool{} // symbols printed with mark 0 (valid for the whole run)
)

// staticCategories are printed once per run: the machinery every hook
// set goes through and the IPsec path around it. Tracepoint dispatch,
// maps and helpers are thousands of symbols: only those of the hooks and
// programs in use are printed, when a window first needs them.
// The IPsec path's own functions (xfrm, esp: ~600) are printed only where
// hooked; the rest of them count with the rest of the kernel.
var staticCategories = map[string]bool{CategoryEnterExit: true, CategoryKprobe: true, CategoryTC: true}

func loadSymbols(t *testing.T) {
	t.Helper()
	symbolsOnce.Do(func() {
		symbols = kernelSymbolTable(t)
		symbolByName = map[string][]Symbol{}
		symbolByAddr = map[uint64]string{}
		for _, s := range symbols {
			symbolByName[s.Name] = append(symbolByName[s.Name], s)
			symbolByAddr[s.Start] = s.Name
			if s.Name == "__bpf_call_base" {
				callBase = s.Start
			}
			if s.Module == "bpf" || strings.HasPrefix(s.Module, "__builtin__") || strings.HasPrefix(s.Name, "__pfx_") {
				continue // dynamic (programs are printed per window), or IBT padding
			}
			if c := Categorize(s.Name); staticCategories[c] {
				printSymbol(s, c)
			}
		}
	})
}

func printSymbol(s Symbol, category string) {
	Emit(Record{Kind: "range", Kernel: scenario.Kernel(), Symbol: s.Name, Category: category, Start: s.Start, End: s.End})
	printed[s.Name] = true
}

// printNamed prints the symbols of a name (and its compiler clones:
// .constprop.0, .isra.0, .cold) once per run.
func printNamed(name string) {
	if printed[name] {
		return
	}
	printed[name] = true
	for _, clone := range []string{"", ".constprop.0", ".isra.0", ".part.0", ".cold"} {
		for _, s := range symbolByName[name+clone] {
			c := Categorize(s.Name)
			if c == "" {
				c = CategoryTarget
			}
			printSymbol(s, c)
		}
	}
}

// openWindow prints the ranges for the window and marks its start.
func openWindow(t *testing.T, workload, variant string, round int, hooks hookSet) *window {
	t.Helper()
	loadSymbols(t)
	end := markSeq + 2 // the mark that will close this window
	for _, h := range hooks {
		kind, target, _ := strings.Cut(h, " ")
		switch kind {
		case "tp_btf", "raw_tracepoint", "tracepoint":
			for _, p := range []string{"__traceiter_", "__SCT__tp_func_", "__bpf_trace_"} {
				printNamed(p + target)
			}
		default:
			printNamed(target)
		}
	}
	for _, p := range loadedPrograms(t) {
		hook := hooks[p.name]
		if hook == "" {
			hook = strings.ToLower(p.typ.String())
			if p.typ == ebpf.SchedCLS {
				hook = "tc"
			}
		}
		for _, r := range p.ranges {
			Emit(Record{Kind: "range", Kernel: scenario.Kernel(), Mark: end, Symbol: p.name, Category: CategoryProgram,
				Start: r[0], End: r[1], Hook: hook})
		}
		for _, c := range p.callees {
			printNamed(c)
		}
	}
	Mark()
	return &window{workload: workload, variant: variant, round: round}
}

// close marks the window's end and prints what it measured.
func (w *window) close(packets uint64, payload int64, seconds float64) {
	m := Mark()
	Emit(Record{Kind: "window", Kernel: scenario.Kernel(), Workload: w.workload, Variant: w.variant, Round: w.round,
		Mark: m, Packets: packets, Bytes: payload, Seconds: seconds})
}

func kernelSymbolTable(t *testing.T) []Symbol {
	t.Helper()
	b, err := os.ReadFile("/proc/kallsyms")
	if err != nil {
		t.Fatal(err)
	}
	syms, err := ParseKallsyms(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return syms
}

// loadedProgram is a BPF program loaded in the kernel: its name, type, the
// address ranges of its JIT image (main program and subprograms) and the
// kernel functions its xlated code calls.
type loadedProgram struct {
	name    string
	typ     ebpf.ProgramType
	ranges  [][2]uint64
	callees []string
	info    *ebpf.ProgramInfo
}

func loadedPrograms(t *testing.T) []loadedProgram {
	t.Helper()
	loadSymbols(t)
	var out []loadedProgram
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return out
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, err := p.Info()
		p.Close()
		if err != nil {
			continue
		}
		lp := loadedProgram{name: programName(info), typ: info.Type, info: info}
		addrs, _ := info.JitedKsymAddrs()
		lens, _ := info.JitedFuncLens()
		for i, a := range addrs {
			if i < len(lens) {
				lp.ranges = append(lp.ranges, [2]uint64{uint64(a), uint64(a) + uint64(lens[i])})
			}
		}
		if insns, err := info.Instructions(); err == nil && callBase != 0 {
			seen := map[string]bool{}
			for _, ins := range insns {
				if !ins.IsBuiltinCall() {
					continue
				}
				if name := symbolByAddr[callBase+uint64(ins.Constant)]; name != "" && !seen[name] {
					seen[name] = true
					lp.callees = append(lp.callees, name)
				}
			}
		}
		out = append(out, lp)
	}
}

// programName is the program's full name: the BTF name of its main
// function (the kernel truncates program names to 15 characters), else the
// kernel's name.
func programName(info *ebpf.ProgramInfo) string {
	name := info.Name
	if fi, err := info.FuncInfos(); err == nil {
		for _, f := range fi {
			if f.Offset == 0 && f.Func != nil {
				name = f.Func.Name
			}
		}
	}
	return name
}

// hooksOf turns "program -> kind, target" pairs into a hookSet.
func hooksOf[H any](hooks []H, f func(H) (program, kind, target string)) hookSet {
	s := hookSet{}
	for _, h := range hooks {
		p, k, tg := f(h)
		s[p] = fmt.Sprintf("%s %s", k, tg)
	}
	return s
}
