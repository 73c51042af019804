package main

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/ipsec-exporter/ipsec_exporter/bench"
)

// page is what the report template renders.
type page struct {
	Meta       []keyValue
	Kernels    []labKernel
	Icount     bool
	Plugin     string // "" when profiles were read, else why not
	Instrument table
	Targets    table
	Cost       table
	CostRatios table
	Programs   []namedTable
	Workloads  []namedTable
	Hooks      []namedTable
	Directions table
	Categories table
	Biases     table
	Wire       table
	Host       table
	HostLines  []string
	Plot       string
	KState     table
	Scale      table
	RSS        table
	Notes      string
}

type namedTable struct {
	Name, Text string
	Table      table
}

// Figures of the last run before issue 18 (BENCHMARKS.md at 0c5c223): the
// verdict programs in fentry mode, all in, per ESP packet. Issue 18's
// target is 25% of them.
var verdictAllIn0c5c223 = map[string]float64{"6.1": 4222, "6.12": 3762}

func (r *run) page() *page {
	ks := r.kernelList()
	p := &page{Meta: r.meta, Icount: strings.HasPrefix(r.metaValue("lab clock"), "instruction-counted"), Plugin: r.noPlugin}
	for _, k := range ks {
		p.Kernels = append(p.Kernels, r.kernels[k])
	}
	costs := r.workloadCosts()
	p.Instrument = r.instrumentChecks(ks)
	p.Targets = r.targets(ks, costs)
	p.Cost, p.CostRatios = r.accounted(ks)
	for _, v := range []string{"ours_fentry", "ours_kprobe", "reference"} {
		if t := r.programTable(ks, v); len(t.Rows) > 0 {
			p.Programs = append(p.Programs, namedTable{Name: v, Text: r.text("variant", v), Table: t})
		}
	}
	for _, w := range r.names("workload") {
		p.Workloads = append(p.Workloads, namedTable{Name: w, Text: r.text("workload", w), Table: r.workloadTable(ks, costs, w)})
	}
	for _, hv := range [][2]string{{"tcp", "verdict"}, {"tcp", "ours_kprobe"}, {"tcp", "reference"}, {"tcp", "wire"},
		{"plain_tcp", "wire"}, {"plain_tcp", "verdict"}, {"udp64", "verdict"}, {"peers1000", "verdict"}} {
		if t := hookTable(ks, costs, hv[0], hv[1]); len(t.Rows) > 0 {
			p.Hooks = append(p.Hooks, namedTable{Name: hv[1] + " in " + hv[0], Text: r.text("variant", hv[1]), Table: t})
		}
	}
	p.Directions = directionTable(ks, costs)
	p.Categories, p.Biases = categoryTables(ks, costs)
	p.Wire = wireTable(ks, costs)
	p.KState, p.RSS = r.kernelState(ks), r.rssTable(ks)
	p.Scale = r.scaleTable(ks)
	return p
}

// names lists the Workload (or Variant) of records of a kind, in the order
// first seen.
func (r *run) names(kind string) []string {
	var out []string
	seen := map[string]bool{}
	for _, rec := range r.records {
		if rec.Kind == kind && !seen[rec.Workload+rec.Variant] {
			seen[rec.Workload+rec.Variant] = true
			out = append(out, rec.Workload+rec.Variant)
		}
	}
	return out
}

func (r *run) text(kind, name string) string {
	for _, rec := range r.records {
		if rec.Kind == kind && rec.Workload+rec.Variant == name {
			return rec.Text
		}
	}
	return name
}

