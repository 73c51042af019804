package bench

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
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

// kernelSymbols maps kernel text addresses to names (/proc/kallsyms, root).
type kernelSymbols struct {
	base  uint64 // __bpf_call_base: xlated helper calls are relative to it
	names map[uint64]string
}

func readKernelSymbols(t *testing.T) kernelSymbols {
	t.Helper()
	b, err := os.ReadFile("/proc/kallsyms")
	if err != nil {
		t.Fatal(err)
	}
	ks := kernelSymbols{names: map[uint64]string{}}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		addr, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil || addr == 0 {
			continue
		}
		ks.names[addr] = f[2]
		if f[2] == "__bpf_call_base" {
			ks.base = addr
		}
	}
	return ks
}

func shapeOf(info *ebpf.ProgramInfo, ks kernelSymbols) progShape {
	var s progShape
	if insns, err := info.Instructions(); err == nil {
		s.insns = len(insns)
		calls := map[string]int{}
		for _, ins := range insns {
			if !ins.IsBuiltinCall() {
				continue
			}
			name := ks.names[ks.base+uint64(ins.Constant)]
			if name == "" || ks.base == 0 {
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
// its full name (the BTF name of its main function: the kernel truncates
// program names to 15 characters).
func loadedShapes(t *testing.T) map[string]progShape {
	t.Helper()
	out := map[string]progShape{}
	ks := readKernelSymbols(t)
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
		name := info.Name
		if fi, err := info.FuncInfos(); err == nil {
			for _, f := range fi {
				if f.Offset == 0 && f.Func != nil {
					name = f.Func.Name
				}
			}
		}
		out[name] = shapeOf(info, ks)
	}
}
