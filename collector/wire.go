package collector

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"sync"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netns"

	"github.com/ipsec-exporter/ipsec_exporter/internal/bpfmap"
	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/peers"
	"github.com/ipsec-exporter/ipsec_exporter/internal/pin"
	"github.com/ipsec-exporter/ipsec_exporter/internal/wire"
)

// The wire collector: every packet on the selected interfaces of every
// watched namespace by IPsec class, and plaintext packets to or from known
// IPsec peers, counted by a TC BPF program (internal/wire,
// bpf/wire.bpf.c). The namespaces are those of the netlink collectors
// (--collector.netns.*), labelled the same way (netns="" for the
// exporter's own).

var (
	wireInterfaces = kingpin.Flag("collector.wire.interfaces",
		"Regexp (anchored) of the interface names the wire program attaches to, whatever their state, in every watched namespace. Empty: every interface that is up, except loopback and IPsec devices (xfrm, vti, vti6: their traffic is the tunnels' inner side). Interfaces that appear later are followed.").
		Default("").String()
	wireAttachMode = kingpin.Flag("collector.wire.attach-mode",
		"How the wire program attaches: auto (tcx where the kernel has it, 6.6+; clsact and cls_bpf otherwise), tcx or tc.").
		Default("auto").Enum("auto", "tcx", "tc")
	wirePeerMapSize = kingpin.Flag("bpf.wire-peer-map-size",
		"Most known peers (over all namespaces) the wire program watches for plaintext; the map is not preallocated, so the bound costs nothing until used. Peers beyond it are reported in ipsec_wire_peers_unwatched.").
		Default(fmt.Sprint(wire.DefaultPeerMapSize)).Uint32()
)

var (
	wireLabels      = []string{"netns", "interface", "direction", "class"}
	wirePacketsDesc = prometheus.NewDesc("ipsec_wire_packets_total",
		"Packets on the wire by namespace, interface, direction and class (esp, esp_in_udp, ike, ah, plaintext, udp_fragment, non_ip); GSO/GRO aggregates count as their segments.",
		wireLabels, nil)
	wireBytesDesc = prometheus.NewDesc("ipsec_wire_bytes_total",
		"Bytes on the wire (frame length without FCS, headers of GSO/GRO segments counted once) by namespace, interface, direction and class.",
		wireLabels, nil)
	unprotectedPacketsDesc = prometheus.NewDesc("ipsec_wire_unprotected_packets_total",
		"Plaintext packets (neither ESP, AH nor IKE) sent to (egress) or received from (ingress) a known IPsec peer of the namespace: one it has SAs or policies for, had them within --peers.forget-after, or the peer-names file names.",
		[]string{"netns", "peer", "direction"}, nil)
	unprotectedBytesDesc = prometheus.NewDesc("ipsec_wire_unprotected_bytes_total",
		"Bytes of the plaintext packets sent to or received from a known IPsec peer.",
		[]string{"netns", "peer", "direction"}, nil)
	wirePeersDesc = prometheus.NewDesc("ipsec_wire_peers",
		"Known IPsec peers of the namespace the wire program watches for plaintext.",
		[]string{"netns"}, nil)
	wirePeersRememberedDesc = prometheus.NewDesc("ipsec_wire_peers_remembered",
		"Known peers of the namespace whose SAs and policies are gone, still watched for plaintext for --peers.forget-after.",
		[]string{"netns"}, nil)
	wirePeersUnwatchedDesc = prometheus.NewDesc("ipsec_wire_peers_unwatched",
		"Known peers the wire program does not watch because its peer map is full (--bpf.wire-peer-map-size): plaintext to them is not counted.",
		nil, nil)
	wireAttachedDesc = prometheus.NewDesc("ipsec_bpf_wire_interface_attached",
		"Whether the wire programs are attached to a selected interface (1) or attaching failed (0: see the log), and how (mode tcx or tc).",
		[]string{"netns", "interface", "mode"}, nil)
	wireNetnsDesc = prometheus.NewDesc("ipsec_bpf_wire_netns_watched",
		"Whether the wire program follows the interfaces of a watched namespace (1) or cannot (0: see the log; entering another namespace needs CAP_SYS_ADMIN).",
		[]string{"netns"}, nil)
	wireLoadedDesc = prometheus.NewDesc("ipsec_bpf_wire_program_loaded",
		"Whether the wire BPF programs could be loaded (1) or not (0: see the log; usually missing CAP_BPF or CAP_NET_ADMIN).",
		nil, nil)
	wireRunSecondsDesc = prometheus.NewDesc("ipsec_bpf_wire_program_run_seconds_total",
		"Time spent running a wire program, summed over interfaces; only while kernel.bpf_stats_enabled=1.",
		[]string{"program"}, nil)
	wireRunsDesc = prometheus.NewDesc("ipsec_bpf_wire_program_runs_total",
		"Runs of a wire program (one per packet and hook), summed over interfaces; only while kernel.bpf_stats_enabled=1.",
		[]string{"program"}, nil)
)

