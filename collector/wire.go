package collector

import (
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipsec-exporter/ipsec_exporter/internal/wire"
)

// The wire collector: every packet on the selected interfaces by IPsec
// class, and plaintext packets to or from IPsec peers, counted by a TC BPF
// program (internal/wire, bpf/wire.bpf.c).

var (
	wireInterfaces = kingpin.Flag("collector.wire.interfaces",
		"Regexp (anchored) of the interface names the wire program attaches to, whatever their state. Empty: every interface that is up, except loopback and IPsec devices (xfrm, vti, vti6: their traffic is the tunnels' inner side). Interfaces that appear later are followed.").
		Default("").String()
	wireAttachMode = kingpin.Flag("collector.wire.attach-mode",
		"How the wire program attaches: auto (tcx where the kernel has it, 6.6+; clsact and cls_bpf otherwise), tcx or tc.").
		Default("auto").Enum("auto", "tcx", "tc")
)

var (
	wireLabels      = []string{"interface", "direction", "class"}
	wirePacketsDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "wire", "packets_total"),
		"Packets on the wire by interface, direction and class (esp, esp_in_udp, ike, ah, plaintext, udp_fragment, non_ip); GSO/GRO aggregates count as their segments.",
		wireLabels, nil)
	wireBytesDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "wire", "bytes_total"),
		"Bytes on the wire (frame length without FCS, headers of GSO/GRO segments counted once) by interface, direction and class.",
		wireLabels, nil)
	unprotectedPacketsDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "wire", "unprotected_packets_total"),
		"Plaintext packets (neither ESP, AH nor IKE) sent to (egress) or received from (ingress) an address the kernel has SAs or IPsec policies for.",
		[]string{"peer", "direction"}, nil)
	unprotectedBytesDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "wire", "unprotected_bytes_total"),
		"Bytes of the plaintext packets sent to or received from an IPsec peer.",
		[]string{"peer", "direction"}, nil)
	wirePeersDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "wire", "peers"),
		"IPsec peer addresses the wire program watches for plaintext, learnt from SAs and policies.",
		nil, nil)
	wireAttachedDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "bpf", "wire_interface_attached"),
		"Whether the wire programs are attached to a selected interface (1) or attaching failed (0: see the log), and how (mode tcx or tc).",
		[]string{"interface", "mode"}, nil)
	wireLoadedDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "bpf", "wire_program_loaded"),
		"Whether the wire BPF programs could be loaded (1) or not (0: see the log; usually missing CAP_BPF or CAP_NET_ADMIN).",
		nil, nil)
	wireOverflowDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "bpf", "wire_map_overflow_total"),
		"Packets not counted because their key was new and its BPF map (wire_counters, unprotected_counters) was full.",
		[]string{"map"}, nil)
	wireRunSecondsDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "bpf", "wire_program_run_seconds_total"),
		"Time spent running a wire program; only while kernel.bpf_stats_enabled=1.",
		[]string{"program"}, nil)
	wireRunsDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "bpf", "wire_program_runs_total"),
		"Runs of a wire program (one per packet and hook); only while kernel.bpf_stats_enabled=1.",
		[]string{"program"}, nil)
)

func init() {
	registerCollector("wire", true, func(logger *slog.Logger) (Collector, error) {
		cfg := wire.Config{Logger: logger}
		if *wireInterfaces != "" {
			re, err := regexp.Compile("^(?:" + *wireInterfaces + ")$")
			if err != nil {
				return nil, fmt.Errorf("--collector.wire.interfaces: %w", err)
			}
			cfg.Interfaces = re
		}
		if *wireAttachMode != "auto" {
			cfg.Mode = wire.Mode(*wireAttachMode)
		}
		return newWireCollector(logger, cfg, wire.Start), nil
	})
}

type wireCollector struct {
	logger      *slog.Logger
	monitor     *wire.Monitor // nil when the program could not be loaded
	statsSysctl string
}

// newWireCollector starts the wire monitor. A failure is logged once and
// leaves a collector that reports ipsec_wire_program_loaded 0: the exporter's
// other collectors keep working.
func newWireCollector(logger *slog.Logger, cfg wire.Config, start func(wire.Config) (*wire.Monitor, error)) *wireCollector {
	m, err := start(cfg)
	if err != nil {
		logger.Warn("wire program not loaded: no wire or unprotected-traffic metrics", "err", err)
	}
	return &wireCollector{logger: logger, monitor: m, statsSysctl: "/proc/sys/kernel/bpf_stats_enabled"}
}

func (c *wireCollector) Update(ch chan<- prometheus.Metric) error {
	if c.monitor == nil {
		ch <- newConstMetric(wireLoadedDesc, prometheus.GaugeValue, 0)
		return nil
	}
	ch <- newConstMetric(wireLoadedDesc, prometheus.GaugeValue, 1)

	names := map[int]string{}
	for _, i := range c.monitor.Interfaces() {
		names[i.Ifindex] = i.Name
		ch <- newConstMetric(wireAttachedDesc, prometheus.GaugeValue, wireGauge(i.Attached), i.Name, string(i.Mode))
	}

	objs := c.monitor.Objects()
	counters, err := objs.WireCounters()
	if err != nil {
		return err
	}
	for k, v := range counters {
		name, ok := names[k.Ifindex]
		if !ok {
			continue // deleted since: its counters go with it
		}
		labels := []string{name, k.Direction.String(), k.Class.String()}
		ch <- newConstMetric(wirePacketsDesc, prometheus.CounterValue, float64(v.Packets), labels...)
		ch <- newConstMetric(wireBytesDesc, prometheus.CounterValue, float64(v.Bytes), labels...)
	}

	// Events keep the peer map current; refreshing here as well makes
	// this scrape's view exact even if events were lost.
	if _, err := c.monitor.RefreshPeers(); err != nil {
		c.logger.Debug("refreshing IPsec peers", "err", err)
	}
	peers, err := objs.Peers()
	if err != nil {
		return err
	}
	ch <- newConstMetric(wirePeersDesc, prometheus.GaugeValue, float64(len(peers)))
	unprotected, err := objs.UnprotectedCounters()
	if err != nil {
		return err
	}
	for k, v := range unprotected {
		labels := []string{k.Peer.String(), k.Direction.String()}
		ch <- newConstMetric(unprotectedPacketsDesc, prometheus.CounterValue, float64(v.Packets), labels...)
		ch <- newConstMetric(unprotectedBytesDesc, prometheus.CounterValue, float64(v.Bytes), labels...)
	}

	overflow, err := objs.Overflow()
	if err != nil {
		return err
	}
	ch <- newConstMetric(wireOverflowDesc, prometheus.CounterValue, float64(overflow.WireCounters), "wire_counters")
	ch <- newConstMetric(wireOverflowDesc, prometheus.CounterValue, float64(overflow.UnprotectedCounters), "unprotected_counters")

	// Without kernel.bpf_stats_enabled the kernel keeps no run time or
	// count, and zeros would look like idle programs.
	if b, err := os.ReadFile(c.statsSysctl); err == nil && strings.TrimSpace(string(b)) == "1" {
		for program, s := range objs.ProgramStats() {
			ch <- newConstMetric(wireRunSecondsDesc, prometheus.CounterValue, s.Runtime.Seconds(), program)
			ch <- newConstMetric(wireRunsDesc, prometheus.CounterValue, float64(s.RunCount), program)
		}
	}
	return nil
}

// Close detaches the program from every interface.
func (c *wireCollector) Close() error {
	if c.monitor == nil {
		return nil
	}
	return c.monitor.Close()
}

func wireGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
