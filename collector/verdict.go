package collector

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"sync"

	"github.com/alecthomas/kingpin/v2"
	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipsec-exporter/ipsec_exporter/internal/bpfmap"
	"github.com/ipsec-exporter/ipsec_exporter/internal/peers"
	"github.com/ipsec-exporter/ipsec_exporter/internal/verdict"
)

// The verdict collector: one verdict per packet the kernel tried to encrypt
// or decrypt, ok or failed with a reason, per direction and peer, counted by
// the BPF programs of internal/verdict (bpf/xfrm_verdict.bpf.c).

var (
	bpfHookMode = kingpin.Flag("bpf.hook-mode",
		"How the verdict programs hook the kernel: auto (fentry where it loads and attaches, else kprobes), fentry or kprobe.").
		Default(verdict.ModeAuto).Enum(verdict.ModeAuto, verdict.ModeFentry, verdict.ModeKprobe)
	bpfStrict = kingpin.Flag("bpf.strict",
		"Fail at start-up when a verdict BPF program cannot be loaded or attached, instead of serving what works.").
		Default("false").Bool()
	bpfVerdictMapSize = kingpin.Flag("bpf.verdict-map-size",
		"Maximum number of {direction, peer, result} counters in the verdict map; packets of new keys beyond it are counted in ipsec_bpf_verdict_map_overflow_total.").
		Default(fmt.Sprint(verdict.DefaultMapSize)).Uint32()
)

var (
	verdictLabels      = []string{"direction", "peer", "result"}
	verdictNamedLabels = []string{"direction", "peer", "result", "peer_name"}

	bpfProgramsAttachedDesc = prometheus.NewDesc("ipsec_bpf_verdict_programs_attached",
		"Number of verdict BPF programs attached; 0 means no verdicts are counted (see ipsec_bpf_verdict_load_error_info).",
		nil, nil)
	bpfHookModeDesc = prometheus.NewDesc("ipsec_bpf_verdict_hook_mode",
		"The hook mode of the verdict programs (fentry, kprobe, or none when they could not be loaded); always 1.",
		[]string{"mode"}, nil)
	bpfLoadErrorDesc = prometheus.NewDesc("ipsec_bpf_verdict_load_error_info",
		"Present (1) when the verdict programs could not be loaded, with the reason class; the log has the details.",
		[]string{"reason"}, nil)
	bpfProgramAttachedDesc = prometheus.NewDesc("ipsec_bpf_verdict_program_attached",
		"Whether a verdict BPF program is attached (1) or not (0: the kernel lacks its hook; see the log).",
		[]string{"program", "hook"}, nil)
	bpfMapEntriesDesc = prometheus.NewDesc("ipsec_bpf_verdict_map_entries",
		"Counter keys in the verdict map.", nil, nil)
	bpfMapMaxEntriesDesc = prometheus.NewDesc("ipsec_bpf_verdict_map_max_entries",
		"Capacity of the verdict map (--bpf.verdict-map-size).", nil, nil)
	bpfKnownPeersDesc = prometheus.NewDesc("ipsec_bpf_verdict_known_peers",
		"Addresses in the known-peer set: failures whose peer comes from the packet (no_state, header_error) are counted under peers of this set, all others under peer=\"unknown\".",
		nil, nil)
	bpfKnownPeersOverflowDesc = prometheus.NewDesc("ipsec_bpf_verdict_known_peers_overflow_total",
		"Addresses left out of the known-peer set because it was full (16384); their packet-derived failures count as unknown.",
		nil, nil)
	bpfMapOverflowDesc = prometheus.NewDesc("ipsec_bpf_verdict_map_overflow_total",
		"Verdicts not counted because their key was new and the verdict map was full.", nil, nil)
	bpfAccountingErrorsDesc = prometheus.NewDesc("ipsec_bpf_verdict_accounting_errors_total",
		"Inconsistencies the verdict programs detected in their own bookkeeping, by kind (none but the overflow today); each may cost a verdict.",
		[]string{"kind"}, nil)
	bpfProgramMissedDesc = prometheus.NewDesc("ipsec_bpf_verdict_program_missed_total",
		"Runs of a verdict program the kernel skipped (BPF recursion, or a kprobe hit inside another kprobe handler); each may cost a verdict.",
		[]string{"program"}, nil)
	bpfProgramRunSecondsDesc = prometheus.NewDesc("ipsec_bpf_verdict_program_run_seconds_total",
		"Time spent running a verdict program; only while kernel.bpf_stats_enabled=1.",
		[]string{"program"}, nil)
	bpfProgramRunsDesc = prometheus.NewDesc("ipsec_bpf_verdict_program_runs_total",
		"Runs of a verdict program; only while kernel.bpf_stats_enabled=1.",
		[]string{"program"}, nil)
)

