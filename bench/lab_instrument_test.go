//go:build amd64

// x86 instructions (rep movsb, lock xadd) for the x86-only insnprof plugin.

package bench

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// TestLabBenchInstrument gives insnprof work whose instruction counts are
// known, for benchreport to check the plugin against:
//   - two straight-line BPF programs of InstrumentShort and InstrumentLong
//     `mov r0, imm` (one x86 instruction each once JITed), each run
//     InstrumentRuns times by BPF_PROG_TEST_RUN: their JIT images must be
//     charged exactly (InstrumentLong - InstrumentShort) * InstrumentRuns
//     instructions apart and entered InstrumentRuns times each (the
//     kernel calls them through an indirect call: the thunk handling);
//   - a rep movsb of InstrumentReps bytes and InstrumentLocks lock xadd in
//     user space: the rep and lock counts.
//
// Without the plugin it still runs (the marks are NOPs) and benchreport
// says the instrument was not loaded.
func TestLabBenchInstrument(t *testing.T) {
	requireBench(t)
	for _, n := range []int{InstrumentShort, InstrumentLong} {
		insns := asm.Instructions{}
		for i := range n {
			insns = append(insns, asm.Mov.Imm(asm.R0, int32(i+1)))
		}
		insns = append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return())
		name := fmt.Sprintf("straight_%d", n)
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: name, Type: ebpf.SocketFilter, License: "GPL", Instructions: insns})
		if err != nil {
			t.Fatalf("loading %s: %v", name, err)
		}
		w := openWindow(t, "instrument", name, 1, hookSet{name: "test_run -"})
		ret, err := p.Run(&ebpf.RunOptions{Data: make([]byte, 64), Repeat: InstrumentRuns})
		w.close(InstrumentRuns, 0, 0)
		p.Close()
		if err != nil || ret != 0 {
			t.Fatalf("running %s: %d, %v", name, ret, err)
		}
	}
	src, dst := make([]byte, InstrumentReps), make([]byte, InstrumentReps)
	w := openWindow(t, "instrument", "rep_movsb", 1, nil)
	repMovsb(&dst[0], &src[0], InstrumentReps)
	w.close(InstrumentReps, 0, 0)
	var counter uint64
	w = openWindow(t, "instrument", "lock_xadd", 1, nil)
	lockAdds(&counter, InstrumentLocks)
	w.close(InstrumentLocks, 0, 0)
	if counter != InstrumentLocks {
		t.Fatalf("lock xadd loop counted %d, want %d", counter, InstrumentLocks)
	}
}
