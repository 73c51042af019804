package collector

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/xfrmnl"
)

// The sa collector: every SA of every watched namespace, read over netlink
// (XFRM_MSG_GETSA, GETSADINFO; internal/xfrmnl) at scrape time. Keys are
// never read into a metric or a log.
//
// Per-SA series carry the SA's identity: netns, spi (hex, as `ip xfrm`
// prints it), src, dst, proto, mode, reqid, direction (in/out: the kernel's
// own mark on 6.10+, else which end is an address of the namespace) and
// peer (the remote end). Each rekey makes a new SPI, so these series are
// short-lived by nature; the per-peer families (ipsec_peer_*) are the ones to
// graph and alert on over time, and stay exact when per-SA series are capped
// or turned off.

var (
	saPerSA = kingpin.Flag("collector.sa.per-sa",
		"Export per-SA series (ipsec_sa_*). Without them only the per-peer and per-namespace families are exported.").
		Default("true").Bool()
	saMaxSeries = kingpin.Flag("collector.sa.max-series",
		"Maximum number of SAs per scrape that get per-SA series (about 15 series each); the rest are counted in ipsec_sa_omitted. 0: no limit.").
		Default("1000").Int()
)

var (
	saLabels = []string{"netns", "spi", "src", "dst", "proto", "mode", "reqid", "direction", "peer"}

	saInfoDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "sa", "info"),
		"An SA with its algorithm names (crypt, auth, aead, comp; never keys), UDP/TCP encapsulation and whether it uses extended sequence numbers. Always 1.",
		append(slices.Clone(saLabels), "crypt", "auth", "aead", "comp", "encap", "esn"), nil)
	saBytesDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "sa", "bytes_total"),
		"Bytes the SA protected (outbound) or accepted (inbound), as the kernel's lifetime counter (`ip -s xfrm state` lifetime current bytes).",
		saLabels, nil)
	saPacketsDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "sa", "packets_total"),
		"Packets the SA protected (outbound) or accepted (inbound), as the kernel's lifetime counter.",
		saLabels, nil)
	saReplayDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "sa", "replay_failures_total"),
		"Inbound packets the SA dropped by its anti-replay check: reason=\"duplicate\" (a sequence number already seen: replay stat) or \"outside_window\" (older than the replay window: replay-window stat).",
		append(slices.Clone(saLabels), "reason"), nil)
	saIntegrityDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "sa", "integrity_failures_total"),
		"Inbound packets the SA dropped because the integrity check (ICV) failed: usually a key mismatch between the peers.",
		saLabels, nil)
	saAddedDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "sa", "added_timestamp_seconds"),
		"When the SA was installed, as a Unix time.",
		saLabels, nil)
	saLastUsedDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "sa", "last_used_timestamp_seconds"),
		"When the SA last carried a packet, as a Unix time (XFRMA_LASTUSED; absent until its first packet, and on kernels that do not track it for ESP, e.g. 6.1).",
		saLabels, nil)
	saExpiryDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "sa", "expiry_timestamp_seconds"),
		"When the SA's soft (rekey due) or hard (SA deleted) time limit ends, as a Unix time; absent without a time limit. A use-time limit counts once the SA was first used.",
		append(slices.Clone(saLabels), "limit"), nil)
	saLimitBytesDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "sa", "limit_bytes"),
		"The SA's soft or hard byte limit; absent when unlimited. Remaining bytes: this minus ipsec_sa_bytes_total.",
		append(slices.Clone(saLabels), "limit"), nil)
	saLimitPacketsDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "sa", "limit_packets"),
		"The SA's soft or hard packet limit; absent when unlimited.",
		append(slices.Clone(saLabels), "limit"), nil)
	saLifetimeUsedDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "sa", "lifetime_used_ratio"),
		"How much of its soft or hard lifetime the SA has used: the largest of bytes, packets and time used over the respective limit. At 1 (soft) the kernel asks IKE to rekey; at 1 (hard) it deletes the SA. Absent when the SA has no such limit.",
		append(slices.Clone(saLabels), "limit"), nil)
	saSeqUsedDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "sa", "sequence_used_ratio"),
		"How much of the sequence number space the SA has used (highest sequence number sent or received over 2^32-1, or 2^64-1 with ESN). An outbound SA at 1 drops every packet (XfrmOutStateSeqError) until rekeyed.",
		saLabels, nil)

	saCountDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "sas"),
		"SAs in the namespace by direction (from the SA dump; unknown: neither end is an address of the namespace).",
		[]string{"netns", "direction"}, nil)
	sadEntriesDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "sad", "entries"),
		"SAs in the kernel's SA database as XFRM_MSG_GETSADINFO counts them, larval ones (waiting for IKE after an acquire) included.",
		[]string{"netns"}, nil)
	saOmittedDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "sa", "omitted"),
		"SAs seen in this scrape that got no per-SA series (--no-collector.sa.per-sa, --collector.sa.max-series, or a duplicate identity). They still count in ipsec_peer_* and ipsec_sas.",
		nil, nil)
	saLarvalDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "sa", "larval"),
		"Placeholder SAs the kernel holds while a key manager negotiates a real one (SPI 0, made on an ACQUIRE). They carry no traffic, expire on their own and are left out of every other SA and peer series.",
		[]string{"netns"}, nil)
)

