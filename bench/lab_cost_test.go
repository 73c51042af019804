package bench

import (
	"sort"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ipsec-exporter/ipsec_exporter/bench/baseline"
	"github.com/ipsec-exporter/ipsec_exporter/internal/verdict"
	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// costBytes is the bulk TCP transfer per variant and round: about 2,900
// ESP packets each way carrying data (plus the ACKs back) at 1,448 bytes a
// segment.
const (
	costBytes  = 4 << 20
	costWarmup = 512 << 10
	costRounds = 2
)

// attached is one variant's programs while they are attached.
type attached struct {
	stats func() map[string]*ebpf.ProgramStats
	hooks []baseline.Hook // what is attached (for the floors)
	close func()
}

// TestLabBenchBPFCost measures the per-packet cost of BPF program sets
// under steady ESP traffic (bulk TCP over a transport-mode AES-GCM SA pair)
// from the kernel's own accounting (kernel.bpf_stats_enabled: run time and
// run count per program), one set attached at a time, in rounds:
//
//   - ours_fentry, ours_kprobe: internal/verdict in each hook mode;
//   - floor_fentry, floor_kprobe: empty programs on exactly the hooks ours
//     attached in that mode;
//   - reference: bench/baseline's kprobe+kretprobe on xfrm_input and
//     xfrm_output with hash-map updates (NetObserv's approach).
//
// Per variant it prints the run time summed over the set divided by the ESP
// packets sent (each is encrypted and decrypted in this one kernel), and per
// program its runs, run time and size.
func TestLabBenchBPFCost(t *testing.T) {
	requireBench(t)
	enableBPFStats(t)
	p := scenario.NewPair(t)
	e := p.ESP(t, scenario.ESPOptions{})
	packets := func() uint64 {
		return p.A.SACounters(t, e.AB)["packets"] + p.B.SACounters(t, e.BA)["packets"]
	}
	scenario.BulkTCP(t, p.A.Netns, p.B.Netns, e.BAddr, 256<<10) // warm up caches and the TCP window

	floorHooks := map[string][]baseline.Hook{}
	ours := func(mode string) func(t *testing.T) attached {
		return func(t *testing.T) attached {
			v := loadVerdict(t, mode)
			hooks := floorOf(attachedHooks(v))
			floorHooks[mode] = hooks
			return attached{stats: v.ProgramStats, hooks: hooks, close: func() { v.Close() }}
		}
	}
	set := func(load func() (*baseline.Set, error)) func(t *testing.T) attached {
		return func(t *testing.T) attached {
			s, err := load()
			if err != nil {
				t.Fatal(err)
			}
			stats := func() map[string]*ebpf.ProgramStats {
				st, err := s.Stats()
				if err != nil {
					t.Fatal(err)
				}
				return st
			}
			return attached{stats: stats, close: func() { s.Close() }}
		}
	}
	floor := func(mode string) func(t *testing.T) attached {
		return set(func() (*baseline.Set, error) { return baseline.LoadFloor(floorHooks[mode]) })
	}
	variants := []struct {
		name   string
		attach func(t *testing.T) attached
	}{
		{"ours_fentry", ours(verdict.ModeFentry)},
		{"floor_fentry", floor(verdict.ModeFentry)},
		{"reference", set(baseline.LoadReference)},
		{"ours_kprobe", ours(verdict.ModeKprobe)},
		{"floor_kprobe", floor(verdict.ModeKprobe)},
	}
	for round := 1; round <= costRounds; round++ {
		for _, v := range variants {
			start := time.Now()
			a := v.attach(t)
			attachTime := time.Since(start)
			// Warm up with the programs attached: under emulation the
			// first runs of new code are translated, which would be
			// charged to the programs.
			scenario.BulkTCP(t, p.A.Netns, p.B.Netns, e.BAddr, costWarmup)
			stats0 := a.stats()
			before := packets()
			start = time.Now()
			scenario.BulkTCP(t, p.A.Netns, p.B.Netns, e.BAddr, costBytes)
			elapsed := time.Since(start)
			n := packets() - before
			stats := a.stats()
			for name, s := range stats {
				if s0, ok := stats0[name]; ok {
					stats[name] = &ebpf.ProgramStats{Runtime: s.Runtime - s0.Runtime, RunCount: s.RunCount - s0.RunCount}
				}
			}
			var shapes map[string]progShape
			if round == 1 {
				shapes = loadedShapes(t)
			}
			a.close()

			names := make([]string, 0, len(stats))
			for name := range stats {
				names = append(names, name)
			}
			sort.Strings(names)
			total := Record{Kind: "bpf_cost", Kernel: scenario.Kernel(), Variant: v.name, Round: round, Packets: n}
			for _, name := range names {
				s := stats[name]
				r := Record{Kind: "bpf_program", Kernel: scenario.Kernel(), Variant: v.name, Round: round,
					Program: name, Packets: n, RunNs: uint64(s.Runtime.Nanoseconds()), Runs: s.RunCount}
				if sh, ok := shapes[name]; ok {
					r.Insns, r.Verified, r.MapCalls, r.Calls = sh.insns, sh.verified, sh.mapCalls, sh.calls
				}
				Emit(r)
				total.RunNs += r.RunNs
				total.Runs += r.Runs
			}
			Emit(total)
			if n == 0 {
				t.Fatalf("%s: no ESP packets counted", v.name)
			}
			t.Logf("round %d %-12s %3d programs, attach %5.1fs, %d ESP packets in %.1fs, %d runs, %.0f ns BPF per ESP packet",
				round, v.name, len(stats), attachTime.Seconds(), n, elapsed.Seconds(), total.Runs,
				float64(total.RunNs)/float64(n))
		}
	}
}
