package bench

import (
	"net/netip"
	"regexp"
	"testing"
	"time"

	"github.com/ipsec-exporter/ipsec_exporter/bench/baseline"
	"github.com/ipsec-exporter/ipsec_exporter/internal/verdict"
	"github.com/ipsec-exporter/ipsec_exporter/internal/wire"
	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// settle lets the previous set's detach finish in the background (kprobe
// unoptimizing, RCU-deferred freeing of trampolines and kretprobe
// instances) before the next set is warmed up and measured: in a first
// version "none", which followed the reference's detach, ran 3% slower
// than in round 1. Under icount with sleep=off an idle guest's clock jumps
// ahead, so this costs little wall time.
const settle = 2 * time.Second

// Sizes and rounds are small on purpose: under icount a window's count
// repeats from round to round (6.1 to the instruction, 6.12's TCP within a
// few percent, since it makes a different number of segments), so two
// rounds show the spread and every extra one costs minutes of emulation.
//
// A workload is traffic between the two nodes of a pair, sent the same way
// in every round for every variant. Per round, each variant (none first)
// is attached, warmed up, measured in an insnprof window, and detached.
type workload struct {
	name      string
	text      string
	normalise string // "byte" where the packet count is not fixed (see bench.Record)
	rounds    int
	variants  []string
	// setup builds the nodes, SAs and policies and returns the traffic.
	setup func(t *testing.T) *traffic
}

// traffic is one workload's measured unit of traffic between a and b.
type traffic struct {
	a, b    *scenario.Node
	payload int64              // bytes of payload per send
	send    func(t *testing.T) // the measured unit
	warm    func(t *testing.T) // a smaller unit, run before each measurement
}

// Variants: program sets attached for a round. none is nothing at all.
const (
	variantNone        = "none"
	variantExporter    = "exporter" // verdict programs in auto mode + wire TC program on both ends
	variantVerdict     = "verdict"  // verdict programs in auto mode only
	variantWire        = "wire"     // wire TC program on both ends only
	variantEmptyTC     = "tc_empty" // an empty TC program where wire goes: the floor of any TC program
	variantOursFentry  = "ours_fentry"
	variantOursKprobe  = "ours_kprobe"
	variantFloorFentry = "floor_fentry" // empty programs on exactly the hooks ours_fentry attached
	variantFloorKprobe = "floor_kprobe"
	variantReference   = "reference" // bench/baseline: NetObserv's approach
)

// variantText says what each variant is, for the report.
var variantText = map[string]string{
	variantNone:        "no programs",
	variantExporter:    "the exporter: verdict programs (auto mode) + wire TC program on both ends",
	variantVerdict:     "verdict programs only (auto mode)",
	variantWire:        "wire TC program only, on both ends",
	variantEmptyTC:     "an empty TC program where the wire program goes (its floor)",
	variantOursFentry:  "verdict programs, fentry mode",
	variantOursKprobe:  "verdict programs, kprobe mode",
	variantFloorFentry: "empty programs on the fentry-mode hooks",
	variantFloorKprobe: "empty programs on the kprobe-mode hooks",
	variantReference:   "reference: kprobe+kretprobe on xfrm_input/xfrm_output, hash maps (NetObserv's approach)",
}

var (
	espVariants  = []string{variantNone, variantExporter, variantVerdict, variantWire}
	fullVariants = []string{variantNone, variantExporter, variantVerdict, variantWire, variantOursFentry,
		variantOursKprobe, variantFloorFentry, variantFloorKprobe, variantReference, variantEmptyTC}
	plainVariants = []string{variantNone, variantExporter, variantVerdict, variantWire, variantEmptyTC}
)

// benchWorkloads are the workloads of TestLabBenchThroughput.
var benchWorkloads = []workload{
	{name: "tcp", text: "bulk TCP (4 MiB), transport mode, IPv4, AES-GCM", rounds: 2, variants: fullVariants, setup: func(t *testing.T) *traffic {
		p := scenario.NewPairNamed(t, "ta", "tb", 10)
		e := p.ESP(t, scenario.ESPOptions{})
		return bulk(t, p, e.BAddr, 4<<20)
	}},
	{name: "udp64", text: "10,000 UDP datagrams of 64 bytes one way, transport mode, IPv4", rounds: 2, variants: espVariants, setup: func(t *testing.T) *traffic {
		p := scenario.NewPairNamed(t, "ua", "ub", 11)
		e := p.ESP(t, scenario.ESPOptions{})
		return datagrams(t, p, []netip.Addr{e.BAddr}, 10000, 64)
	}},
	{name: "tunnel", text: "bulk TCP (4 MiB), tunnel mode between inner addresses, IPv4", rounds: 2, variants: espVariants, setup: func(t *testing.T) *traffic {
		p := scenario.NewPairNamed(t, "na", "nb", 12)
		e := p.ESP(t, scenario.ESPOptions{Tunnel: true})
		return bulk(t, p, e.BAddr, 4<<20)
	}},
	{name: "ipv6", text: "bulk TCP (4 MiB), transport mode, IPv6", rounds: 2, variants: espVariants, setup: func(t *testing.T) *traffic {
		p := scenario.NewPairNamed(t, "6a", "6b", 13)
		e := p.ESP(t, scenario.ESPOptions{IPv6: true})
		return bulk(t, p, e.BAddr, 4<<20)
	}},
	{name: "peers1000", text: "10,000 UDP datagrams of 64 bytes round-robin to 1,000 peers, one SA each", rounds: 2, variants: espVariants, setup: func(t *testing.T) *traffic {
		p := scenario.NewPairNamed(t, "ma", "mb", 14)
		return datagrams(t, p, manyPeers(t, p, 1000), 10000, 64)
	}},
	{name: "plain_tcp", text: "bulk TCP (4 MiB) between two namespaces, no IPsec at all", normalise: "byte", rounds: 2, variants: plainVariants, setup: func(t *testing.T) *traffic {
		p := scenario.NewPairNamed(t, "pa", "pb", 15)
		return bulk(t, p, p.B.IPv4, 4<<20)
	}},
}

func bulk(t *testing.T, p *scenario.Pair, dst netip.Addr, size int) *traffic {
	tr := &traffic{a: p.A, b: p.B, payload: int64(size),
		send: func(t *testing.T) { scenario.BulkTCP(t, p.A.Netns, p.B.Netns, dst, size) },
		warm: func(t *testing.T) { scenario.BulkTCP(t, p.A.Netns, p.B.Netns, dst, 512<<10) },
	}
	tr.warm(t) // caches and the TCP window
	return tr
}

func datagrams(t *testing.T, p *scenario.Pair, dsts []netip.Addr, count, size int) *traffic {
	tr := &traffic{a: p.A, b: p.B, payload: int64(count * size),
		send: func(t *testing.T) { sendUDP(t, p.A.Netns, p.B.Netns, dsts, count, size) },
		warm: func(t *testing.T) { sendUDP(t, p.A.Netns, p.B.Netns, dsts, max(count/10, len(dsts)), size) },
	}
	tr.warm(t)
	return tr
}

// TestLabBenchThroughput measures every workload of benchWorkloads with
// and without the program sets, in rounds, each run in an insnprof window
// (bench/qemu/insnprof.c, when make bench loads it). With the lab's
// instruction-counted clock a window's guest time is its instruction
// count; benchreport normalises each variant per packet against "none" of
// the same round. Sets are attached before and detached after each window,
// outside it.
func TestLabBenchThroughput(t *testing.T) {
	requireBench(t)
	for v, text := range variantText {
		Emit(Record{Kind: "variant", Kernel: scenario.Kernel(), Variant: v, Text: text})
	}
	for _, w := range benchWorkloads {
		t.Run(w.name, func(t *testing.T) {
			Emit(Record{Kind: "workload", Kernel: scenario.Kernel(), Workload: w.name, Text: w.text, Normalise: w.normalise})
			tr := w.setup(t)
			for round := 1; round <= w.rounds; round++ {
				for _, v := range w.variants {
					measure(t, w.name, v, round, tr)
				}
			}
		})
	}
}

func measure(t *testing.T, workload, variant string, round int, tr *traffic) {
	t.Helper()
	hooks, detach := attachVariant(t, variant, tr)
	time.Sleep(settle)
	tr.warm(t)
	before := wirePackets(t, tr.a)
	w := openWindow(t, workload, variant, round, hooks)
	start := time.Now()
	tr.send(t)
	elapsed := time.Since(start)
	n := wirePackets(t, tr.a) - before
	w.close(n, tr.payload, elapsed.Seconds())
	detach()
	t.Logf("round %d %-12s %d packets in %.3fs: %.0f ns per packet", round, variant, n, elapsed.Seconds(),
		float64(elapsed.Nanoseconds())/float64(max(n, 1)))
}

// attachVariant attaches a variant's programs and says which they are.
func attachVariant(t *testing.T, variant string, tr *traffic) (hookSet, func()) {
	t.Helper()
	switch variant {
	case variantNone:
		return nil, func() {}
	case variantExporter:
		vh, vclose := attachVerdict(t, verdict.ModeAuto)
		wclose := attachWire(t, tr)
		return vh, func() { wclose(); vclose() }
	case variantVerdict:
		return attachVerdict(t, verdict.ModeAuto)
	case variantOursFentry:
		return attachVerdict(t, verdict.ModeFentry)
	case variantOursKprobe:
		return attachVerdict(t, verdict.ModeKprobe)
	case variantWire:
		return nil, attachWire(t, tr)
	case variantEmptyTC:
		return attachEmptyTC(t, tr)
	case variantFloorFentry:
		return attachSet(t, func() (*baseline.Set, error) { return baseline.LoadFloor(verdictHooks(t, verdict.ModeFentry)) })
	case variantFloorKprobe:
		return attachSet(t, func() (*baseline.Set, error) { return baseline.LoadFloor(verdictHooks(t, verdict.ModeKprobe)) })
	case variantReference:
		return attachSet(t, baseline.LoadReference)
	}
	t.Fatalf("unknown variant %q", variant)
	return nil, nil
}

func attachVerdict(t *testing.T, mode string) (hookSet, func()) {
	t.Helper()
	v := loadVerdict(t, mode)
	return hooksOf(attachedHooks(v), func(h verdict.Hook) (string, string, string) { return h.Program, h.Kind, h.Target }),
		func() { v.Close() }
}

func loadVerdict(t *testing.T, mode string) *verdict.Verdicts {
	t.Helper()
	v, err := verdict.Load(verdict.Options{Mode: mode})
	if err != nil {
		t.Fatalf("loading the verdict programs (%s): %v", mode, err)
	}
	return v
}

// attachedHooks are the verdict hooks that attached.
func attachedHooks(v *verdict.Verdicts) []verdict.Hook {
	var out []verdict.Hook
	for _, h := range v.Hooks() {
		if h.Attached {
			out = append(out, h)
		}
	}
	return out
}

// floorOf is where the floor of a verdict program set goes: the same hooks.
func floorOf(hooks []verdict.Hook) []baseline.Hook {
	out := make([]baseline.Hook, len(hooks))
	for i, h := range hooks {
		out[i] = baseline.Hook{Kind: h.Kind, Target: h.Target}
	}
	return out
}

func attachWire(t *testing.T, tr *traffic) func() {
	t.Helper()
	var monitors []*wire.Monitor
	for _, n := range []*scenario.Node{tr.a, tr.b} {
		h := n.Handle()
		m, err := wire.Start(wire.Config{Netns: &h, Interfaces: regexp.MustCompile("^" + n.Link + "$")})
		if err != nil {
			t.Fatalf("starting the wire program in %s: %v", n.Name, err)
		}
		monitors = append(monitors, m)
	}
	return func() {
		for _, m := range monitors {
			m.Close()
		}
	}
}

func attachEmptyTC(t *testing.T, tr *traffic) (hookSet, func()) {
	t.Helper()
	var sets []*baseline.Set
	for _, n := range []*scenario.Node{tr.a, tr.b} {
		l, err := n.NL.LinkByName(n.Link)
		if err != nil {
			t.Fatal(err)
		}
		var s *baseline.Set
		if err := n.Do(func() (err error) { s, err = baseline.LoadEmptyTC(n.NL, l.Attrs().Index); return err }); err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		sets = append(sets, s)
	}
	return hookSet{"empty_tc": "tc"}, func() {
		for _, s := range sets {
			s.Close()
		}
	}
}

func attachSet(t *testing.T, load func() (*baseline.Set, error)) (hookSet, func()) {
	t.Helper()
	s, err := load()
	if err != nil {
		t.Fatal(err)
	}
	hs := hookSet{}
	for name, h := range s.Hooks() {
		hs[name] = h.Kind + " " + h.Target
	}
	return hs, func() { s.Close() }
}

// verdictHooks are the hooks the verdict programs attach to in a mode
// (loaded once per mode and process, then closed): the floors put empty
// programs on exactly these, whatever the verdict programs are today.
func verdictHooks(t *testing.T, mode string) []baseline.Hook {
	t.Helper()
	if h, ok := verdictHookCache[mode]; ok {
		return h
	}
	v := loadVerdict(t, mode)
	hooks := floorOf(attachedHooks(v))
	v.Close()
	verdictHookCache[mode] = hooks
	return hooks
}

var verdictHookCache = map[string][]baseline.Hook{}