// isLarval tells the kernel's acquire placeholders from real SAs. On an
// ACQUIRE (a policy needs an SA that does not exist, and a key manager is
// listening — the events collector is one) the kernel inserts a larval state
// with SPI 0 (xfrm_state_find -> km_query), reserved for ESP and never on the
// wire. Counting it as an SA would keep a dead tunnel's peer looking alive and
// make its 30 s acquire timeout look like an SA about to expire.
func isLarval(sa *xfrmnl.SA) bool { return sa.SPI == 0 }

func init() {
	registerCollector("sa", true, func(logger *slog.Logger) (Collector, error) {
		c := newSACollector(logger, netnsTargets, readSAs, *saPerSA, *saMaxSeries)
		c.registry = listeners
		if targets, err := netnsTargets(); err == nil {
			c.registry.sync("sa", targets, logger) // hear of removed SAs from start-up
		}
		return c, nil
	})
}

// saSnapshot is what the collector reads from one namespace.
type saSnapshot struct {
	SAs   []xfrmnl.SA
	SAD   xfrmnl.SADInfo
	Local map[netip.Addr]bool // the namespace's own addresses
}

type saCollector struct {
	logger  *slog.Logger
	targets func() ([]netnsTarget, error)
	read    func(netnsTarget) (saSnapshot, error)
	now     func() time.Time
	perSA   bool
	max     int

	// registry, when set, gives the final counters of SAs the kernel
	// removed (internal/xfrmnl.Listener.TakeFinals) for the peer books.
	registry *listenerRegistry

	mu    sync.Mutex // scrapes may overlap; the peer books are shared
	peers *peerBooks
}

// Close lets go of the event listeners the collector holds.
func (c *saCollector) Close() error {
	if c.registry != nil {
		c.registry.releaseAll("sa")
	}
	return nil
}

func newSACollector(logger *slog.Logger, targets func() ([]netnsTarget, error), read func(netnsTarget) (saSnapshot, error), perSA bool, max int) *saCollector {
	return &saCollector{logger: logger, targets: targets, read: read, now: time.Now, perSA: perSA, max: max, peers: newPeerBooks()}
}

// readSAs dumps the namespace's SAs and SAD info, and its addresses to tell
// inbound from outbound SAs on kernels without the SA direction attribute.
func readSAs(t netnsTarget) (saSnapshot, error) {
	var s saSnapshot
	conn, err := xfrmnl.Dial(t.Path, 0)
	if err != nil {
		return s, err
	}
	defer func() { _ = conn.Close() }()
	if s.SAs, err = conn.SAs(); err != nil {
		return s, err
	}
	if s.SAD, err = conn.SADInfo(); err != nil {
		return s, err
	}
	s.Local = map[netip.Addr]bool{}
	err = netnsx.Do(t.Path, func() error {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
					s.Local[ip.Unmap()] = true
				}
			}
		}
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("listing addresses: %w", err)
	}
	return s, nil
}

// saView is one SA with its label values worked out.
type saView struct {
	sa     *xfrmnl.SA
	labels []string // saLabels order
	peer   peerKey
}