// instrumentChecks compares what insnprof charged to the windows of
// TestLabBenchInstrument with what they ran (bench/lab_instrument_test.go).
func (r *run) instrumentChecks(ks []string) table {
	t := newTable(2, append([]string{"check", "want"}, perKernel(ks, "got")...)...)
	if r.noPlugin != "" {
		return t
	}
	windows := map[string]map[string]*windowCost{}
	for _, k := range ks {
		windows[k] = map[string]*windowCost{}
		for _, w := range r.filter("window", k) {
			if w.Workload == "instrument" && r.profiles[k] != nil {
				windows[k][w.Variant] = r.profiles[k][w.Mark]
			}
		}
	}
	type check struct {
		what string
		want uint64
		got  func(map[string]*windowCost) (uint64, bool)
	}
	prog := func(variant string, f func(*programCost) uint64) func(map[string]*windowCost) (uint64, bool) {
		return func(ws map[string]*windowCost) (uint64, bool) {
			w := ws[variant]
			if w == nil || w.programs[variant] == nil {
				return 0, false
			}
			return f(w.programs[variant]), true
		}
	}
	short, long := fmt.Sprintf("straight_%d", bench.InstrumentShort), fmt.Sprintf("straight_%d", bench.InstrumentLong)
	checks := []check{
		{fmt.Sprintf("JIT image of %s - of %s, %d runs each", long, short, bench.InstrumentRuns),
			uint64((bench.InstrumentLong - bench.InstrumentShort) * bench.InstrumentRuns),
			func(ws map[string]*windowCost) (uint64, bool) {
				a, ok1 := prog(long, func(p *programCost) uint64 { return p.body })(ws)
				b, ok2 := prog(short, func(p *programCost) uint64 { return p.body })(ws)
				return a - b, ok1 && ok2 && a >= b
			}},
		{"entries into " + short + " (through an indirect call)", bench.InstrumentRuns,
			prog(short, func(p *programCost) uint64 { return p.runs })},
		{"entries into " + long, bench.InstrumentRuns, prog(long, func(p *programCost) uint64 { return p.runs })},
		// Under icount QEMU re-executes a rep instruction once per
		// iteration and once more to find the count at zero (its
		// shortcut past that check is off): n+1 instructions on the
		// guest clock, and n+1 here.
		{fmt.Sprintf("executions of one rep movsb of %d bytes (n+1: the last finds the count zero)", bench.InstrumentReps),
			bench.InstrumentReps + 1, func(ws map[string]*windowCost) (uint64, bool) {
				if w := ws["rep_movsb"]; w != nil {
					return w.userRep, true
				}
				return 0, false
			}},
		{"lock-prefixed instructions (lock xadd loop; the Go runtime may add a few)", bench.InstrumentLocks,
			func(ws map[string]*windowCost) (uint64, bool) {
				if w := ws["lock_xadd"]; w != nil {
					return w.userLock, true
				}
				return 0, false
			}},
	}
	for _, c := range checks {
		row := []string{c.what, thousands(fmt.Sprint(c.want))}
		for _, k := range ks {
			got, ok := c.got(windows[k])
			switch {
			case !ok:
				row = append(row, "not measured")
			case got == c.want || (strings.HasPrefix(c.what, "lock") && got >= c.want && got < c.want+64):
				row = append(row, thousands(fmt.Sprint(got))+" (ok)")
			default:
				row = append(row, thousands(fmt.Sprint(got))+" (**wrong**)")
			}
		}
		t.add(row...)
	}
	return t
}