func init() {
	RegisterFlagCheck("collector.wire.interfaces", func() error {
		_, err := wireInterfacesRegexp()
		return err
	})
	RegisterFlagCheck("bpf.wire-peer-map-size", func() error {
		if n := *wirePeerMapSize; n < 1 || n > maxWirePeerMapSize {
			return fmt.Errorf("must be between 1 and %d, got %d", maxWirePeerMapSize, n)
		}
		return nil
	})
	registerCollector("wire", true, func(logger *slog.Logger) (Collector, error) {
		cfg := wire.Config{Logger: logger}
		cfg.Interfaces, _ = wireInterfacesRegexp() // checked with the flags
		if *wireAttachMode != "auto" {
			cfg.Mode = wire.Mode(*wireAttachMode)
		}
		tracker, err := knownPeers.acquire(logger)
		if err != nil {
			return nil, err
		}
		w, err := watchedNamespaces.acquire(logger)
		if err != nil {
			_ = knownPeers.release()
			return nil, err
		}
		c := newWireCollector(logger, cfg, func() (*wire.Programs, error) { return wire.Load(*wirePeerMapSize) }, tracker.Tracker)
		c.pins = pinDir("wire")
		c.release = func() { _ = errors.Join(watchedNamespaces.release(), knownPeers.release()) }
		if c.progs != nil {
			c.stopWatch = followNamespaces(w, c.watch)
		}
		return c, nil
	})
}

// maxWirePeerMapSize bounds --bpf.wire-peer-map-size: 16 million peers is
// beyond any node, and a typo of that size would let the map grow to GiBs.
const maxWirePeerMapSize = 1 << 24

func wireInterfacesRegexp() (*regexp.Regexp, error) {
	if *wireInterfaces == "" {
		return nil, nil
	}
	re, err := regexp.Compile("^(?:" + *wireInterfaces + ")$")
	if err != nil {
		return nil, fmt.Errorf("not a regular expression: %w", err)
	}
	return re, nil
}

type wireCollector struct {
	logger      *slog.Logger
	cfg         wire.Config    // for each namespace's monitor
	pins        pin.Dir        // of the namespaces' pinned counters (--bpf.pin-path)
	progs       *wire.Programs // nil when the program could not be loaded
	tracker     *peers.Tracker
	release     func() // of the shared tracker and namespace watcher
	cancel      func() // of the peer subscription
	stopWatch   func() // of following the namespaces
	statsSysctl string

	mu         sync.Mutex
	namespaces map[string]*wireNetns // by label
	nextSlot   uint32
	peerSet    peers.Set
	status     wire.PeerMapStatus
	warnedFull bool
	closed     bool
}

// wireNetns is the wire program in one watched namespace.
type wireNetns struct {
	ns      netnsx.Namespace
	slot    uint32
	handle  *os.File // the namespace, held open while watched
	nsh     netns.NsHandle
	monitor *wire.Monitor // nil when it cannot be watched
}

// newWireCollector loads the programs. A failure is logged once and leaves
// a collector that reports ipsec_bpf_wire_program_loaded 0: the exporter's
// other collectors keep working.
func newWireCollector(logger *slog.Logger, cfg wire.Config, load func() (*wire.Programs, error), tracker *peers.Tracker) *wireCollector {
	c := &wireCollector{
		logger: logger, cfg: cfg, tracker: tracker,
		namespaces:  map[string]*wireNetns{},
		statsSysctl: bpfmap.StatsSysctl,
	}
	progs, err := load()
	if err != nil {
		logger.Warn("wire program not loaded: no wire or unprotected-traffic metrics", "err", err)
		return c
	}
	c.progs = progs
	if tracker != nil {
		c.cancel = tracker.Subscribe(func(s peers.Set) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.peerSet = s
			c.setPeersLocked()
		})
	}
	return c
}