func (c *saCollector) Update(ch chan<- prometheus.Metric) error {
	targets, err := c.targets()
	if err != nil {
		return err
	}
	now := c.now()
	var errs []error
	var views []saView
	read := map[string]bool{} // namespaces read in full this scrape
	var finals []saView
	var held map[string]*xfrmnl.Listener
	if c.registry != nil {
		var lerrs []error
		held, lerrs = c.registry.sync("sa", targets, c.logger)
		for _, err := range lerrs {
			c.logger.Debug("no event listener: per-peer totals miss what removed SAs carried after the last scrape", "err", err)
		}
	}
	for _, t := range targets {
		snap, err := c.read(t)
		if err != nil {
			errs = append(errs, fmt.Errorf("netns %q: %w", t.Name, err))
			continue
		}
		read[t.Name] = true
		// Taken after the dump: an SA removed in between is in both, and
		// the books hold its final counters back until it is gone.
		if l := held[t.Name]; l != nil {
			for _, sa := range l.TakeFinals() {
				if isLarval(&sa) {
					continue
				}
				finals = append(finals, viewOf(t.Name, &sa, snap.Local))
			}
		}
		ch <- newConstMetric(sadEntriesDesc, prometheus.GaugeValue, float64(snap.SAD.Count), t.Name)
		byDir := map[string]int{"in": 0, "out": 0}
		larval := 0
		for i := range snap.SAs {
			if isLarval(&snap.SAs[i]) {
				larval++
				continue
			}
			v := viewOf(t.Name, &snap.SAs[i], snap.Local)
			byDir[v.peer.direction]++
			views = append(views, v)
		}
		for dir, n := range byDir {
			ch <- newConstMetric(saCountDesc, prometheus.GaugeValue, float64(n), t.Name, dir)
		}
		ch <- newConstMetric(saLarvalDesc, prometheus.GaugeValue, float64(larval), t.Name)
	}
	if len(read) == 0 && len(errs) > 0 {
		if err := errors.Join(errs...); xfrmAbsent(err) {
			return fmt.Errorf("%w: %w", ErrNoData, err)
		}
		return errors.Join(errs...)
	}

	c.mu.Lock()
	peerTotals := c.peers.update(views, finals, read, now)
	c.mu.Unlock()
	for _, p := range peerTotals {
		p.emit(ch)
	}

	// A stable order, so a cap keeps the same SAs from scrape to scrape.
	slices.SortFunc(views, func(a, b saView) int {
		return cmp.Or(cmp.Compare(a.labels[0], b.labels[0]), a.sa.Dst.Compare(b.sa.Dst), cmp.Compare(a.sa.SPI, b.sa.SPI), cmp.Compare(a.sa.Proto, b.sa.Proto))
	})
	omitted := 0
	emitted := 0
	seen := map[string]bool{}
	for _, v := range views {
		if !c.perSA || (c.max > 0 && emitted >= c.max) {
			// Beyond the cap nothing per SA is worked out: with 10k SAs
			// and the default cap that is 9k identity keys not built.
			omitted++
			continue
		}
		key := strings.Join(v.labels, "\x00")
		if seen[key] {
			// Same identity labels (e.g. SAs differing only in mark):
			// a second series would break the scrape.
			c.logger.Debug("SA with a duplicate identity left out", "labels", strings.Join(v.labels, ","))
			omitted++
			continue
		}
		seen[key] = true
		emitted++
		emitSA(ch, v, now)
	}
	ch <- newConstMetric(saOmittedDesc, prometheus.GaugeValue, float64(omitted))
	return errors.Join(errs...)
}

// viewOf works out an SA's labels and peer.
func viewOf(netns string, sa *xfrmnl.SA, local map[netip.Addr]bool) saView {
	src, dst := sa.Src.Unmap(), sa.Dst.Unmap()
	dir, peer := "unknown", ""
	switch {
	case sa.Dir == xfrmnl.SADirIn:
		dir, peer = "in", src.String()
	case sa.Dir == xfrmnl.SADirOut:
		dir, peer = "out", dst.String()
	case local[dst]:
		dir, peer = "in", src.String()
	case local[src]:
		dir, peer = "out", dst.String()
	}
	return saView{
		sa: sa,
		labels: []string{netns, fmt.Sprintf("0x%08x", sa.SPI), src.String(), dst.String(),
			xfrmnl.ProtoName(sa.Proto), xfrmnl.ModeName(sa.Mode), strconv.FormatUint(uint64(sa.Reqid), 10), dir, peer},
		peer: peerKey{netns: netns, peer: peer, direction: dir},
	}
}