func init() {
	// The default also before parsing (kingpin sets it at Parse): tests
	// that run CheckFlags without parsing see a valid value.
	*bpfVerdictMapSize = verdict.DefaultMapSize
	RegisterFlagCheck("bpf.verdict-map-size", func() error {
		if n := *bpfVerdictMapSize; n < verdict.MinMapSize || n > verdict.MaxMapSize {
			return fmt.Errorf("must be between %d and %d counter keys, got %d", verdict.MinMapSize, verdict.MaxMapSize, n)
		}
		return nil
	})
	registerCollector("verdict", true, func(logger *slog.Logger) (Collector, error) {
		// The node's known peers and the peer names come from the shared
		// peer tracker (collector/peers.go), the one reader of the node's
		// SAs and policies for this purpose and of the peer-names file.
		tp, err := knownPeers.acquire(logger)
		if err != nil {
			return nil, err
		}
		release := func() { _ = knownPeers.release() }
		v, err := verdict.Load(verdict.Options{
			Mode: *bpfHookMode, MapSize: *bpfVerdictMapSize, Strict: *bpfStrict, Pins: pinDir("verdict"), Logger: logger,
		})
		if err != nil {
			if *bpfStrict {
				release()
				return nil, fmt.Errorf("loading verdict BPF programs (--bpf.strict): %w", err)
			}
			c := newVerdictCollector(logger, nil, err, tp)
			c.release = release
			return c, nil
		}
		c := newVerdictCollector(logger, v, nil, tp)
		// The first call is synchronous: the set is in the programs' map
		// before the factory returns; later ones come once per change.
		cancel := tp.Subscribe(func(s peers.Set) { c.SetTrackedPeers(s.All()) })
		c.release = func() { cancel(); release() }
		return c, nil
	})
}

// verdictSource is what the collector reads: *verdict.Verdicts, or in tests
// real maps without programs.
type verdictSource interface {
	Read() ([]verdict.Entry, error)
	Errors() (map[string]uint64, error)
	MaxEntries() uint32
	Mode() string
	Hooks() []verdict.Hook
	Missed() map[string]uint64
	ProgramStats() map[string]*ebpf.ProgramStats
	SetKnownPeers([]netip.Addr) error
	KnownPeers() (size int, leftOut uint64)
	Close() error
}

// peerNamer gives the names of the peer-names file (*peers.Tracker).
type peerNamer interface {
	Names() map[netip.Addr]string
}

type verdictCollector struct {
	logger      *slog.Logger
	src         verdictSource // nil when the programs could not be loaded
	loadErr     string        // reason class when src is nil
	peers       peerNamer     // the shared tracker; nil in tests
	release     func()        // of the shared peer tracker, when held
	statsSysctl string

	knownMu sync.Mutex
	tracked []netip.Addr        // the peers the tracker last gave (SetTrackedPeers)
	seen    map[netip.Addr]bool // SA-derived and named peers of the last scrape
	known   map[netip.Addr]bool // the set last installed
}

// unknownPeer is the peer label of failures whose peer came from the packet
// and is not a known peer (spoofed sources, scans): one aggregate series.
const unknownPeer = "unknown"

// packetPeerResults are the results whose peer the programs take from the
// packet rather than from an SA.
var packetPeerResults = []string{"no_state", "header_error"}

// SetTrackedPeers gives the collector the node's known IPsec peers (the
// addresses of its SAs and policies, and the configured ones) from the
// tracker; they are installed at once, so that a new peer's failures are
// counted under its own address from its first packet on.
func (c *verdictCollector) SetTrackedPeers(peers []netip.Addr) {
	c.knownMu.Lock()
	defer c.knownMu.Unlock()
	c.tracked = append([]netip.Addr(nil), peers...)
	if err := c.installKnownLocked(); err != nil {
		c.logger.Warn("known-peer set not updated: failures from new peers without an SA count as unknown", "err", err)
	}
}

