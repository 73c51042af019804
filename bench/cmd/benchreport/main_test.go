package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipsec-exporter/ipsec_exporter/bench"
)

// TestReport feeds the report a tiny lab run and host benchmark output and
// checks the ratios and target verdicts it derives: what `make bench`
// writes must follow from what was measured.
func TestReport(t *testing.T) {
	dir := t.TempDir()
	var lab strings.Builder
	lab.WriteString("ipsec-lab: kernel 6.12: 6.12.117+deb12-cloud-amd64 (linux-image-...), accel tcg\n")
	for _, r := range []bench.Record{
		{Kind: "bpf_cost", Kernel: "6.12", Variant: "floor_fentry", Round: 1, Packets: 100, RunNs: 100000, Runs: 1400},
		{Kind: "bpf_cost", Kernel: "6.12", Variant: "ours_fentry", Round: 1, Packets: 100, RunNs: 150000, Runs: 1400},
		{Kind: "bpf_cost", Kernel: "6.12", Variant: "reference", Round: 1, Packets: 200, RunNs: 600000, Runs: 800},
		{Kind: "bpf_program", Kernel: "6.12", Variant: "ours_fentry", Round: 1, Program: "fentry_xfrm_input",
			Packets: 100, RunNs: 150000, Runs: 100, Insns: 121, Calls: "bpf_probe_read_kernel×5"},
		{Kind: "throughput", Kernel: "6.12", Variant: "none", Round: 1, Bytes: 1e6, Seconds: 1},
		{Kind: "throughput", Kernel: "6.12", Variant: "exporter", Round: 1, Bytes: 1e6, Seconds: 1.05},
		{Kind: "throughput", Kernel: "6.12", Variant: "ours_fentry", Round: 1, Bytes: 1e6, Seconds: 1.1, Packets: 1000},
		{Kind: "throughput", Kernel: "6.12", Variant: "reference", Round: 1, Bytes: 1e6, Seconds: 1.3, Packets: 1000},
		{Kind: "rss", Kernel: "6.12", Variant: "default_collectors", Series: 300, RSSBytes: 25 << 20, HWMBytes: 40 << 20},
	} {
		lab.WriteString(r.Line() + "\n")
	}
	labFile := filepath.Join(dir, "lab.txt")
	hostFile := filepath.Join(dir, "host.txt")
	host := "BenchmarkVerdictScrape/keys=1000-2 \t 10 \t 9000000 ns/op \t 4000000 cpu-ns/op \t 2014 series \t 100 B/op \t 36000 allocs/op\n" +
		"BenchmarkVerdictScrape/keys=10000-2 \t 10 \t 90000000 ns/op \t 45000000 cpu-ns/op \t 20014 series \t 100 B/op \t 360000 allocs/op\n"
	for f, s := range map[string]string{labFile: lab.String(), hostFile: host} {
		if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := &report{kernels: map[string]string{}}
	r.readLab(labFile)
	r.readHost(hostFile)
	var b bytes.Buffer
	r.write(&b, "", filepath.Join(dir, "BENCHMARKS.md"))
	out := b.String()
	for _, want := range []string{
		"| ours fentry / reference | <= 1.0 | 0.50 (met) |",
		"| ours fentry / its floor | <= 2.0 | 1.50 (met) |",
		"| ours fentry / reference | <= 1.0 | 0.33 (met) |", // all in, from the throughput rounds
		"| fentry_xfrm_input | 1.00 | 1500 | 121 | bpf_probe_read_kernel×5 |",
		"| 6.12 | 1.00 (1.0) | 0.95 (1.0) | 0.952 | 4.8% | **missed** |",
		"VerdictScrape at 10,000 series (interpolated): 22.2 ms CPU (target < 20 ms: **missed**)",
		"| 6.12 | 300 | 25.0 MiB | 40.0 MiB | met |",
		"Debian `6.12.117+deb12-cloud-amd64`",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