// watch follows the watched namespaces: a monitor in each new one (or one
// recreated under its name), none in one that went.
func (c *wireCollector) watch(namespaces []netnsx.Namespace) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	seen := map[string]bool{}
	for _, n := range namespaces {
		seen[n.Name] = true
		ns := c.namespaces[n.Name]
		if ns != nil && ns.ns == n {
			continue
		}
		if ns != nil {
			c.stopLocked(ns)
		}
		c.namespaces[n.Name] = c.startLocked(n)
	}
	for label, ns := range c.namespaces {
		if !seen[label] {
			c.stopLocked(ns)
			delete(c.namespaces, label)
		}
	}
	// The pinned counters of a namespace that went, now or while no
	// exporter ran, go with it.
	keep := make([]string, 0, len(c.namespaces))
	for label := range c.namespaces {
		keep = append(keep, wirePinName(label))
	}
	if removed, err := c.pins.Prune(keep); err != nil {
		c.logger.Warn("cannot unpin the wire counters of namespaces no longer watched", "err", err)
	} else if len(removed) > 0 {
		c.logger.Info("unpinned the wire counters of namespaces no longer watched", "pins", removed)
	}
	c.setPeersLocked()
}

// wirePinName is the directory of a namespace's pinned wire counters: the
// label, which names its series, so that they continue; "self" for the
// exporter's own (label ""), which no netns-* name can be.
func wirePinName(label string) string {
	if label == "" {
		return "self"
	}
	return "netns-" + label
}

func (c *wireCollector) startLocked(n netnsx.Namespace) *wireNetns {
	ns := &wireNetns{ns: n, slot: c.nextSlot}
	c.nextSlot++
	cfg := c.cfg
	cfg.Programs, cfg.NetnsSlot = c.progs, ns.slot
	cfg.Pins = c.pins.Join(wirePinName(n.Name))
	cfg.Logger = c.logger.With("netns", n.Name)
	if n.Path != "" {
		f, err := n.Open()
		if err != nil {
			if !errors.Is(err, netnsx.ErrGone) {
				c.logger.Warn("cannot watch the interfaces of a namespace", "netns", n.Name, "err", err)
			}
			return ns
		}
		ns.handle, ns.nsh = f, netns.NsHandle(f.Fd())
		cfg.Netns = &ns.nsh
	}
	m, err := wire.Start(cfg)
	if err != nil {
		c.logger.Warn("cannot watch the interfaces of a namespace", "netns", n.Name, "err", err)
		c.closeHandle(ns)
		return ns
	}
	ns.monitor = m
	return ns
}

func (c *wireCollector) stopLocked(ns *wireNetns) {
	if ns.monitor != nil {
		if err := ns.monitor.Close(); err != nil {
			c.logger.Warn("detaching the wire program", "netns", ns.ns.Name, "err", err)
		}
		ns.monitor = nil
	}
	c.closeHandle(ns)
}

func (c *wireCollector) closeHandle(ns *wireNetns) {
	if ns.handle != nil {
		_ = ns.handle.Close()
		ns.handle = nil
	}
}

// setPeersLocked gives the peer map the known peers of every namespace the
// wire program is in. A full map is logged once.
func (c *wireCollector) setPeersLocked() {
	if c.progs == nil {
		return
	}
	slots := make(map[string]uint32, len(c.namespaces))
	for label, ns := range c.namespaces {
		if ns.monitor != nil {
			slots[label] = ns.slot
		}
	}
	status, err := c.progs.SetPeers(wire.BySlot(c.peerSet, slots))
	if err != nil {
		c.logger.Warn("updating the wire peer map", "err", err)
	}
	c.status = status
	if status.Unwatched > 0 && !c.warnedFull {
		c.warnedFull = true
		c.logger.Warn("the wire peer map is full: plaintext to some known peers is not counted (raise --bpf.wire-peer-map-size)",
			"watched", status.Watched, "unwatched", status.Unwatched)
	}
}