// targets judges issue 18's targets on each kernel, from this run.
func (r *run) targets(ks []string, c workloadCosts) table {
	t := newTable(2, append(append([]string{"target", "goal"}, ks...), "figure from")...)
	t.Right[len(t.Right)-1] = false
	row := func(name, goal, source string, f func(k string) verdict) {
		cells := []string{name, goal}
		for _, k := range ks {
			v := f(k)
			cells = append(cells, v.Value+" ("+v.State+")")
		}
		t.add(append(cells, source)...)
	}
	// Judged as printed (two decimals): the rare runs that are not per
	// packet (a drop, a route lookup) do not make 3.00 more than 3.
	// justified is the bound the issue allows with a stated reason, 0 for
	// none.
	runs := func(variant string, limit, justified float64) func(string) verdict {
		return func(k string) verdict {
			_, rr, n := r.accountedPerPacket(k, variant)
			shown := math.Round(rr*100) / 100
			v := judge(num(rr, 2), shown <= limit, n > 0)
			if v.State == "**missed**" && shown <= justified {
				v.State = "within the justified " + num(justified, 0) + ": bpf/README.md, Design"
			}
			return v
		}
	}
	row("verdict program runs per good ESP packet, fentry mode", "<= 2 (one per direction; <= 4 if justified)",
		"TestLabBenchBPFCost, ours_fentry", runs("ours_fentry", 2, 4))
	row("verdict program runs per good ESP packet, kprobe mode", "<= 3", "TestLabBenchBPFCost, ours_kprobe",
		runs("ours_kprobe", 3, 0))
	row("verdict program runs per packet of non-IPsec traffic, except at drops", "0 (drops only)",
		"insnprof, plain_tcp, verdict: runs outside kfree_skb (runs at kfree_skb in brackets)",
		func(k string) verdict {
			vc := c.get(k, "plain_tcp", "verdict")
			if vc == nil {
				return judge("–", false, false)
			}
			v := vc.pluginPerPacket(func(w *windowCost) float64 { return float64(w.programRuns() - w.dropRuns()) })
			if math.IsNaN(v) {
				return judge("–", false, false)
			}
			drops := vc.pluginPerPacket(func(w *windowCost) float64 { return float64(w.dropRuns()) })
			return judge(num(v, 3)+" (+"+num(drops, 3)+")", v == 0, true)
		})
	// All in is what insnprof charged the hooks (trampolines, kprobe
	// traps, dispatch, programs, helpers): the per-hook measure. The
	// window's extra instructions per packet (in brackets) also hold the
	// path's own round-to-round variation, which in bulk TCP exceeds the
	// programs' cost.
	row("verdict programs all in, per ESP packet", "<= 25% of 0c5c223 (6.1 <= 1,056; 6.12 <= 941)",
		"insnprof hooks/pkt, tcp, verdict (window extra/pkt in brackets)", func(k string) verdict {
			vc := c.get(k, "tcp", "verdict")
			base, ok := verdictAllIn0c5c223[k]
			if vc == nil || !ok {
				return judge("–", false, false)
			}
			v := vc.hooksPerPacket()
			if math.IsNaN(v) {
				return judge("–", false, false)
			}
			return judge(fmt.Sprintf("%s = %.0f%% (%s)", num(v, 0), 100*v/base, num(vc.extra(), 0)), v <= base/4, true)
		})
	row("verdict program bodies, per ESP packet (kernel accounting)", "<= 600", "TestLabBenchBPFCost, ours_fentry",
		func(k string) verdict {
			ns, _, n := r.accountedPerPacket(k, "ours_fentry")
			return judge(num(ns, 0), ns <= 600, n > 0)
		})
	// The kernel's run time accounting charges each run the clock reads
	// around it too: floor_fentry (empty programs on the same hooks, same
	// run) measures that part, which is not the programs' body.
	row("verdict program bodies net of the empty programs' accounting, per ESP packet", "<= 600",
		"TestLabBenchBPFCost, ours_fentry - floor_fentry", func(k string) verdict {
			ns, _, n := r.accountedPerPacket(k, "ours_fentry")
			floor, _, nf := r.accountedPerPacket(k, "floor_fentry")
			return judge(num(ns-floor, 0)+" ("+num(ns, 0)+" - "+num(floor, 0)+")", ns-floor <= 600, n > 0 && nf > 0)
		})
	for _, w := range [][2]string{{"tcp", "ESP"}, {"plain_tcp", "plaintext"}} {
		row("wire program all in, per "+w[1]+" packet", "<= 300",
			"insnprof hooks/pkt, "+w[0]+", wire (window extra/pkt in brackets)",
			func(k string) verdict {
				vc := c.get(k, w[0], "wire")
				if vc == nil {
					return judge("–", false, false)
				}
				v := vc.hooksPerPacket()
				if math.IsNaN(v) {
					return judge("–", false, false)
				}
				return judge(num(v, 0)+" ("+num(vc.extra(), 0)+")", v <= 300, true)
			})
	}
	row("wire on a plaintext packet to a non-peer / an empty TC program", "close to 1",
		"insnprof hooks/pkt, plain_tcp, wire and tc_empty",
		func(k string) verdict {
			w, e := c.get(k, "plain_tcp", "wire"), c.get(k, "plain_tcp", "tc_empty")
			if w == nil || e == nil {
				return judge("–", false, false)
			}
			ratio := w.hooksPerPacket() / e.hooksPerPacket()
			return verdict{Value: num(ratio, 2), State: "reported"}
		})
	for _, w := range []struct {
		workload, what string
		limit          float64
	}{{"tcp", "ESP, bulk TCP", 0.02}, {"udp64", "ESP, 64-byte UDP", 0.02}, {"peers1000", "ESP, 64-byte UDP to 1,000 peers", 0.02},
		{"plain_tcp", "plain TCP, no IPsec", 0.01}} {
		limit := w.limit
		// Judged on what insnprof charged the hooks (hookLoss); the
		// window's loss, which also holds the path's own variation, in
		// brackets.
		row("whole exporter (auto mode + wire): throughput loss, "+w.what, "<= "+pct(limit),
			"insnprof hooks/pkt over none's insns/pkt, "+w.workload+", exporter, same round (window's loss in brackets)",
			func(k string) verdict {
				vc := c.get(k, w.workload, "exporter")
				if vc == nil {
					return judge("–", false, false)
				}
				v := vc.hookLoss()
				if math.IsNaN(v) {
					return judge(pct(v), false, false)
				}
				return judge(pct(v)+" ("+pct(vc.loss())+")", v <= limit, true)
			})
	}
	row("50k-SA scrape / bare XFRM_MSG_GETSA dump, same run", "<= 1.5", "kstate_scale records (books' bench)",
		func(k string) verdict {
			scrape, dump, _ := r.scale(k)
			return judge(num(scrape/dump, 2), scrape/dump <= 1.5, !math.IsNaN(scrape/dump))
		})
	row("exporter RSS with 50k SAs", "<= 80 MiB", "kstate_scale records (books' bench)", func(k string) verdict {
		_, _, rss := r.scale(k)
		return judge(num(rss/(1<<20), 1)+" MiB", rss <= 80<<20, !math.IsNaN(rss))
	})
	return t
}