// updateKnownPeers adds, at a scrape, the peers of the verdicts that came
// from an SA (an SA exists or existed for them) and the peer-names file's
// addresses to the known-peer set, installing it when it changed.
func (c *verdictCollector) updateKnownPeers(entries []verdict.Entry, names map[netip.Addr]string) error {
	c.knownMu.Lock()
	defer c.knownMu.Unlock()
	seen := map[netip.Addr]bool{}
	for _, e := range entries {
		if e.Peer.IsValid() && !slices.Contains(packetPeerResults, e.Result) {
			seen[e.Peer] = true
		}
	}
	for a := range names {
		seen[a.Unmap()] = true
	}
	c.seen = seen
	return c.installKnownLocked()
}

// installKnownLocked installs the union of what the tracker gave and what
// the scrapes saw, when it differs from the set installed last.
func (c *verdictCollector) installKnownLocked() error {
	if c.src == nil {
		return nil
	}
	want := maps.Clone(c.seen)
	if want == nil {
		want = map[netip.Addr]bool{}
	}
	for _, a := range c.tracked {
		want[a.Unmap()] = true
	}
	if c.known != nil && maps.Equal(want, c.known) {
		return nil
	}
	if err := c.src.SetKnownPeers(slices.Collect(maps.Keys(want))); err != nil {
		return err
	}
	c.known = want
	return nil
}

// newVerdictCollector builds the collector around loaded programs, or, when
// loading failed, a degraded one that says why in one log line and in
// ipsec_bpf_verdict_load_error_info; the exporter's other collectors keep
// working either way.
func newVerdictCollector(logger *slog.Logger, src verdictSource, loadErr error, peers peerNamer) *verdictCollector {
	c := &verdictCollector{logger: logger, src: src, peers: peers, statsSysctl: bpfmap.StatsSysctl}
	if src == nil {
		c.loadErr = loadErrorReason(loadErr)
		logger.Warn("verdict BPF programs not loaded: no ipsec_xfrm_* verdict metrics (everything else keeps working)",
			"reason", c.loadErr, "err", loadErr)
	}
	return c
}

// loadErrorReason turns a load error into a short, bounded label value.
func loadErrorReason(err error) string {
	switch {
	case err == nil:
		return "unknown"
	case errors.Is(err, fs.ErrPermission):
		return "permission_denied"
	case errors.Is(err, ebpf.ErrNotSupported):
		return "not_supported"
	case errors.Is(err, verdict.ErrRequiredHook):
		return "hook_unavailable"
	}
	return "load_failed"
}

func (c *verdictCollector) Update(ch chan<- prometheus.Metric) error {
	if c.src == nil {
		ch <- newConstMetric(bpfProgramsAttachedDesc, prometheus.GaugeValue, 0)
		ch <- newConstMetric(bpfHookModeDesc, prometheus.GaugeValue, 1, "none")
		ch <- newConstMetric(bpfLoadErrorDesc, prometheus.GaugeValue, 1, c.loadErr)
		return nil
	}
	entries, err := c.src.Read()
	if err != nil {
		return fmt.Errorf("reading verdicts: %w", err)
	}
	var names map[netip.Addr]string
	if c.peers != nil {
		names = c.peers.Names()
	}
	if err := c.updateKnownPeers(entries, names); err != nil {
		c.logger.Warn("known-peer set not updated: failures from new peers without an SA count as unknown", "err", err)
	}
	emitVerdicts(ch, entries, names)
	ch <- newConstMetric(bpfMapEntriesDesc, prometheus.GaugeValue, float64(len(entries)))
	ch <- newConstMetric(bpfMapMaxEntriesDesc, prometheus.GaugeValue, float64(c.src.MaxEntries()))
	size, leftOut := c.src.KnownPeers()
	ch <- newConstMetric(bpfKnownPeersDesc, prometheus.GaugeValue, float64(size))
	ch <- newConstMetric(bpfKnownPeersOverflowDesc, prometheus.CounterValue, float64(leftOut))
	if err := c.emitAccountingErrors(ch); err != nil {
		return err
	}
	c.updateMeta(ch)
	return nil
}

