package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipsec-exporter/ipsec_exporter/bench"
)

// TestReport feeds the report a small lab run and checks the figures and
// target verdicts it derives: what `make bench` writes must follow from
// what was measured, normalised per packet within each round.
func TestReport(t *testing.T) {
	dir := t.TempDir()
	var lab strings.Builder
	lab.WriteString("ipsec-lab: kernel 6.12: 6.12.118+deb12-cloud-amd64 (linux-image-6.12.118+deb12-cloud-amd64-unsigned), accel tcg\n")
	win := func(w, v string, round int, packets uint64, insns float64) bench.Record {
		return bench.Record{Kind: "window", Kernel: "6.12", Workload: w, Variant: v, Round: round, Packets: packets, Seconds: insns / 1e9}
	}
	for _, r := range []bench.Record{
		{Kind: "bpf_cost", Kernel: "6.12", Variant: "ours_fentry", Round: 1, Packets: 100, RunNs: 50000, Runs: 200},
		{Kind: "bpf_cost", Kernel: "6.12", Variant: "ours_kprobe", Round: 1, Packets: 100, RunNs: 70000, Runs: 500},
		{Kind: "bpf_cost", Kernel: "6.12", Variant: "floor_fentry", Round: 1, Packets: 100, RunNs: 13000, Runs: 200},
		{Kind: "workload", Kernel: "6.12", Workload: "tcp", Text: "bulk TCP"},
		// Round 2 sends more packets: per packet, the same cost.
		win("tcp", "none", 1, 1000, 40000e3), win("tcp", "verdict", 1, 1000, 40800e3),
		win("tcp", "none", 2, 2000, 80000e3), win("tcp", "verdict", 2, 2000, 81600e3),
		win("tcp", "exporter", 1, 1000, 41000e3), win("tcp", "exporter", 2, 2000, 82000e3),
		win("tcp", "wire", 1, 1000, 40250e3), win("tcp", "wire", 2, 2000, 80500e3),
		// GSO super-packets: the count varies, the bytes do not.
		{Kind: "workload", Kernel: "6.12", Workload: "plain_tcp", Text: "plain TCP", Normalise: "byte"},
		win("plain_tcp", "none", 1, 1000, 30000e3), win("plain_tcp", "exporter", 1, 1000, 30600e3),
		win("plain_tcp", "wire", 1, 1100, 30200e3), win("plain_tcp", "tc_empty", 1, 1000, 30100e3),
		{Kind: "kstate_scale", Kernel: "6.12", Variant: "getsa_dump", Collector: "sa", Objects: 50000, Round: 1, Seconds: 1},
		{Kind: "kstate_scale", Kernel: "6.12", Variant: "scrape", Collector: "sa", Objects: 50000, Round: 1, Seconds: 1.4},
		{Kind: "kstate_scale", Kernel: "6.12", Variant: "scrape", Collector: "default", Objects: 50000, Round: 1, Seconds: 3,
			RSSBytes: 90 << 20},
	} {
		lab.WriteString(r.Line() + "\n")
	}
	labFile := filepath.Join(dir, "lab.txt")
	if err := os.WriteFile(labFile, []byte(lab.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newRun()
	r.noPlugin = "test"
	if err := r.readLab(labFile); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := reportTemplate.Execute(&b, r.page()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| verdict program runs per good ESP packet, fentry mode | <= 2 (one per direction; <= 4 if justified) | 2.00 (met) |",
		"| verdict program runs per good ESP packet, kprobe mode | <= 3 | 5.00 (**missed**) |",
		// All in is insnprof's per-hook figure: none without a profile.
		"| verdict programs all in, per ESP packet | <= 25% of 0c5c223 (6.1 <= 1,056; 6.12 <= 941) | – (not measured) |",
		"| verdict program bodies, per ESP packet (kernel accounting) | <= 600 | 500 (met) |",
		"| verdict program bodies net of the empty programs' accounting, per ESP packet | <= 600 | 370 (500 - 130) (met) |",
		"| wire program all in, per ESP packet | <= 300 | – (not measured) |",
		"| wire program all in, per plaintext packet | <= 300 | – (not measured) |",
		// Loss is judged on insnprof's charge too.
		"| whole exporter (auto mode + wire): throughput loss, ESP, bulk TCP | <= 2.0% | – (not measured) |",
		"| whole exporter (auto mode + wire): throughput loss, ESP, 64-byte UDP | <= 2.0% | – (not measured) |",
		"| whole exporter (auto mode + wire): throughput loss, plain TCP, no IPsec | <= 1.0% | – (not measured) |",
		"| 50k-SA scrape / bare XFRM_MSG_GETSA dump, same run | <= 1.5 | 1.40 (met) |",
		"| exporter RSS with 50k SAs | <= 80 MiB | 90.0 MiB (**missed**) |",
		"| verdict program runs per packet of non-IPsec traffic, except at drops | 0 (drops only) | – (not measured) |",
		"Debian package `linux-image-6.12.118+deb12-cloud-amd64-unsigned`",
		"**insnprof was not loaded** (test)",
		"### tcp: bulk TCP",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", out)
	}
}

// With profiles, the all-in targets are what insnprof charged the hooks per
// packet (the window's extra per packet beside it), and runs at the
// kfree_skb tracepoint are drops, not runs on non-IPsec traffic.
func TestReportJudgesHooks(t *testing.T) {
	dir := t.TempDir()
	var lab strings.Builder
	lab.WriteString("ipsec-lab: kernel 6.12: 6.12.118+deb12-cloud-amd64 (linux-image-6.12.118+deb12-cloud-amd64-unsigned), accel tcg\n")
	win := func(w, v string, round, mark int, packets uint64, insns float64) bench.Record {
		return bench.Record{Kind: "window", Kernel: "6.12", Workload: w, Variant: v, Round: round, Mark: mark, Packets: packets, Seconds: insns / 1e9}
	}
	hooks := func(insns uint64) *windowCost {
		return &windowCost{hooks: map[string]*hookCost{"a": {insns: insns / 2}, "b": {insns: insns - insns/2}}}
	}
	profiles := map[int]*windowCost{
		// 800 and 780 per packet: median 790; the window says 400 (noise).
		2: hooks(800 * 1000), 4: hooks(780 * 2000),
		6: hooks(250 * 1000), 8: hooks(350 * 2000),
		10: hooks(220 * 1100), 12: hooks(110 * 1000),
		// 1,000 and 1,100 per packet over none's 40,000: 2.4% and 2.7%.
		16: hooks(1000 * 1000), 18: hooks(1100 * 2000),
		14: {programs: map[string]*programCost{
			"tp_btf_kfree_skb":            {hook: "tp_btf kfree_skb", runs: 5},
			"fentry_xfrm_replay_overflow": {hook: "fentry xfrm_replay_overflow", runs: 0},
		}},
	}
	for _, r := range []bench.Record{
		{Kind: "workload", Kernel: "6.12", Workload: "tcp", Text: "bulk TCP"},
		win("tcp", "none", 1, 1, 1000, 40000e3), win("tcp", "verdict", 1, 2, 1000, 40400e3),
		win("tcp", "none", 2, 3, 2000, 80000e3), win("tcp", "verdict", 2, 4, 2000, 80800e3),
		win("tcp", "wire", 1, 6, 1000, 39000e3), win("tcp", "wire", 2, 8, 2000, 78000e3),
		// The windows say -1.3% and +0.5%: the path's own variation.
		win("tcp", "exporter", 1, 16, 1000, 39500e3), win("tcp", "exporter", 2, 18, 2000, 80400e3),
		// 3 runs: within the bound the issue allows with a reason; 3.004
		// (a drop now and then) is 3.00 as printed.
		{Kind: "bpf_cost", Kernel: "6.12", Variant: "ours_fentry", Round: 1, Packets: 100, RunNs: 50000, Runs: 300},
		{Kind: "bpf_cost", Kernel: "6.12", Variant: "ours_kprobe", Round: 1, Packets: 1000, RunNs: 700000, Runs: 3004},
		{Kind: "workload", Kernel: "6.12", Workload: "plain_tcp", Text: "plain TCP", Normalise: "byte"},
		win("plain_tcp", "none", 1, 9, 1000, 30000e3),
		win("plain_tcp", "wire", 1, 10, 1100, 30200e3), win("plain_tcp", "tc_empty", 1, 12, 1000, 30100e3),
		win("plain_tcp", "verdict", 1, 14, 1000, 30000e3),
	} {
		lab.WriteString(r.Line() + "\n")
	}
	labFile := filepath.Join(dir, "lab.txt")
	if err := os.WriteFile(labFile, []byte(lab.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newRun()
	if err := r.readLab(labFile); err != nil {
		t.Fatal(err)
	}
	r.profiles = map[string]map[int]*windowCost{"6.12": profiles}
	var b bytes.Buffer
	if err := reportTemplate.Execute(&b, r.page()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| verdict programs all in, per ESP packet | <= 25% of 0c5c223 (6.1 <= 1,056; 6.12 <= 941) | 790 = 21% (400) (met) |",
		"| wire program all in, per ESP packet | <= 300 | 300 (-1,000) (met) |",
		"| wire program all in, per plaintext packet | <= 300 | 220 (182) (met) |",
		"| wire on a plaintext packet to a non-peer / an empty TC program | close to 1 | 2.00 (reported) |",
		"| verdict program runs per packet of non-IPsec traffic, except at drops | 0 (drops only) | 0.000 (+0.005) (met) |",
		"| whole exporter (auto mode + wire): throughput loss, ESP, bulk TCP | <= 2.0% | 2.6% (-0.4%) (**missed**) |",
		"| verdict program runs per good ESP packet, fentry mode | <= 2 (one per direction; <= 4 if justified) | 3.00 (within the justified 4: bpf/README.md, Design) |",
		"| verdict program runs per good ESP packet, kprobe mode | <= 3 | 3.00 (met) |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", out)
	}
}
