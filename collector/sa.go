package collector

import (
	"cmp"
	"encoding/binary"
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

	saInfoDesc = prometheus.NewDesc("ipsec_sa_info",
		"An SA with its algorithm names (crypt, auth, aead, comp; never keys), UDP/TCP encapsulation and whether it uses extended sequence numbers. Always 1.",
		append(slices.Clone(saLabels), "crypt", "auth", "aead", "comp", "encap", "esn"), nil)
	saBytesDesc = prometheus.NewDesc("ipsec_sa_bytes_total",
		"Bytes the SA protected (outbound) or accepted (inbound), as the kernel's lifetime counter (`ip -s xfrm state` lifetime current bytes).",
		saLabels, nil)
	saPacketsDesc = prometheus.NewDesc("ipsec_sa_packets_total",
		"Packets the SA protected (outbound) or accepted (inbound), as the kernel's lifetime counter.",
		saLabels, nil)
	saReplayDesc = prometheus.NewDesc("ipsec_sa_replay_failures_total",
		"Inbound packets the SA dropped by its anti-replay check: reason=\"duplicate\" (a sequence number already seen: replay stat) or \"outside_window\" (older than the replay window: replay-window stat).",
		append(slices.Clone(saLabels), "reason"), nil)
	saIntegrityDesc = prometheus.NewDesc("ipsec_sa_integrity_failures_total",
		"Inbound packets the SA dropped because the integrity check (ICV) failed: usually a key mismatch between the peers.",
		saLabels, nil)
	saAddedDesc = prometheus.NewDesc("ipsec_sa_added_timestamp_seconds",
		"When the SA was installed, as a Unix time.",
		saLabels, nil)
	saLastUsedDesc = prometheus.NewDesc("ipsec_sa_last_used_timestamp_seconds",
		"When the SA last carried a packet, as a Unix time (XFRMA_LASTUSED; absent until its first packet, and on kernels that do not track it for ESP, e.g. 6.1).",
		saLabels, nil)
	saExpiryDesc = prometheus.NewDesc("ipsec_sa_expiry_timestamp_seconds",
		"When the SA's soft (rekey due) or hard (SA deleted) time limit ends, as a Unix time; absent without a time limit. A use-time limit counts once the SA was first used.",
		append(slices.Clone(saLabels), "limit"), nil)
	saLimitBytesDesc = prometheus.NewDesc("ipsec_sa_limit_bytes",
		"The SA's soft or hard byte limit; absent when unlimited. Remaining bytes: this minus ipsec_sa_bytes_total.",
		append(slices.Clone(saLabels), "limit"), nil)
	saLimitPacketsDesc = prometheus.NewDesc("ipsec_sa_limit_packets",
		"The SA's soft or hard packet limit; absent when unlimited.",
		append(slices.Clone(saLabels), "limit"), nil)
	saLifetimeUsedDesc = prometheus.NewDesc("ipsec_sa_lifetime_used_ratio",
		"How much of its soft or hard lifetime the SA has used: the largest of bytes, packets and time used over the respective limit. At 1 (soft) the kernel asks IKE to rekey; at 1 (hard) it deletes the SA. Absent when the SA has no such limit.",
		append(slices.Clone(saLabels), "limit"), nil)
	saSeqUsedDesc = prometheus.NewDesc("ipsec_sa_sequence_used_ratio",
		"How much of the sequence number space the SA has used (highest sequence number sent or received over 2^32-1, or 2^64-1 with ESN). An outbound SA at 1 drops every packet (XfrmOutStateSeqError) until rekeyed.",
		saLabels, nil)

	saCountDesc = prometheus.NewDesc("ipsec_sas",
		"SAs in the namespace by direction (from the SA dump; unknown: neither end is an address of the namespace).",
		[]string{"netns", "direction"}, nil)
	sadEntriesDesc = prometheus.NewDesc("ipsec_sad_entries",
		"SAs in the kernel's SA database as XFRM_MSG_GETSADINFO counts them, larval ones (waiting for IKE after an acquire) included.",
		[]string{"netns"}, nil)
	saOmittedDesc = prometheus.NewDesc("ipsec_sa_omitted",
		"SAs seen in this scrape that got no per-SA series (--no-collector.sa.per-sa, --collector.sa.max-series, or a duplicate identity). They still count in ipsec_peer_* and ipsec_sas.",
		nil, nil)
	saLarvalDesc = prometheus.NewDesc("ipsec_sa_larval",
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

// maxSeriesBound bounds the per-object caps: beyond it the series a node
// exports are no cap at all (about 15 per SA).
const maxSeriesBound = 1_000_000

// checkMaxSeries is the check of a --collector.*.max-series flag.
func checkMaxSeries(v *int) func() error {
	return func() error {
		if *v < 0 || *v > maxSeriesBound {
			return fmt.Errorf("must be 0 (no limit) or between 1 and %d, got %d", maxSeriesBound, *v)
		}
		return nil
	}
}

func init() {
	RegisterFlagCheck("collector.sa.max-series", checkMaxSeries(saMaxSeries))
	registerCollector("sa", true, func(logger *slog.Logger) (Collector, error) {
		ls, err := eventListeners.acquire(logger)
		if err != nil {
			return nil, err
		}
		c := newSACollector(logger, namespacesNow(ls.watcher), readSAs, *saPerSA, *saMaxSeries)
		c.finals = takeFinals(ls.Listeners)
		c.release = eventListeners.release
		return c, nil
	})
}

// takeFinals gives the final counters of the SAs the kernel removed in a
// namespace since the last call, from its event listener.
func takeFinals(ls *xfrmnl.Listeners) func(netnsx.ID) []xfrmnl.SA {
	return func(id netnsx.ID) []xfrmnl.SA {
		l, _ := ls.Get(id)
		if l == nil {
			return nil
		}
		return l.TakeFinals()
	}
}

// saNamespace is what the sa collector reads of one namespace.
type saNamespace struct {
	SAD   xfrmnl.SADInfo
	Local addrSet // the namespace's own addresses
	// Each calls fn with every SA, decoded into one reused value.
	Each func(fn func(*xfrmnl.SA) error) error
	// Close releases what Each needs.
	Close func()
}

type saCollector struct {
	logger     *slog.Logger
	namespaces func() []netnsx.Namespace
	read       func(netnsx.Namespace) (saNamespace, error)
	now        func() time.Time
	perSA      bool
	max        int
	// finals, when set, gives the final counters of SAs the kernel
	// removed (internal/xfrmnl.Listener.TakeFinals) for the peer books.
	finals  func(netnsx.ID) []xfrmnl.SA
	release func() error

	mu    sync.Mutex // scrapes may overlap; the peer books are shared
	peers *peerBooks
	rows  firstN[saRow] // the SAs given per-SA series, reused from scrape to scrape
}

// Close lets go of the event listeners.
func (c *saCollector) Close() error {
	if c.release == nil {
		return nil
	}
	return c.release()
}

func newSACollector(logger *slog.Logger, namespaces func() []netnsx.Namespace, read func(netnsx.Namespace) (saNamespace, error), perSA bool, max int) *saCollector {
	return &saCollector{logger: logger, namespaces: namespaces, read: read, now: time.Now, perSA: perSA, max: max,
		peers: newPeerBooks(), rows: firstN[saRow]{n: max, cmp: compareRows}}
}

// readSAs opens the namespace's SA dump after reading its SAD info and its
// addresses (to tell inbound from outbound SAs on kernels without the SA
// direction attribute).
func readSAs(ns netnsx.Namespace) (saNamespace, error) {
	var s saNamespace
	conn, err := xfrmnl.Dial(ns, 0)
	if err != nil {
		return s, err
	}
	if s.SAD, err = conn.SADInfo(); err != nil {
		_ = conn.Close()
		return s, err
	}
	if s.Local, err = localAddrs(ns); err != nil {
		_ = conn.Close()
		return s, err
	}
	s.Each = conn.EachSA
	s.Close = func() { _ = conn.Close() }
	return s, nil
}

// addrSet is a namespace's own addresses: a few, so a list to scan is
// cheaper than a map to hash, once per SA.
type addrSet []netip.Addr

func (s addrSet) has(a netip.Addr) bool { return slices.Contains(s, a) }

// localAddrs lists the addresses of the namespace's interfaces.
func localAddrs(ns netnsx.Namespace) (addrSet, error) {
	var local addrSet
	err := ns.Do(func() error {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok && !local.has(ip.Unmap()) {
					local = append(local, ip.Unmap())
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	return local, nil
}

// saDirection is an SA's direction as the collector works it out.
type saDirection uint8

const (
	dirUnknown saDirection = iota // neither end is an address of the namespace
	dirIn
	dirOut
)

func (d saDirection) String() string {
	switch d {
	case dirIn:
		return "in"
	case dirOut:
		return "out"
	}
	return "unknown"
}

// classify works out an SA's direction and peer (the remote end): the
// kernel's own mark on 6.10+, else which end is an address of the
// namespace.
func classify(netns string, sa *xfrmnl.SA, local addrSet) peerKey {
	src, dst := sa.Src.Unmap(), sa.Dst.Unmap()
	switch {
	case sa.Dir == xfrmnl.SADirIn:
		return peerKey{netns: netns, peer: src, dir: dirIn}
	case sa.Dir == xfrmnl.SADirOut:
		return peerKey{netns: netns, peer: dst, dir: dirOut}
	case local.has(dst):
		return peerKey{netns: netns, peer: src, dir: dirIn}
	case local.has(src):
		return peerKey{netns: netns, peer: dst, dir: dirOut}
	}
	return peerKey{netns: netns, dir: dirUnknown}
}

func identOf(netns netnsx.ID, sa *xfrmnl.SA) saIdent {
	return saIdent{netns: netns, src: sa.Src.As16(), dst: sa.Dst.As16(), spi: sa.SPI, proto: sa.Proto, mark: sa.Mark & sa.MarkMask}
}

func totalsOf(sa *xfrmnl.SA) saTotals {
	return saTotals{bytes: sa.Bytes, packets: sa.Packets, integrity: uint64(sa.IntegrityFailures),
		replay: uint64(sa.ReplayDrops) + uint64(sa.ReplayWindowDrops)}
}

// saRow is one SA that may get per-SA series.
type saRow struct {
	key  rowKey
	sa   xfrmnl.SA
	peer peerKey
}

// rowKey is the order in which the per-SA cap keeps SAs, stable from scrape
// to scrape: the namespace's place (the exporter's own first, then by name),
// the destination, the SPI and the protocol, as integers. The kernel dumps
// SAs newest first, so under the cap an SA replaces a kept one again and
// again; each comparison must be cheap.
type rowKey struct {
	netns      int
	dstHi, dst uint64
	spiProto   uint64
}

func keyOf(netns int, sa *xfrmnl.SA) rowKey {
	d := sa.Dst.As16()
	return rowKey{netns: netns, dstHi: binary.BigEndian.Uint64(d[:8]), dst: binary.BigEndian.Uint64(d[8:]),
		spiProto: uint64(sa.SPI)<<8 | uint64(sa.Proto)}
}

func compareRows(a, b *saRow) int {
	x, y := &a.key, &b.key
	return cmp.Or(cmp.Compare(x.netns, y.netns), cmp.Compare(x.dstHi, y.dstHi), cmp.Compare(x.dst, y.dst), cmp.Compare(x.spiProto, y.spiProto))
}

// Update reads every namespace, updates the per-peer books and sends the
// per-namespace, per-peer and (capped) per-SA series.
func (c *saCollector) Update(ch chan<- prometheus.Metric) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.rows.reset()
	rows := &c.rows
	var finals []finalSA
	var errs []error
	unreadable := map[netnsx.ID]bool{}
	read := 0
	c.peers.begin()
	for order, ns := range c.namespaces() {
		f, err := c.readNamespace(ch, order, ns, rows)
		switch {
		case gone(err):
			c.logger.Debug("namespace gone before it was read", "netns", ns.Name, "err", err)
			continue
		case err != nil:
			unreadable[ns.ID] = true
			errs = append(errs, fmt.Errorf("netns %q: %w", ns.Name, err))
			continue
		}
		read++
		finals = append(finals, f...)
	}
	if read == 0 && len(errs) > 0 {
		if err := errors.Join(errs...); xfrmAbsent(err) {
			return fmt.Errorf("%w: %w", ErrNoData, err)
		}
		return errors.Join(errs...)
	}
	for _, p := range c.peers.update(finals, unreadable, now) {
		p.emit(ch)
	}
	c.emitPerSA(ch, rows, now)
	return errors.Join(errs...)
}

// readNamespace reads one namespace's SAs into the books and the per-SA
// rows, sends its per-namespace series, and returns the final counters of
// the SAs its listener saw removed. Those are taken after the dump: an SA
// removed in between is in both, and the books hold its final counters
// back until it is gone.
func (c *saCollector) readNamespace(ch chan<- prometheus.Metric, order int, ns netnsx.Namespace, rows *firstN[saRow]) ([]finalSA, error) {
	snap, err := c.read(ns)
	if err != nil {
		return nil, err
	}
	defer snap.Close()
	var byDir [dirOut + 1]int
	larval := 0
	var row saRow // one, reused: offer copies it
	err = snap.Each(func(sa *xfrmnl.SA) error {
		if isLarval(sa) {
			larval++
			return nil
		}
		peer := classify(ns.Name, sa, snap.Local)
		byDir[peer.dir]++
		// SAs seen before a dump fails half-way are still true; the
		// ones not seen are kept as they were (unreadable).
		c.peers.see(identOf(ns.ID, sa), peer, totalsOf(sa))
		// The SAs of a namespace whose dump fails half-way may keep
		// their rows: what they show is still true.
		row.key = keyOf(order, sa)
		switch {
		case !c.perSA, rows.full() && compareRows(&row, rows.last()) >= 0:
			rows.dropped++ // nothing copied for an SA beyond the cap
		default:
			row.sa, row.peer = *sa, peer
			rows.offer(&row)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var finals []finalSA
	if c.finals != nil {
		for _, sa := range c.finals(ns.ID) {
			if !isLarval(&sa) {
				finals = append(finals, finalSA{id: identOf(ns.ID, &sa), peer: classify(ns.Name, &sa, snap.Local), totals: totalsOf(&sa)})
			}
		}
	}
	ch <- newConstMetric(sadEntriesDesc, prometheus.GaugeValue, float64(snap.SAD.Count), ns.Name)
	for dir, n := range byDir {
		if d := saDirection(dir); d != dirUnknown || n > 0 {
			ch <- newConstMetric(saCountDesc, prometheus.GaugeValue, float64(n), ns.Name, d.String())
		}
	}
	ch <- newConstMetric(saLarvalDesc, prometheus.GaugeValue, float64(larval), ns.Name)
	return finals, nil
}

// emitPerSA sends the per-SA series of the rows kept, in a stable order,
// and ipsec_sa_omitted for the rest.
func (c *saCollector) emitPerSA(ch chan<- prometheus.Metric, rows *firstN[saRow], now time.Time) {
	kept := rows.sorted()
	omitted := rows.dropped
	seen := map[string]bool{}
	for i := range kept {
		labels := saLabelValues(&kept[i])
		key := strings.Join(labels, "\x00")
		if seen[key] {
			// Same identity labels (e.g. SAs differing only in mark):
			// a second series would break the scrape.
			c.logger.Debug("SA with a duplicate identity left out", "labels", strings.Join(labels, ","))
			omitted++
			continue
		}
		seen[key] = true
		emitSA(ch, &kept[i].sa, labels, now)
	}
	ch <- newConstMetric(saOmittedDesc, prometheus.GaugeValue, float64(omitted))
}

// saLabelValues are an SA's identity labels, in saLabels order.
func saLabelValues(r *saRow) []string {
	sa := &r.sa
	l := r.peer.labels()
	return []string{r.peer.netns, fmt.Sprintf("0x%08x", sa.SPI), sa.Src.Unmap().String(), sa.Dst.Unmap().String(),
		xfrmnl.ProtoName(sa.Proto), xfrmnl.ModeName(sa.Mode), strconv.FormatUint(uint64(sa.Reqid), 10), l[2], l[1]}
}

func emitSA(ch chan<- prometheus.Metric, sa *xfrmnl.SA, l []string, now time.Time) {
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