// emitVerdicts sends each entry's packets and bytes, with its peer's name
// when names is not nil (the peer_name label).
func emitVerdicts(ch chan<- prometheus.Metric, entries []verdict.Entry, names map[netip.Addr]string) {
	peers := make([]string, len(entries))
	for i, e := range entries {
		peers[i] = unknownPeer
		if e.Peer.IsValid() {
			peers[i] = e.Peer.String()
		}
	}
	// Emit in the registry's order (label values in label-name order:
	// direction, peer, result): its sort then finds the series sorted,
	// one pass instead of n log n label comparisons.
	order := make([]int, len(entries))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool {
		x, y := order[a], order[b]
		if entries[x].Direction != entries[y].Direction {
			return entries[x].Direction < entries[y].Direction
		}
		if peers[x] != peers[y] {
			return peers[x] < peers[y]
		}
		return entries[x].Result < entries[y].Result
	})
	packets, bytes := bpfVerdictDescs(names != nil)
	for _, i := range order {
		e := entries[i]
		labels := []string{e.Direction, peers[i], e.Result}
		if names != nil {
			labels = append(labels, names[e.Peer])
		}
		ch <- newConstMetric(packets, prometheus.CounterValue, float64(e.Packets), labels...)
		ch <- newConstMetric(bytes, prometheus.CounterValue, float64(e.Bytes), labels...)
	}
}

// emitAccountingErrors sends the verdicts the programs could not count, by
// kind; map_full has a family of its own (the map's overflow).
func (c *verdictCollector) emitAccountingErrors(ch chan<- prometheus.Metric) error {
	errs, err := c.src.Errors()
	if err != nil {
		return fmt.Errorf("reading verdict accounting errors: %w", err)
	}
	kinds := make([]string, 0, len(errs))
	for k := range errs {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		if k == "map_full" {
			ch <- newConstMetric(bpfMapOverflowDesc, prometheus.CounterValue, float64(errs[k]))
			continue
		}
		ch <- newConstMetric(bpfAccountingErrorsDesc, prometheus.CounterValue, float64(errs[k]), k)
	}
	return nil
}

func bpfVerdictDescs(named bool) (packets, bytes *prometheus.Desc) {
	if named {
		return verdictNamedPacketsDesc, verdictNamedBytesDesc
	}
	return verdictPacketsDesc, verdictBytesDesc
}

const (
	verdictPacketsHelp = "Packets the kernel tried to encrypt or decrypt, by direction, peer (the SA's remote address; for failures without an SA the packet's source on decrypt, its destination on encrypt) and result (ok or the failure reason; see bpf/README.md)."
	verdictBytesHelp   = "Bytes of those packets: for ok, what the kernel added to the SA's byte counter; for failures, the packet's length at the failing step (0 for encrypt no_state)."
)

var (
	verdictPacketsDesc = prometheus.NewDesc("ipsec_xfrm_packets_total",
		verdictPacketsHelp, verdictLabels, nil)
	verdictBytesDesc = prometheus.NewDesc("ipsec_xfrm_bytes_total",
		verdictBytesHelp, verdictLabels, nil)
	// With --collector.verdict.peer-names: the same metrics plus peer_name.
	verdictNamedPacketsDesc = prometheus.NewDesc("ipsec_xfrm_packets_total",
		verdictPacketsHelp, verdictNamedLabels, nil)
	verdictNamedBytesDesc = prometheus.NewDesc("ipsec_xfrm_bytes_total",
		verdictBytesHelp, verdictNamedLabels, nil)
)

// updateMeta reports how the programs are hooked and what they cost.
func (c *verdictCollector) updateMeta(ch chan<- prometheus.Metric) {
	hooks := c.src.Hooks()
	attached := 0
	for _, h := range hooks {
		v := 0.0
		if h.Attached {
			v = 1
			attached++
		}
		ch <- newConstMetric(bpfProgramAttachedDesc, prometheus.GaugeValue, v, h.Program, h.Kind+"/"+h.Target)
	}
	ch <- newConstMetric(bpfProgramsAttachedDesc, prometheus.GaugeValue, float64(attached))
	ch <- newConstMetric(bpfHookModeDesc, prometheus.GaugeValue, 1, c.src.Mode())
	for program, n := range c.src.Missed() {
		ch <- newConstMetric(bpfProgramMissedDesc, prometheus.CounterValue, float64(n), program)
	}
	if !bpfmap.StatsEnabled(c.statsSysctl) {
		return
	}
	for program, s := range c.src.ProgramStats() {
		ch <- newConstMetric(bpfProgramRunSecondsDesc, prometheus.CounterValue, s.Runtime.Seconds(), program)
		ch <- newConstMetric(bpfProgramRunsDesc, prometheus.CounterValue, float64(s.RunCount), program)
	}
}

// Close detaches the programs.
func (c *verdictCollector) Close() error {
	if c.release != nil {
		c.release()
	}
	if c.src == nil {
		return nil
	}
	return c.src.Close()
}