// accountedPerPacket is the median over rounds of the kernel's BPF run
// time accounting per ESP packet, and the runs per packet
// (TestLabBenchBPFCost).
func (r *run) accountedPerPacket(kernel, variant string) (ns, runs float64, n int) {
	var v, rr []float64
	for _, rec := range r.filter("bpf_cost", kernel) {
		if rec.Variant == variant && rec.Packets > 0 {
			v = append(v, float64(rec.RunNs)/float64(rec.Packets))
			rr = append(rr, float64(rec.Runs)/float64(rec.Packets))
		}
	}
	return median(v), median(rr), len(v)
}

var accountedVariants = []string{"floor_fentry", "ours_fentry", "floor_kprobe", "ours_kprobe", "reference"}

func (r *run) accounted(ks []string) (table, table) {
	t := newTable(1, append([]string{"variant"}, perKernel(ks, "insns/pkt", "runs/pkt")...)...)
	for _, v := range accountedVariants {
		row := []string{r.text("variant", v)}
		any := false
		for _, k := range ks {
			ns, runs, n := r.accountedPerPacket(k, v)
			any = any || n > 0
			row = append(row, num(ns, 0), num(runs, 1))
		}
		if any {
			t.add(row...)
		}
	}
	ratios := newTable(1, append([]string{"ratio"}, ks...)...)
	for _, q := range [][2]string{{"ours_fentry", "reference"}, {"ours_kprobe", "reference"},
		{"ours_fentry", "floor_fentry"}, {"ours_kprobe", "floor_kprobe"}} {
		row := []string{q[0] + " / " + q[1]}
		for _, k := range ks {
			a, _, _ := r.accountedPerPacket(k, q[0])
			b, _, _ := r.accountedPerPacket(k, q[1])
			row = append(row, num(a/b, 2))
		}
		ratios.add(row...)
	}
	return t, ratios
}

