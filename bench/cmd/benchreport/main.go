// Command benchreport turns what `make bench` measured into BENCHMARKS.md:
// the lab benchmarks' BENCH lines (one file per kernel run), the host's Go
// benchmark output, and a PNG plot of scrape time against series (drawn by
// gnuplot). Ratios come from one run; every table says its command, kernel
// and date.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/ipsec-exporter/ipsec_exporter/bench"
	"github.com/ipsec-exporter/ipsec_exporter/lab"
)

func main() {
	var (
		hostFile  = flag.String("host", "", "go test -bench output of the host benchmarks")
		labFiles  = flag.String("lab", "", "comma-separated outputs of `ipsec-lab test -run ^TestLabBench` (one per kernel or one for all)")
		notesFile = flag.String("notes", "bench/NOTES.md", "hand-written findings appended to the report")
		out       = flag.String("o", "BENCHMARKS.md", "report to write")
		plot      = flag.String("plot", "bench/scrape.png", "PNG plot of scrape time against series (empty: none)")
		meta      = flag.String("meta", "", "file of `key: value` lines about the run (date, host, load, commands)")
	)
	flag.Parse()
	r := &report{meta: readMeta(*meta), kernels: map[string]string{}}
	for _, f := range strings.Split(*labFiles, ",") {
		if f != "" {
			r.readLab(f)
		}
	}
	if *hostFile != "" {
		r.readHost(*hostFile)
	}
	var b bytes.Buffer
	r.write(&b, *plot, *out)
	if notes, err := os.ReadFile(*notesFile); err == nil {
		b.WriteString("\n")
		b.Write(notes)
	}
	if err := os.WriteFile(*out, b.Bytes(), 0o644); err != nil {
		fatal(err)
	}
	fmt.Fprintf(os.Stderr, "benchreport: wrote %s\n", *out)
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "benchreport: %v\n", err)
	os.Exit(1)
}

type meta struct {
	keys   []string
	values map[string]string
}

func readMeta(path string) meta {
	m := meta{values: map[string]string{}}
	if path == "" {
		return m
	}
	b, err := os.ReadFile(path)
	if err != nil {
		fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if ok {
			m.keys = append(m.keys, k)
			m.values[k] = v
		}
	}
	return m
}

type hostBench struct {
	name    string // e.g. VerdictScrape
	keys    int
	nsPerOp []float64
	cpuNs   []float64
	bPerOp  []float64
	allocs  []float64
	series  float64
}

type report struct {
	meta    meta
	records []bench.Record
	kernels map[string]string // short name -> release
	order   []string          // kernels in the order seen
	host    map[string]*hostBench
	hostRaw string
}

var kernelLine = regexp.MustCompile(`ipsec-lab: kernel (\S+): (\S+) `)

func (r *report) readLab(path string) {
	f, err := os.Open(path)
	if err != nil {
		fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		if m := kernelLine.FindStringSubmatch(line); m != nil {
			if _, ok := r.kernels[m[1]]; !ok {
				r.order = append(r.order, m[1])
			}
			r.kernels[m[1]] = m[2]
		}
		i := strings.Index(line, bench.Prefix)
		if i < 0 {
			continue
		}
		var rec bench.Record
		if err := json.Unmarshal([]byte(line[i+len(bench.Prefix):]), &rec); err != nil {
			fatal(fmt.Errorf("%s: %q: %w", path, line, err))
		}
		r.records = append(r.records, rec)
	}
	if err := s.Err(); err != nil {
		fatal(err)
	}
}

var benchLine = regexp.MustCompile(`^Benchmark(\w+)/keys=(\d+)-\d+\s+\d+\s+(.*)$`)

func (r *report) readHost(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		fatal(err)
	}
	r.hostRaw = string(b)
	r.host = map[string]*hostBench{}
	for _, line := range strings.Split(string(b), "\n") {
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		keys, _ := strconv.Atoi(m[2])
		id := m[1] + "/" + m[2]
		h := r.host[id]
		if h == nil {
			h = &hostBench{name: m[1], keys: keys}
			r.host[id] = h
		}
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				h.nsPerOp = append(h.nsPerOp, v)
			case "cpu-ns/op":
				h.cpuNs = append(h.cpuNs, v)
			case "B/op":
				h.bPerOp = append(h.bPerOp, v)
			case "allocs/op":
				h.allocs = append(h.allocs, v)
			case "series":
				h.series = v
			}
		}
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r *report) kernelList() []string {
	ks := append([]string(nil), r.order...)
	sort.Slice(ks, func(i, j int) bool { return lab.VersionLess(ks[i], ks[j]) })
	return ks
}

