package bench

import (
	"regexp"
	"testing"
	"time"

	"github.com/ipsec-exporter/ipsec_exporter/internal/verdict"
	"github.com/ipsec-exporter/ipsec_exporter/internal/wire"
	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

const (
	throughputBytes = 16 << 20
	throughputRuns  = 5
)

// TestLabBenchThroughput times bulk TCP over ESP (transport mode, AES-GCM)
// between two namespaces without the exporter's programs and with them
// (the verdict programs in the auto mode plus the wire TC program on both
// ends' interface), interleaved, throughputRuns each. The programs are
// attached before and detached after each "exporter" run, outside the timed
// transfer. Under emulation only the ratio of the two means anything.
func TestLabBenchThroughput(t *testing.T) {
	requireBench(t)
	p := scenario.NewPair(t)
	e := p.ESP(t, scenario.ESPOptions{})
	scenario.BulkTCP(t, p.A.Netns, p.B.Netns, e.BAddr, 1<<20) // warm up

	attach := func(t *testing.T) func() {
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
	for round := 1; round <= throughputRuns; round++ {
		for _, variant := range []string{"none", "exporter"} {
			detach := func() {}
			if variant == "exporter" {
				detach = attach(t)
			}
			start := time.Now()
			scenario.BulkTCP(t, p.A.Netns, p.B.Netns, e.BAddr, throughputBytes)
			elapsed := time.Since(start)
			detach()
			Emit(Record{Kind: "throughput", Kernel: scenario.Kernel(), Variant: variant, Round: round,
				Bytes: throughputBytes, Seconds: elapsed.Seconds()})
			t.Logf("round %d %-8s %d MiB in %.2fs: %.1f MB/s", round, variant, throughputBytes>>20,
				elapsed.Seconds(), float64(throughputBytes)/elapsed.Seconds()/1e6)
		}
	}
}
