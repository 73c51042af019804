package collector

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/ipsec-exporter/ipsec_exporter/internal/verdict"
)

// Scrape cost of the verdict collector over real BPF maps (they load on
// hosts that refuse tracing programs) with 100 to 100k keys: each key is two
// series (packets and bytes). `make bench` runs these with -count and
// -benchmem; benchstat compares runs.
var benchVerdictKeys = []int{100, 1000, 10000, 100000}

// benchVerdictSource fills a verdict map with n distinct keys (one peer
// each, results and directions cycling).
func benchVerdictSource(b *testing.B, n int) mapsSource {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root to create BPF maps")
	}
	m, err := verdict.NewMaps(uint32(n))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	results := verdict.Results()
	entries := make([]verdict.Entry, n)
	for i := range entries {
		dir := "encrypt"
		if i%2 == 1 {
			dir = "decrypt"
		}
		entries[i] = verdict.Entry{
			Direction: dir, Result: results[i%3],
			Peer:    netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
			Packets: uint64(i) * 7, Bytes: uint64(i) * 7 * 1400,
		}
	}
	if err := m.Set(entries); err != nil {
		b.Fatal(err)
	}
	return mapsSource{m}
}

// cpuTime is the process's user+system CPU time. Reported per op next to
// ns/op: on a loaded machine the wall time also counts waiting for a CPU.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchVerdictCollector(b *testing.B, n int) *verdictCollector {
	src := benchVerdictSource(b, n)
	c := newVerdictCollector(slog.New(slog.DiscardHandler), src, nil, nil)
	c.statsSysctl = filepath.Join(b.TempDir(), "absent") // no program stats: not what is measured
	return c
}

// BenchmarkVerdictUpdate is the collector alone: map read, label
// formatting and const metrics into a drained channel.
func BenchmarkVerdictUpdate(b *testing.B) {
	for _, n := range benchVerdictKeys {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			c := benchVerdictCollector(b, n)
			series := 0
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				ch := make(chan prometheus.Metric, 256)
				done := make(chan int)
				go func() {
					k := 0
					for range ch {
						k++
					}
					done <- k
				}()
				if err := c.Update(ch); err != nil {
					b.Fatal(err)
				}
				close(ch)
				series = <-done
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(series), "series")
		})
	}
}

// BenchmarkVerdictScrape is a whole scrape of the verdict collector as the
// exporter serves it: fan-out, registry gather (sorting, checks) and text
// encoding.
func BenchmarkVerdictScrape(b *testing.B) {
	for _, n := range benchVerdictKeys {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			c := benchVerdictCollector(b, n)
			reg := prometheus.NewRegistry()
			reg.MustRegister(&Exporter{collectors: map[string]Collector{"verdict": c}, logger: slog.New(slog.DiscardHandler)})
			series := 0
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				mfs, err := reg.Gather()
				if err != nil {
					b.Fatal(err)
				}
				enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
				series = 0
				for _, mf := range mfs {
					series += len(mf.GetMetric())
					if err := enc.Encode(mf); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(series), "series")
		})
	}
}