func (r *report) filter(kind, kernel string) []bench.Record {
	var out []bench.Record
	for _, rec := range r.records {
		if rec.Kind == kind && rec.Kernel == kernel {
			out = append(out, rec)
		}
	}
	return out
}

func yes(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func (r *report) write(b *bytes.Buffer, plot, out string) {
	fmt.Fprintf(b, "# Benchmarks\n\n")
	fmt.Fprintf(b, "Written by `make bench` (scripts/bench.sh, bench/cmd/benchreport); do not edit by hand: the findings\n")
	fmt.Fprintf(b, "at the end come from bench/NOTES.md.\n\n")
	for _, k := range r.meta.keys {
		fmt.Fprintf(b, "- %s: %s\n", k, r.meta.values[k])
	}
	for _, k := range r.kernelList() {
		fmt.Fprintf(b, "- lab kernel %s: Debian `%s`\n", k, r.kernels[k])
	}
	b.WriteString("\nThe lab runs under software emulation (qemu TCG; no usable KVM here) on a shared 2-core machine.\n")
	if strings.HasPrefix(r.meta.values["lab clock"], "instruction-counted") {
		b.WriteString("Its clock is instruction-counted: every guest time below (BPF run time, transfer time) is a count of\n")
		b.WriteString("emulated instructions, 1 ns each, so the figures repeat exactly and do not depend on the host's load. It\n")
		b.WriteString("is a model (every instruction costs the same: cache misses are free, a byte of `rep movsb` costs as much\n")
		b.WriteString("as an AES round), so absolute figures are not hardware nanoseconds; ratios between variants measured in\n")
		b.WriteString("the same VM run are what counts.\n")
	} else {
		b.WriteString("Its clock is the host's: absolute times are meaningless and noisy; ratios between variants measured in\n")
		b.WriteString("the same VM run are what counts.\n")
	}
	r.writeCost(b)
	r.writeThroughput(b)
	r.writeHost(b, plot, out)
	r.writeKState(b)
	r.writeRSS(b)
}

var variantOrder = []string{"floor_fentry", "ours_fentry", "floor_kprobe", "ours_kprobe", "reference"}

var variantText = map[string]string{
	"floor_fentry": "floor: empty programs on our fentry-mode hooks",
	"ours_fentry":  "ours, fentry mode",
	"floor_kprobe": "floor: empty programs on our kprobe-mode hooks",
	"ours_kprobe":  "ours, kprobe mode",
	"reference":    "reference: kprobe+kretprobe on xfrm_input/xfrm_output, hash maps (NetObserv's approach)",
}

// costPerPacket is the median over rounds of BPF run time per ESP packet,
// and the runs per packet.
func (r *report) costPerPacket(kernel, variant string) (ns, runs float64, n int) {
	var v, rr []float64
	for _, rec := range r.filter("bpf_cost", kernel) {
		if rec.Variant == variant && rec.Packets > 0 {
			v = append(v, float64(rec.RunNs)/float64(rec.Packets))
			rr = append(rr, float64(rec.Runs)/float64(rec.Packets))
		}
	}
	return median(v), median(rr), len(v)
}

func (r *report) writeCost(b *bytes.Buffer) {
	ks := r.kernelList()
	if len(r.filter("bpf_cost", firstOr(ks))) == 0 {
		return
	}
	b.WriteString("\n## Per-packet BPF cost\n\n")
	b.WriteString("`go run ./lab/cmd/ipsec-lab test -pkg ./bench -run '^TestLabBench'` (TestLabBenchBPFCost): bulk TCP over a\n")
	b.WriteString("transport-mode AES-GCM SA pair between two namespaces, one program set attached at a time, in rounds;\n")
	b.WriteString("a warm-up transfer with the set attached, then a 4 MiB transfer measured. Cost is the kernel's own\n")
	b.WriteString("accounting (`kernel.bpf_stats_enabled`: run_time_ns over the set's programs) divided by the ESP packets\n")
	b.WriteString("sent (both directions; each is encrypted and decrypted in the one kernel). It counts the programs' bodies,\n")
	b.WriteString("not the hook mechanism (trampoline, kprobe trap, kretprobe return hook), which the throughput test covers.\n")
	b.WriteString("Median over rounds.\n\n")
	b.WriteString("| variant |")
	for _, k := range ks {
		fmt.Fprintf(b, " %s ns/pkt | %s runs/pkt |", k, k)
	}
	b.WriteString("\n|---|")
	for range ks {
		b.WriteString("---:|---:|")
	}
	b.WriteString("\n")
	for _, v := range variantOrder {
		fmt.Fprintf(b, "| %s |", variantText[v])
		for _, k := range ks {
			ns, runs, n := r.costPerPacket(k, v)
			if n == 0 {
				b.WriteString(" – | – |")
				continue
			}
			fmt.Fprintf(b, " %.0f | %.1f |", ns, runs)
		}
		b.WriteString("\n")
	}
	b.WriteString("\nRatios (same VM run) and targets:\n\n| ratio | target |")
	for _, k := range ks {
		fmt.Fprintf(b, " %s |", k)
	}
	b.WriteString("\n|---|---|")
	for range ks {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	ratios := []struct {
		what, num, den string
		limit          float64
	}{
		{"ours fentry / reference", "ours_fentry", "reference", 1},
		{"ours kprobe / reference", "ours_kprobe", "reference", 1},
		{"ours fentry / its floor", "ours_fentry", "floor_fentry", 2},
		{"ours kprobe / its floor", "ours_kprobe", "floor_kprobe", 2},
	}
	for _, q := range ratios {
		fmt.Fprintf(b, "| %s | <= %.1f |", q.what, q.limit)
		for _, k := range ks {
			a, _, n1 := r.costPerPacket(k, q.num)
			d, _, n2 := r.costPerPacket(k, q.den)
			if n1 == 0 || n2 == 0 {
				b.WriteString(" – |")
				continue
			}
			fmt.Fprintf(b, " %.2f (%s) |", a/d, yes(a/d <= q.limit))
		}
		b.WriteString("\n")
	}
	for _, mode := range []string{"ours_fentry", "ours_kprobe", "reference"} {
		r.writePrograms(b, mode, ks)
	}
}

func firstOr(ks []string) string {
	if len(ks) == 0 {
		return ""
	}
	return ks[0]
}

// writePrograms breaks a variant's cost down by program (all rounds summed).
func (r *report) writePrograms(b *bytes.Buffer, variant string, ks []string) {
	type prog struct {
		runs, ns, packets float64
		insns             int
		calls             string
	}
	progs := map[string]map[string]*prog{}
	var names []string
	for _, k := range ks {
		progs[k] = map[string]*prog{}
		for _, rec := range r.filter("bpf_program", k) {
			if rec.Variant != variant {
				continue
			}
			p := progs[k][rec.Program]
			if p == nil {
				p = &prog{}
				progs[k][rec.Program] = p
				if !slicesContains(names, rec.Program) {
					names = append(names, rec.Program)
				}
			}
			p.runs += float64(rec.Runs)
			p.ns += float64(rec.RunNs)
			p.packets += float64(rec.Packets)
			if rec.Insns > 0 {
				p.insns, p.calls = rec.Insns, rec.Calls
			}
		}
	}
	if len(names) == 0 {
		return
	}
	last := ks[len(ks)-1]
	sort.Slice(names, func(i, j int) bool {
		pi, pj := progs[last][names[i]], progs[last][names[j]]
		if pi == nil || pj == nil {
			return names[i] < names[j]
		}
		return pi.ns > pj.ns
	})
	fmt.Fprintf(b, "\nWhere the time goes: %s, per program (all rounds; runs and ns per ESP packet; xlated\n", variantText[variant])
	b.WriteString("instructions and the kernel functions the program calls, from the loaded program):\n\n| program |")
	for _, k := range ks {
		fmt.Fprintf(b, " %s runs/pkt | %s ns/pkt |", k, k)
	}
	b.WriteString(" insns | calls |\n|---|")
	for range ks {
		b.WriteString("---:|---:|")
	}
	b.WriteString("---:|---|\n")
	for _, name := range names {
		fmt.Fprintf(b, "| %s |", name)
		insns, calls := 0, ""
		for _, k := range ks {
			p := progs[k][name]
			if p == nil || p.packets == 0 {
				b.WriteString(" – | – |")
				continue
			}
			fmt.Fprintf(b, " %.2f | %.0f |", p.runs/p.packets, p.ns/p.packets)
			if p.insns > 0 {
				insns, calls = p.insns, p.calls
			}
		}
		fmt.Fprintf(b, " %d | %s |\n", insns, calls)
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (r *report) writeThroughput(b *bytes.Buffer) {
	ks := r.kernelList()
	if len(r.filter("throughput", firstOr(ks))) == 0 {
		return
	}
	b.WriteString("\n## ESP throughput with and without the exporter's programs\n\n")
	b.WriteString("TestLabBenchThroughput: 16 MiB bulk TCP over transport-mode AES-GCM between two namespaces, the program\n")
	b.WriteString("sets interleaved in rounds (none, exporter, ours_fentry, ...); \"exporter\" is the verdict programs in auto\n")
	b.WriteString("mode plus the wire TC program on both ends. Sets are attached before and detached after each run, outside\n")
	b.WriteString("the timed transfer. Under emulation the MB/s are meaningless; the ratio of the medians is the figure.\n")
	b.WriteString("Target: loss < 2%.\n\n")
	b.WriteString("| kernel | none MB/s (runs) | exporter MB/s (runs) | median ratio | loss | target |\n|---|---|---|---:|---:|---|\n")
	for _, k := range ks {
		runs := map[string][]float64{}
		for _, rec := range r.filter("throughput", k) {
			runs[rec.Variant] = append(runs[rec.Variant], float64(rec.Bytes)/rec.Seconds/1e6)
		}
		none, exp := median(runs["none"]), median(runs["exporter"])
		loss := 1 - exp/none
		fmt.Fprintf(b, "| %s | %.2f (%s) | %.2f (%s) | %.3f | %.1f%% | %s |\n", k, none, list(runs["none"]), exp,
			list(runs["exporter"]), exp/none, 100*loss, yes(loss < 0.02))
	}
	r.writeTotalCost(b, ks)
}

// writeTotalCost turns the throughput rounds of each program set into its
// whole cost per ESP packet: the time the transfer took beyond "none",
// hook mechanism included (with the instruction-counted clock, guest
// instructions).
func (r *report) writeTotalCost(b *bytes.Buffer, ks []string) {
	total := func(k, variant string) (float64, bool) {
		var none, t, pk []float64
		for _, rec := range r.filter("throughput", k) {
			switch rec.Variant {
			case "none":
				none = append(none, rec.Seconds)
			case variant:
				t = append(t, rec.Seconds)
				pk = append(pk, float64(rec.Packets))
			}
		}
		if len(none) == 0 || len(t) == 0 || median(pk) == 0 {
			return 0, false
		}
		return (median(t) - median(none)) * 1e9 / median(pk), true
	}
	if _, ok := total(firstOr(ks), "reference"); !ok {
		return
	}
	b.WriteString("\nThe same rounds give each program set's whole cost per ESP packet: (median transfer time - median\n")
	b.WriteString("time without programs) / ESP packets. Unlike the accounting above it includes the hook mechanism\n")
	b.WriteString("(trampolines, kprobe traps, kretprobe return hooks) and what the programs do to the rest of the path.\n\n")
	b.WriteString("| variant |")
	for _, k := range ks {
		fmt.Fprintf(b, " %s ns/pkt, all in |", k)
	}
	b.WriteString("\n|---|")
	for range ks {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, v := range append([]string{"exporter"}, variantOrder...) {
		text := variantText[v]
		if v == "exporter" {
			text = "exporter: ours (auto mode) + wire TC program on both ends"
		}
		fmt.Fprintf(b, "| %s |", text)
		for _, k := range ks {
			if c, ok := total(k, v); ok {
				fmt.Fprintf(b, " %.0f |", c)
			} else {
				b.WriteString(" – |")
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\n| ratio, all in | target |")
	for _, k := range ks {
		fmt.Fprintf(b, " %s |", k)
	}
	b.WriteString("\n|---|---|")
	for range ks {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, q := range []struct {
		what, num, den string
		limit          float64
	}{
		{"ours fentry / reference", "ours_fentry", "reference", 1},
		{"ours kprobe / reference", "ours_kprobe", "reference", 1},
		{"ours fentry / its floor", "ours_fentry", "floor_fentry", 2},
		{"ours kprobe / its floor", "ours_kprobe", "floor_kprobe", 2},
	} {
		fmt.Fprintf(b, "| %s | <= %.1f |", q.what, q.limit)
		for _, k := range ks {
			a, ok1 := total(k, q.num)
			d, ok2 := total(k, q.den)
			if !ok1 || !ok2 || d <= 0 {
				b.WriteString(" – |")
				continue
			}
			fmt.Fprintf(b, " %.2f (%s) |", a/d, yes(a/d <= q.limit))
		}
		b.WriteString("\n")
	}
}

func list(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.1f", x)
	}
	return strings.Join(s, ", ")
}

func (r *report) writeHost(b *bytes.Buffer, plot, out string) {
	if len(r.host) == 0 {
		return
	}
	b.WriteString("\n## Scrape cost of the verdict collector (host)\n\n")
	fmt.Fprintf(b, "`%s` on the build host (maps load\n", r.meta.values["host benchmark command"])
	b.WriteString("there; values per CPU): VerdictUpdate is the collector alone (map read, labels, const metrics);\n")
	b.WriteString("VerdictScrape is what a scrape of it costs in the exporter (fan-out, registry gather, text encoding).\n")
	b.WriteString("Each key is two series. Medians over -count runs. Wall ms/op counts waiting for a CPU on the loaded\n")
	b.WriteString("host; CPU ms/op is the process's user+system time per op (GC included) and is the figure judged.\n")
	b.WriteString("Target: 10k series in < 20 ms, linear in series.\n\n")
	b.WriteString("| benchmark | keys | series | wall ms/op | CPU ms/op | CPU ns/series | allocs/op | allocs/series | B/op |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	ids := make([]string, 0, len(r.host))
	for id := range r.host {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		a, c := r.host[ids[i]], r.host[ids[j]]
		if a.name != c.name {
			return a.name > c.name
		}
		return a.keys < c.keys
	})
	var data strings.Builder
	prev := ""
	for _, id := range ids {
		h := r.host[id]
		ns, cpu, allocs := median(h.nsPerOp), median(h.cpuNs), median(h.allocs)
		fmt.Fprintf(b, "| %s | %d | %.0f | %.2f | %.2f | %.0f | %.0f | %.1f | %.0f |\n", h.name, h.keys, h.series, ns/1e6,
			cpu/1e6, cpu/h.series, allocs, allocs/h.series, median(h.bPerOp))
		if h.name != prev {
			if prev != "" {
				data.WriteString("\n\n")
			}
			prev = h.name
		}
		fmt.Fprintf(&data, "%.0f %.4f %.4f\n", h.series, cpu/1e6, ns/1e6)
	}
	// 10k series: interpolate between the measured sizes on the scrape line.
	for _, name := range []string{"VerdictUpdate", "VerdictScrape"} {
		if ms, ok := r.at10k(name); ok {
			fmt.Fprintf(b, "\n%s at 10,000 series (interpolated): %.1f ms CPU (target < 20 ms: %s).", name, ms, yes(ms < 20))
		}
	}
	b.WriteString("\n")
	if plot == "" {
		return
	}
	if err := drawPlot(plot, data.String()); err != nil {
		fmt.Fprintf(b, "\n(No plot: %v.)\n", err)
		return
	}
	rel, err := filepath.Rel(filepath.Dir(out), plot)
	if err != nil {
		rel = plot
	}
	fmt.Fprintf(b, "\n![scrape time against series](%s)\n", filepath.ToSlash(rel))
}

// at10k interpolates ms/op at 10,000 series between the two nearest sizes.
func (r *report) at10k(name string) (float64, bool) {
	type pt struct{ series, ms float64 }
	var pts []pt
	for _, h := range r.host {
		if h.name == name {
			pts = append(pts, pt{h.series, median(h.cpuNs) / 1e6})
		}
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].series < pts[j].series })
	for i := 1; i < len(pts); i++ {
		if pts[i-1].series <= 10000 && pts[i].series >= 10000 {
			f := (10000 - pts[i-1].series) / (pts[i].series - pts[i-1].series)
			return pts[i-1].ms + f*(pts[i].ms-pts[i-1].ms), true
		}
	}
	return 0, false
}

func drawPlot(path, data string) error {
	if _, err := exec.LookPath("gnuplot"); err != nil {
		return fmt.Errorf("gnuplot not installed")
	}
	tmp, err := os.CreateTemp("", "scrape-*.dat")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	script := fmt.Sprintf(`set terminal pngcairo size 800,520 font ",11"
set output %q
set logscale xy
set grid
set key top left
set xlabel "series in the scrape"
set ylabel "CPU milliseconds per scrape"
set title "Verdict collector: scrape CPU time against series (host, median)"
set arrow from 10000, graph 0 to 10000, graph 1 nohead dt 2
set label "target: 10k series < 20 ms" at 10500, 25
plot %q index 0 using 1:2 with linespoints lw 2 title "Update (collector alone), CPU", \
     %q index 1 using 1:2 with linespoints lw 2 title "Scrape (gather + encode), CPU", \
     %q index 1 using 1:3 with points pt 6 title "Scrape, wall (loaded host)", \
     20 with lines dt 3 title "20 ms"
`, path, tmp.Name(), tmp.Name(), tmp.Name())
	cmd := exec.Command("gnuplot")
	cmd.Stdin = strings.NewReader(script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("gnuplot: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func (r *report) writeKState(b *bytes.Buffer) {
	ks := r.kernelList()
	if len(r.filter("kstate", firstOr(ks))) == 0 {
		return
	}
	b.WriteString("\n## Kernel-state collectors with 10,000 SAs and 10,000 policies (lab)\n\n")
	b.WriteString("TestLabBenchKernelState: one namespace with 10k tunnel-mode SAs and 10k policies; the exporter binary runs\n")
	b.WriteString("with only the named collector and is scraped 5 times. Collector time is the exporter's own\n")
	b.WriteString("`ipsec_scrape_collector_duration_seconds`; scrape is the whole HTTP request; allocations are the Go runtime's\n")
	b.WriteString("between two scrapes (`go_memstats_*` deltas: the scrape itself plus runtime metrics). Medians. The default\n")
	b.WriteString("caps give 1,000 SAs/policies their own series; *_uncapped is `--collector.{sa,policy}.max-series=0`.\n\n")
	b.WriteString("| kernel | collector | series | collector ms | scrape ms | mallocs/scrape | MB allocated/scrape | RSS after |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, k := range ks {
		recs := r.filter("kstate", k)
		var names []string
		for _, rec := range recs {
			if !slicesContains(names, rec.Collector) {
				names = append(names, rec.Collector)
			}
		}
		for _, c := range names {
			var sec, wall, mallocs, bytes []float64
			series := 0
			for _, rec := range recs {
				if rec.Collector == c {
					sec = append(sec, rec.Seconds)
					wall = append(wall, rec.WallSeconds)
					mallocs = append(mallocs, float64(rec.Mallocs))
					bytes = append(bytes, float64(rec.AllocBytes))
					series = rec.Series
				}
			}
			rss := ""
			for _, rec := range r.filter("rss", k) {
				if rec.Variant == c {
					rss = fmt.Sprintf("%.1f MiB", float64(rec.RSSBytes)/(1<<20))
				}
			}
			fmt.Fprintf(b, "| %s | %s | %d | %.0f | %.0f | %.0f | %.1f | %s |\n", k, c, series, 1000*median(sec),
				1000*median(wall), median(mallocs), median(bytes)/1e6, rss)
		}
	}
}

func (r *report) writeRSS(b *bytes.Buffer) {
	ks := r.kernelList()
	var rows []string
	for _, k := range ks {
		for _, rec := range r.filter("rss", k) {
			if rec.Variant == "default_collectors" {
				rss := float64(rec.RSSBytes) / (1 << 20)
				rows = append(rows, fmt.Sprintf("| %s | %d | %.1f MiB | %.1f MiB | %s |", k, rec.Series, rss,
					float64(rec.HWMBytes)/(1<<20), yes(rss < 30)))
			}
		}
	}
	if len(rows) == 0 {
		return
	}
	b.WriteString("\n## Exporter memory (lab)\n\n")
	b.WriteString("TestLabBenchRSS: the exporter binary with every default collector (verdict programs attached, wire on the\n")
	b.WriteString("VM's interfaces), a namespace pair with ESP traffic, 20 scrapes, then 2 s idle; `/proc/PID/status`.\n")
	b.WriteString("Target: idle RSS < 30 MiB.\n\n| kernel | series | VmRSS | VmHWM (peak) | target |\n|---|---:|---:|---:|---|\n")
	for _, row := range rows {
		b.WriteString(row + "\n")
	}
}
