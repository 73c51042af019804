package bench

import (
	"regexp"
	"testing"
	"time"

	"github.com/ipsec-exporter/ipsec_exporter/bench/baseline"
	"github.com/ipsec-exporter/ipsec_exporter/internal/verdict"
	"github.com/ipsec-exporter/ipsec_exporter/internal/wire"
	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

const (
	throughputBytes = 16 << 20
	throughputRuns  = 5
	settle          = 2 * time.Second
)

// TestLabBenchThroughput times bulk TCP over ESP (transport mode, AES-GCM)
// between two namespaces without the exporter's programs ("none") and with
// them ("exporter": the verdict programs in the auto mode plus the wire TC
// program on both ends' interface), interleaved, throughputRuns each. The
// programs are attached before and detached after each run, outside the
// timed transfer. Under emulation only the ratio of the two means anything.
//
// The same rounds also time the verdict programs alone in each mode, the
// empty floor on their hooks and the reference: with the lab's
// instruction-counted clock (make bench), the extra time over "none" per
// ESP packet is what a set costs per packet in all, hook mechanism
// (trampolines, kprobe traps, kretprobe return hooks) included, which the
// kernel's per-program accounting leaves out.
func TestLabBenchThroughput(t *testing.T) {
	requireBench(t)
	p := scenario.NewPair(t)
	e := p.ESP(t, scenario.ESPOptions{})
	scenario.BulkTCP(t, p.A.Netns, p.B.Netns, e.BAddr, 1<<20) // warm up

	verdictOnly := func(mode string) func(t *testing.T) func() {
		return func(t *testing.T) func() {
			v, err := verdict.Load(verdict.Options{Mode: mode})
			if err != nil {
				t.Fatalf("loading the verdict programs (%s): %v", mode, err)
			}
			return func() { v.Close() }
		}
	}
	hooks := map[string][]baseline.Hook{}
	for _, mode := range []string{verdict.ModeFentry, verdict.ModeKprobe} {
		v, err := verdict.Load(verdict.Options{Mode: mode})
		if err != nil {
			t.Fatalf("loading the verdict programs (%s): %v", mode, err)
		}
		for _, h := range v.Hooks() {
			if h.Attached {
				hooks[mode] = append(hooks[mode], baseline.Hook{Kind: h.Kind, Target: h.Target})
			}
		}
		v.Close()
	}
	set := func(load func() (*baseline.Set, error)) func(t *testing.T) func() {
		return func(t *testing.T) func() {
			s, err := load()
			if err != nil {
				t.Fatal(err)
			}
			return func() { s.Close() }
		}
	}
	exporter := func(t *testing.T) func() {
		v, err := verdict.Load(verdict.Options{Mode: verdict.ModeAuto})
		if err != nil {
			t.Fatalf("loading the verdict programs: %v", err)
		}
		var monitors []*wire.Monitor
		for _, n := range []*scenario.Node{p.A, p.B} {
			h := n.Handle()
			m, err := wire.Start(wire.Config{Netns: &h, Interfaces: regexp.MustCompile("eth0")})
			if err != nil {
				t.Fatalf("starting the wire program in %s: %v", n.Name, err)
			}
			monitors = append(monitors, m)
		}
		return func() {
			for _, m := range monitors {
				m.Close()
			}
			v.Close()
		}
	}
	variants := []struct {
		name   string
		attach func(t *testing.T) func()
	}{
		{"none", nil},
		{"exporter", exporter},
		{"ours_fentry", verdictOnly(verdict.ModeFentry)},
		{"ours_kprobe", verdictOnly(verdict.ModeKprobe)},
		{"floor_fentry", set(func() (*baseline.Set, error) { return baseline.LoadFloor(hooks[verdict.ModeFentry]) })},
		{"floor_kprobe", set(func() (*baseline.Set, error) { return baseline.LoadFloor(hooks[verdict.ModeKprobe]) })},
		{"reference", set(baseline.LoadReference)},
	}
	packets := func() uint64 {
		return p.A.SACounters(t, e.AB)["packets"] + p.B.SACounters(t, e.BA)["packets"]
	}
	for round := 1; round <= throughputRuns; round++ {
		for _, v := range variants {
			detach := func() {}
			if v.attach != nil {
				detach = v.attach(t)
			}
			// Let the previous set's detach finish in the background
			// (kprobe unoptimizing, RCU-deferred freeing of trampolines
			// and kretprobe instances): in a first version "none", which
			// followed the reference's detach, ran 3% slower than in
			// round 1. Then warm up with this set attached.
			time.Sleep(settle)
			scenario.BulkTCP(t, p.A.Netns, p.B.Netns, e.BAddr, 512<<10)
			before := packets()
			start := time.Now()
			scenario.BulkTCP(t, p.A.Netns, p.B.Netns, e.BAddr, throughputBytes)
			elapsed := time.Since(start)
			n := packets() - before
			detach()
			Emit(Record{Kind: "throughput", Kernel: scenario.Kernel(), Variant: v.name, Round: round,
				Bytes: throughputBytes, Seconds: elapsed.Seconds(), Packets: n})
			t.Logf("round %d %-12s %d MiB in %.3fs: %.2f MB/s, %d ESP packets", round, v.name, throughputBytes>>20,
				elapsed.Seconds(), float64(throughputBytes)/elapsed.Seconds()/1e6, n)
		}
	}
}