func emitSA(ch chan<- prometheus.Metric, v saView, now time.Time) {
	sa, l := v.sa, v.labels
	with := func(extra ...string) []string { return append(slices.Clone(l), extra...) }
	gauge := func(d *prometheus.Desc, val float64, labels []string) {
		ch <- newConstMetric(d, prometheus.GaugeValue, val, labels...)
	}
	counter := func(d *prometheus.Desc, val uint64, labels []string) {
		ch <- newConstMetric(d, prometheus.CounterValue, float64(val), labels...)
	}
	gauge(saInfoDesc, 1, with(sa.Crypt, sa.Auth, sa.AEAD, sa.Comp, xfrmnl.EncapName(sa.EncapType), strconv.FormatBool(sa.ESN)))
	counter(saBytesDesc, sa.Bytes, l)
	counter(saPacketsDesc, sa.Packets, l)
	counter(saReplayDesc, uint64(sa.ReplayDrops), with("duplicate"))
	counter(saReplayDesc, uint64(sa.ReplayWindowDrops), with("outside_window"))
	counter(saIntegrityDesc, uint64(sa.IntegrityFailures), l)
	gauge(saAddedDesc, float64(sa.AddTime), l)
	if sa.LastUsed != 0 {
		gauge(saLastUsedDesc, float64(sa.LastUsed), l)
	}
	if r, ok := sa.SeqUsedRatio(); ok {
		gauge(saSeqUsedDesc, r, l)
	}
	for _, lim := range []struct {
		name                      string
		bytes, packets, add, used uint64
	}{
		{"soft", sa.Limits.SoftBytes, sa.Limits.SoftPackets, sa.Limits.SoftAddSeconds, sa.Limits.SoftUseSeconds},
		{"hard", sa.Limits.HardBytes, sa.Limits.HardPackets, sa.Limits.HardAddSeconds, sa.Limits.HardUseSeconds},
	} {
		var ratios []float64
		if lim.bytes != math.MaxUint64 {
			gauge(saLimitBytesDesc, float64(lim.bytes), with(lim.name))
			ratios = append(ratios, usedRatio(float64(sa.Bytes), float64(lim.bytes)))
		}
		if lim.packets != math.MaxUint64 {
			gauge(saLimitPacketsDesc, float64(lim.packets), with(lim.name))
			ratios = append(ratios, usedRatio(float64(sa.Packets), float64(lim.packets)))
		}
		if expiry, ok := expiryTime(sa.AddTime, sa.UseTime, lim.add, lim.used); ok {
			gauge(saExpiryDesc, float64(expiry), with(lim.name))
			if lim.add != 0 {
				ratios = append(ratios, usedRatio(float64(now.Unix())-float64(sa.AddTime), float64(lim.add)))
			}
			if lim.used != 0 && sa.UseTime != 0 {
				ratios = append(ratios, usedRatio(float64(now.Unix())-float64(sa.UseTime), float64(lim.used)))
			}
		}
		if len(ratios) > 0 {
			gauge(saLifetimeUsedDesc, slices.Max(ratios), with(lim.name))
		}
	}
}

// expiryTime is when a time limit ends: seconds after the SA was added, or
// after its first use, whichever comes first (0 means no such limit).
func expiryTime(addTime, useTime, addLimit, useLimit uint64) (uint64, bool) {
	var t uint64
	ok := false
	if addLimit != 0 {
		t, ok = addTime+addLimit, true
	}
	if useLimit != 0 && useTime != 0 {
		if u := useTime + useLimit; !ok || u < t {
			t, ok = u, true
		}
	}
	return t, ok
}

// usedRatio is used/limit, clamped to [0, 1]: past the limit the kernel
// acts (rekey or delete), more than all of it is not a thing.
func usedRatio(used, limit float64) float64 {
	if limit <= 0 {
		return 1
	}
	return min(max(used/limit, 0), 1)
}