func (c *wireCollector) Update(ch chan<- prometheus.Metric) error {
	if c.progs == nil {
		ch <- newConstMetric(wireLoadedDesc, prometheus.GaugeValue, 0)
		return nil
	}
	ch <- newConstMetric(wireLoadedDesc, prometheus.GaugeValue, 1)
	c.mu.Lock()
	defer c.mu.Unlock()

	byLabel := make(map[uint32]string, len(c.namespaces))
	stats := map[wire.Direction]wireRunStats{}
	for _, label := range sortedLabels(c.namespaces) {
		ns := c.namespaces[label]
		ch <- newConstMetric(wireNetnsDesc, prometheus.GaugeValue, wireGauge(ns.monitor != nil), label)
		if ns.monitor == nil {
			continue
		}
		byLabel[ns.slot] = label
		if err := emitWireInterfaces(ch, label, ns.monitor); err != nil {
			return err
		}
		for d, s := range ns.monitor.ProgramStats() {
			sum := stats[d]
			sum.seconds += s.Runtime.Seconds()
			sum.runs += float64(s.RunCount)
			stats[d] = sum
		}
	}
	if err := c.emitPeers(ch, byLabel); err != nil {
		return err
	}

	// Without kernel.bpf_stats_enabled the kernel keeps no run time or
	// count, and zeros would look like idle programs.
	if bpfmap.StatsEnabled(c.statsSysctl) {
		for d, s := range stats {
			program := "wire_" + d.String()
			ch <- newConstMetric(wireRunSecondsDesc, prometheus.CounterValue, s.seconds, program)
			ch <- newConstMetric(wireRunsDesc, prometheus.CounterValue, s.runs, program)
		}
	}
	return nil
}

// wireRunStats is one direction's program run time and count, summed over
// the interfaces of every namespace.
type wireRunStats struct{ seconds, runs float64 }

// emitWireInterfaces sends a namespace's interfaces: attached or not, and
// their counters by direction and class.
func emitWireInterfaces(ch chan<- prometheus.Metric, label string, m *wire.Monitor) error {
	for _, i := range m.Interfaces() {
		ch <- newConstMetric(wireAttachedDesc, prometheus.GaugeValue, wireGauge(i.Attached), label, i.Name, string(i.Mode))
	}
	counters, err := m.Counters()
	if err != nil {
		return fmt.Errorf("netns %q: %w", label, err)
	}
	for _, ic := range counters {
		for d, byClass := range ic.Counters {
			for class, v := range byClass {
				if v == (wire.Counter{}) {
					continue // a class never seen on this interface
				}
				labels := []string{label, ic.Name, wire.Direction(d).String(), wire.Class(class).String()}
				ch <- newConstMetric(wirePacketsDesc, prometheus.CounterValue, float64(v.Packets), labels...)
				ch <- newConstMetric(wireBytesDesc, prometheus.CounterValue, float64(v.Bytes), labels...)
			}
		}
	}
	return nil
}

// emitPeers sends, per watched namespace (by its slot in the peer map),
// what reached its known peers unprotected and how many peers it has.
func (c *wireCollector) emitPeers(ch chan<- prometheus.Metric, byLabel map[uint32]string) error {
	unprotected, err := c.progs.Unprotected()
	if err != nil {
		return err
	}
	for slot, label := range byLabel {
		ch <- newConstMetric(wirePeersDesc, prometheus.GaugeValue, float64(len(unprotected[slot])/2), label)
		for k, v := range unprotected[slot] {
			if v == (wire.Counter{}) {
				continue // a series appears with the first unprotected packet
			}
			labels := []string{label, k.Peer.String(), k.Direction.String()}
			ch <- newConstMetric(unprotectedPacketsDesc, prometheus.CounterValue, float64(v.Packets), labels...)
			ch <- newConstMetric(unprotectedBytesDesc, prometheus.CounterValue, float64(v.Bytes), labels...)
		}
		remembered := 0
		for _, p := range c.peerSet.Netns[label] {
			if p.Remembered() {
				remembered++
			}
		}
		ch <- newConstMetric(wirePeersRememberedDesc, prometheus.GaugeValue, float64(remembered), label)
	}
	ch <- newConstMetric(wirePeersUnwatchedDesc, prometheus.GaugeValue, float64(c.status.Unwatched))
	return nil
}

func sortedLabels(m map[string]*wireNetns) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Close detaches the program from every interface of every namespace.
func (c *wireCollector) Close() error {
	if c.stopWatch != nil {
		c.stopWatch()
	}
	c.mu.Lock()
	c.closed = true
	for _, ns := range c.namespaces {
		c.stopLocked(ns)
	}
	c.namespaces = map[string]*wireNetns{}
	c.mu.Unlock()
	if c.cancel != nil {
		c.cancel()
	}
	if c.release != nil {
		c.release()
	}
	if c.progs != nil {
		return c.progs.Close()
	}
	return nil
}

func wireGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
