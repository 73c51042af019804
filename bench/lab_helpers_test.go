package bench

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// requireBench skips a lab benchmark unless it was asked for by name (-run
// naming TestLabBench, as scripts/bench.sh does): the lab suite of `make
// test` runs every TestLab test, and benchmarks are not tests.
func requireBench(t *testing.T) {
	t.Helper()
	scenario.RequireVM(t)
	if f := flag.Lookup("test.run"); f == nil || !strings.Contains(f.Value.String(), "Bench") {
		t.Skip("a benchmark: runs only when -run names TestLabBench (make bench)")
	}
}

// enableBPFStats turns kernel.bpf_stats_enabled on for the test: without it
// the kernel keeps no run time or count per program.
func enableBPFStats(t *testing.T) {
	t.Helper()
	const path = "/proc/sys/kernel/bpf_stats_enabled"
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("1\n"), 0); err != nil {
		t.Fatalf("enabling BPF stats: %v", err)
	}
	t.Cleanup(func() { _ = os.WriteFile(path, old, 0) })
}

// progShape is what the verifier made of a program.
type progShape struct {
	insns    int    // xlated instructions
	verified uint32 // instructions the verifier walked
	mapCalls int    // map operations left as calls (the verifier inlines array lookups)
	calls    string // the kernel functions it calls, with counts (static, not per run)
}

// shapeOf reads the loaded program's xlated code; helper calls are named
// from the kernel's symbols (loadSymbols).
func shapeOf(info *ebpf.ProgramInfo) progShape {
	var s progShape
	if insns, err := info.Instructions(); err == nil {
		s.insns = len(insns)
		calls := map[string]int{}
		for _, ins := range insns {
			if !ins.IsBuiltinCall() {
				continue
			}
			name := symbolByAddr[callBase+uint64(ins.Constant)]
			if name == "" || callBase == 0 {
				name = fmt.Sprintf("helper_%d", ins.Constant)
			}
			calls[name]++
			if strings.Contains(name, "map_") && (strings.Contains(name, "lookup") ||
				strings.Contains(name, "update") || strings.Contains(name, "delete")) {
				s.mapCalls++
			}
		}
		names := make([]string, 0, len(calls))
		for n, c := range calls {
			names = append(names, fmt.Sprintf("%s×%d", n, c))
		}
		sort.Strings(names)
		s.calls = strings.Join(names, " ")
	}
	s.verified, _ = info.VerifiedInstructions()
	return s
}

// loadedShapes returns the shape of every program loaded in the kernel, by
// its full name.
func loadedShapes(t *testing.T) map[string]progShape {
	t.Helper()
	loadSymbols(t)
	out := map[string]progShape{}
	for _, p := range loadedPrograms(t) {
		out[p.name] = shapeOf(p.info)
	}
	return out
}