// programTable breaks a variant's accounted cost down by program (all
// rounds summed).
func (r *run) programTable(ks []string, variant string) table {
	type prog struct {
		runs, ns, packets float64
		insns             int
		calls             string
	}
	progs := map[string]map[string]*prog{}
	var names []string
	seen := map[string]bool{}
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
				if !seen[rec.Program] {
					seen[rec.Program] = true
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
	t := newTable(1, append(append([]string{"program"}, perKernel(ks, "runs/pkt", "insns/pkt")...), "xlated insns", "calls")...)
	t.Right[len(t.Right)-1] = false
	last := ks[len(ks)-1]
	sort.Slice(names, func(i, j int) bool {
		pi, pj := progs[last][names[i]], progs[last][names[j]]
		if pi == nil || pj == nil {
			return names[i] < names[j]
		}
		return pi.ns > pj.ns
	})
	for _, name := range names {
		row := []string{name}
		insns, calls := 0, ""
		for _, k := range ks {
			p := progs[k][name]
			if p == nil || p.packets == 0 {
				row = append(row, "–", "–")
				continue
			}
			row = append(row, num(p.runs/p.packets, 2), num(p.ns/p.packets, 0))
			if p.insns > 0 {
				insns, calls = p.insns, p.calls
			}
		}
		t.add(append(row, fmt.Sprint(insns), calls)...)
	}
	return t
}

// workloadTable is one workload's variants: instructions per packet, the
// extra over none in the same round, the throughput loss, and what
// insnprof charged to the hooks and how often programs ran.
func (r *run) workloadTable(ks []string, c workloadCosts, w string) table {
	t := newTable(1, append([]string{"variant"}, perKernel(ks, "insns/pkt", "extra/pkt", "loss", "hooks/pkt (insnprof)", "runs/pkt")...)...)
	var variants []string
	for _, k := range ks {
		for v := range c[k][w] {
			if !contains(variants, v) {
				variants = append(variants, v)
			}
		}
	}
	order := r.names("variant")
	sort.SliceStable(variants, func(i, j int) bool { return index(order, variants[i]) < index(order, variants[j]) })
	for _, v := range variants {
		row := []string{v}
		for _, k := range ks {
			vc := c.get(k, w, v)
			if vc == nil {
				row = append(row, "–", "–", "–", "–", "–")
				continue
			}
			hooks := vc.pluginPerPacket(func(x *windowCost) float64 { n, _ := x.hooksAllIn(); return float64(n) })
			runs := vc.pluginPerPacket(func(x *windowCost) float64 { return float64(x.programRuns()) })
			extra, loss := num(vc.extra(), 0), pct(vc.loss())
			if v == "none" {
				extra, loss = "", ""
			}
			row = append(row, num(vc.perPacket(), 0), extra, loss, num(hooks, 0), num(runs, 2))
		}
		t.add(row...)
	}
	return t
}

func contains(s []string, v string) bool { return index(s, v) < len(s) }

func index(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return len(s)
}

// hookTable is insnprof's per-hook breakdown of a variant in a workload.
func hookTable(ks []string, c workloadCosts, w, v string) table {
	t := newTable(2, append([]string{"hook", "side"}, perKernel(ks, "entries/pkt", "all in/pkt", "programs/pkt", "runs/pkt")...)...)
	rows := map[string]map[string]hookRow{}
	var names []string
	for _, k := range ks {
		vc := c.get(k, w, v)
		if vc == nil {
			continue
		}
		rows[k] = map[string]hookRow{}
		for _, h := range hookRows(vc) {
			rows[k][h.name] = h
			if !contains(names, h.name) {
				names = append(names, h.name)
			}
		}
	}
	for _, name := range names {
		row := []string{name, direction(name)}
		for _, k := range ks {
			h, ok := rows[k][name]
			if !ok {
				row = append(row, "–", "–", "–", "–")
				continue
			}
			row = append(row, num(h.entries, 2), num(h.insns, 0), num(h.programs, 0), num(h.programN, 2))
		}
		t.add(row...)
	}
	return t
}

// directionTable sums the verdict programs' hooks (auto mode, bulk TCP) by
// the side of IPsec they are on.
func directionTable(ks []string, c workloadCosts) table {
	t := newTable(1, append([]string{"side"}, perKernel(ks, "all in/pkt", "programs/pkt")...)...)
	sums := map[string]map[string][2]float64{}
	for _, k := range ks {
		vc := c.get(k, "tcp", "verdict")
		if vc == nil {
			continue
		}
		sums[k] = map[string][2]float64{}
		for _, h := range hookRows(vc) {
			s := sums[k][direction(h.name)]
			sums[k][direction(h.name)] = [2]float64{s[0] + h.insns, s[1] + h.programs}
		}
	}
	if len(sums) == 0 {
		return t
	}
	for _, side := range []string{"encrypt", "decrypt", "both"} {
		row := []string{side}
		for _, k := range ks {
			s := sums[k][side]
			row = append(row, num(s[0], 0), num(s[1], 0))
		}
		t.add(row...)
	}
	return t
}

// categoryTables: the kernel's instructions per packet by category of
// code (bulk TCP), and the two places an instruction count is furthest
// from hardware cycles: rep iterations and lock-prefixed instructions.
func categoryTables(ks []string, c workloadCosts) (table, table) {
	variants := []string{"none", "verdict", "ours_kprobe", "reference", "wire"}
	cats := newTable(1, append([]string{"code"}, func() []string {
		var h []string
		for _, k := range ks {
			for _, v := range variants {
				h = append(h, k+" "+v)
			}
		}
		return h
	}()...)...)
	per := map[string]map[string]map[string]float64{}
	for _, k := range ks {
		per[k] = map[string]map[string]float64{}
		for _, v := range variants {
			if vc := c.get(k, "tcp", v); vc != nil {
				per[k][v] = categoryPerPacket(vc)
			}
		}
	}
	for _, cat := range categoryOrder {
		name := cat
		switch cat {
		case "":
			name = "the rest of the kernel"
		case "user":
			name = "user space"
		}
		row := []string{name}
		any := false
		for _, k := range ks {
			for _, v := range variants {
				x, ok := per[k][v][cat]
				any = any || (ok && x > 0)
				if !ok {
					row = append(row, "–")
				} else {
					row = append(row, num(x, 0))
				}
			}
		}
		if any {
			cats.add(row...)
		}
	}
	biases := newTable(2, append([]string{"workload", "variant"}, perKernel(ks, "insns/pkt", "rep iterations/pkt", "lock insns/pkt", "in hooks: rep/pkt", "lock/pkt")...)...)
	for _, w := range []string{"tcp", "udp64", "plain_tcp"} {
		for _, v := range []string{"none", "verdict", "wire"} {
			row := []string{w, v}
			any := false
			for _, k := range ks {
				vc := c.get(k, w, v)
				if vc == nil {
					row = append(row, "–", "–", "–", "–", "–")
					continue
				}
				f := func(g func(*windowCost) uint64) string {
					x := vc.pluginPerPacket(func(w *windowCost) float64 { return float64(g(w)) })
					any = any || !math.IsNaN(x)
					return num(x, 0)
				}
				row = append(row, f(func(w *windowCost) uint64 { return w.insns }), f(func(w *windowCost) uint64 { return w.rep }),
					f(func(w *windowCost) uint64 { return w.lock }), f(func(w *windowCost) uint64 { return w.hookRep }),
					f(func(w *windowCost) uint64 { return w.hookLock }))
			}
			if any {
				biases.add(row...)
			}
		}
	}
	return cats, biases
}

// wireTable is the wire program's cost per packet against the empty TC
// program, on ESP and on plaintext traffic.
func wireTable(ks []string, c workloadCosts) table {
	t := newTable(1, append([]string{"workload"}, perKernel(ks, "wire extra/pkt", "tc_empty extra/pkt", "wire / empty", "wire hook (insnprof)/pkt")...)...)
	for _, w := range []string{"tcp", "udp64", "tunnel", "ipv6", "peers1000", "plain_tcp"} {
		row := []string{w}
		any := false
		for _, k := range ks {
			wv, ev := c.get(k, w, "wire"), c.get(k, w, "tc_empty")
			if wv == nil {
				row = append(row, "–", "–", "–", "–")
				continue
			}
			any = true
			empty := math.NaN()
			if ev != nil {
				empty = ev.extra()
			}
			hook := wv.pluginPerPacket(func(x *windowCost) float64 {
				if h := x.hooks["tc"]; h != nil {
					return float64(h.insns)
				}
				return 0
			})
			row = append(row, num(wv.extra(), 0), num(empty, 0), num(wv.extra()/empty, 2), num(hook, 0))
		}
		if any {
			t.add(row...)
		}
	}
	return t
}
