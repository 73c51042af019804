package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipsec-exporter/ipsec_exporter/internal/vici"
)

// The vici collector: what only the IKE daemon knows, read from strongSwan's
// VICI socket at scrape time (internal/vici): whether each configured
// connection has an IKE SA and its child SAs, the IKE SAs' state and timers,
// and the child SAs' SPIs, which join them to the kernel's per-SA series
// (ipsec_sa_*{spi}) so that the kernel's counters can be read per configured
// connection. Off by default: it needs charon's socket. Libreswan has no
// stable API; its users have the kernel view (see README).

const viciDefaultTimeout = 5 * time.Second

var (
	viciSocket = kingpin.Flag("collector.vici.socket",
		"Path of strongSwan's VICI socket (charon's `charon.plugins.vici.socket`).").
		Default(vici.DefaultSocket).String()
	viciTimeout = kingpin.Flag("collector.vici.timeout",
		"How long one exchange with the daemon may take before it counts as unreachable (0: the default).").
		Default(viciDefaultTimeout.String()).Duration()
	viciMaxSAs = kingpin.Flag("collector.vici.max-sas",
		"Maximum number of IKE SAs per scrape that get per-SA series (with their child SAs); the rest are counted in ipsec_ike_sas_omitted. 0: no limit.").
		Default("1000").Int()
)

var (
	ikeDaemonUpDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "ike", "daemon_up"),
		"Whether the IKE daemon answered on its VICI socket in this scrape (1) or could not be reached (0: not running, socket missing or refused, or too slow).",
		nil, nil)
	ikeDaemonInfoDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "ike", "daemon_info"),
		"The IKE daemon's name and version, as it reports them. Always 1.",
		[]string{"daemon", "version"}, nil)
	ikeConnInfoDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "ike", "connection_info"),
		"A configured connection with its IKE version and configured addresses (comma-separated, as configured: %any accepts any peer). Always 1.",
		[]string{"connection", "version", "local_addrs", "remote_addrs"}, nil)
	ikeConnEstablishedDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "ike", "connection_established"),
		"IKE SAs of the configured connection in state ESTABLISHED. 0: the connection is configured but not up.",
		[]string{"connection"}, nil)
	ikeConnChildrenDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "ike", "connection_children_installed"),
		"Child SAs of the configured connection's child in state INSTALLED (in the kernel). 0: the tunnel carries nothing.",
		[]string{"connection", "child"}, nil)
	ikeSAsOmittedDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "ike", "sas_omitted"),
		"IKE SAs seen in this scrape that got no per-SA series (--collector.vici.max-sas), nor did their child SAs. They still count in ipsec_ike_connection_*.",
		nil, nil)

	ikeSALabels   = []string{"connection", "uid", "peer"}
	ikeSAInfoDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "ike", "sa_info"),
		"An IKE SA with its state (CONNECTING, ESTABLISHED, REKEYING, DELETING, ...), IKE version and local address; peer is the remote IKE address. Always 1.",
		append(append([]string{}, ikeSALabels...), "state", "version", "local"), nil)
	ikeSAEstablishedDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "ike", "sa_established_timestamp_seconds"),
		"When the IKE SA was established, as a Unix time (absent until it is).",
		ikeSALabels, nil)
	ikeSARekeyDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "ike", "sa_rekey_timestamp_seconds"),
		"When the IKE SA is scheduled to be rekeyed, as a Unix time (absent: no rekey scheduled).",
		ikeSALabels, nil)
	ikeSAReauthDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "ike", "sa_reauth_timestamp_seconds"),
		"When the IKE SA is scheduled to be reauthenticated, as a Unix time (absent: no reauthentication scheduled).",
		ikeSALabels, nil)

	ikeChildLabels   = []string{"connection", "child", "uid", "peer"}
	ikeChildInfoDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "ike", "child_sa_info"),
		"A child SA, once per direction with the kernel SA's SPI in the form ipsec_sa_* uses: join with `* on (spi, direction) group_left (connection, child)` to read the kernel's counters per configured connection. Always 1.",
		append(append([]string{}, ikeChildLabels...), "state", "mode", "protocol", "direction", "spi"), nil)
	ikeChildInstalledDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "ike", "child_sa_installed_timestamp_seconds"),
		"When the child SA was installed in the kernel, as a Unix time.",
		ikeChildLabels, nil)
	ikeChildRekeyDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "ike", "child_sa_rekey_timestamp_seconds"),
		"When the child SA is scheduled to be rekeyed, as a Unix time (absent: none scheduled).",
		ikeChildLabels, nil)
	ikeChildExpiryDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "ike", "child_sa_expiry_timestamp_seconds"),
		"When the child SA's hard lifetime ends (the kernel deletes it), as a Unix time (absent: no lifetime).",
		ikeChildLabels, nil)
)

func init() {
	RegisterFlagCheck("collector.vici.timeout", func() error {
		if *viciTimeout < 0 || *viciTimeout > time.Minute {
			return fmt.Errorf("must be between 0 (the default, %s) and 1m, got %s", viciDefaultTimeout, *viciTimeout)
		}
		return nil
	})
	RegisterFlagCheck("collector.vici.max-sas", func() error {
		if *viciMaxSAs < 0 {
			return fmt.Errorf("must be 0 (no limit) or more, got %d", *viciMaxSAs)
		}
		return nil
	})
	registerCollector("vici", false, func(logger *slog.Logger) (Collector, error) {
		timeout := *viciTimeout
		if timeout == 0 {
			timeout = viciDefaultTimeout
		}
		c := newViciCollector(logger, &vici.Client{Socket: *viciSocket, Timeout: timeout}, *viciMaxSAs)
		// The configured connections' peers are always known peers of the
		// node (internal/peers): plaintext to one whose tunnel died is
		// unprotected traffic even after the daemon removed its SAs and
		// policies.
		tracker, err := knownPeers.acquire(logger)
		if err != nil {
			return nil, err
		}
		c.peers = func(addrs []netip.Addr) { tracker.SetConfigured("vici", addrs) }
		c.release = func() error { return knownPeers.release() }
		// The configured peers are known before the first scrape, so that
		// plaintext to a peer whose tunnel never came up is flagged too.
		if snap, err := c.client.Read(context.Background()); err == nil {
			c.publishPeers(snap)
		} else {
			logger.Info("IKE daemon not reachable at start-up; will retry at every scrape", "socket", *viciSocket, "err", err)
		}
		return c, nil
	})
}

// viciReader is what the collector needs from internal/vici.
type viciReader interface {
	Read(ctx context.Context) (*vici.Snapshot, error)
}

type viciCollector struct {
	logger *slog.Logger
	client viciReader
	max    int
	now    func() time.Time

	// peers, when set, receives the remote addresses of the configured
	// connections and of the IKE SAs after each read (the known-peer
	// tracker: they stay known while configured).
	peers func([]netip.Addr)

	release func() error // lets go of the tracker

	mu          sync.Mutex
	unreachable bool         // logged once per outage
	published   []netip.Addr // what c.peers last got
}

// Close lets go of the known-peer tracker.
func (c *viciCollector) Close() error {
	if c.release == nil {
		return nil
	}
	return c.release()
}

func newViciCollector(logger *slog.Logger, client viciReader, max int) *viciCollector {
	return &viciCollector{logger: logger, client: client, max: max, now: time.Now}
}

func (c *viciCollector) Update(ch chan<- prometheus.Metric) error {
	snap, err := c.client.Read(context.Background())
	if errors.Is(err, vici.ErrUnreachable) {
		// A daemon that is down is a signal, not a failing collector.
		c.logOutage(err)
		ch <- newConstMetric(ikeDaemonUpDesc, prometheus.GaugeValue, 0)
		return nil
	}
	ch <- newConstMetric(ikeDaemonUpDesc, prometheus.GaugeValue, 1)
	if err != nil {
		return fmt.Errorf("reading the IKE daemon: %w", err)
	}
	c.logOutage(nil)
	c.publishPeers(snap)
	c.send(ch, ikeDaemonInfoDesc, 1, snap.Daemon, snap.Version)
	c.connections(ch, snap)
	c.sas(ch, snap)
	return nil
}

// logOutage logs the start and the end of an outage once each.
func (c *viciCollector) logOutage(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err != nil && !c.unreachable:
		c.logger.Warn("IKE daemon unreachable", "err", err)
	case err == nil && c.unreachable:
		c.logger.Info("IKE daemon reachable again")
	}
	c.unreachable = err != nil
}

func (c *viciCollector) publishPeers(snap *vici.Snapshot) {
	if c.peers == nil {
		return
	}
	seen := map[netip.Addr]bool{}
	var addrs []netip.Addr
	add := func(a netip.Addr) {
		if a.IsValid() && !a.IsUnspecified() && !seen[a] {
			seen[a] = true
			addrs = append(addrs, a)
		}
	}
	for _, conn := range snap.Conns {
		for _, a := range conn.RemotePeers() {
			add(a)
		}
	}
	for _, sa := range snap.IKESAs {
		add(sa.Remote)
	}
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	// Only a change is news for the tracker (it re-publishes the node's
	// peers to the wire and verdict maps).
	c.mu.Lock()
	changed := !slices.Equal(addrs, c.published)
	c.published = addrs
	c.mu.Unlock()
	if changed {
		c.peers(addrs)
	}
}

// connections sends the configured connections and how many of their IKE
// and child SAs are up.
func (c *viciCollector) connections(ch chan<- prometheus.Metric, snap *vici.Snapshot) {
	established := map[string]int{}
	installed := map[[2]string]int{}
	for _, sa := range snap.IKESAs {
		if sa.State == "ESTABLISHED" {
			established[sa.Conn]++
		}
		for _, child := range sa.Children {
			if child.State == "INSTALLED" {
				installed[[2]string{sa.Conn, child.Name}]++
			}
		}
	}
	for _, conn := range snap.Conns {
		c.send(ch, ikeConnInfoDesc, 1, conn.Name, conn.Version, strings.Join(conn.LocalAddrs, ","), strings.Join(conn.RemoteAddrs, ","))
		c.send(ch, ikeConnEstablishedDesc, float64(established[conn.Name]), conn.Name)
		for _, child := range conn.Children {
			c.send(ch, ikeConnChildrenDesc, float64(installed[[2]string{conn.Name, child}]), conn.Name, child)
		}
	}
}

// sas sends the per-SA series of the first max IKE SAs and their children.
func (c *viciCollector) sas(ch chan<- prometheus.Metric, snap *vici.Snapshot) {
	now := c.now()
	at := func(d time.Duration) float64 { return float64(now.Add(d).Unix()) }
	omitted := 0
	for i, sa := range snap.IKESAs {
		if c.max > 0 && i >= c.max {
			omitted++
			continue
		}
		peer := addrLabel(sa.Remote)
		id := []string{sa.Conn, sa.UniqueID, peer}
		c.send(ch, ikeSAInfoDesc, 1, append(id, sa.State, sa.Version, addrLabel(sa.Local))...)
		if sa.HasSince {
			c.send(ch, ikeSAEstablishedDesc, at(-sa.Since), id...)
		}
		if sa.HasRekey {
			c.send(ch, ikeSARekeyDesc, at(sa.RekeyIn), id...)
		}
		if sa.HasReauth {
			c.send(ch, ikeSAReauthDesc, at(sa.ReauthIn), id...)
		}
		for _, child := range sa.Children {
			cid := []string{sa.Conn, child.Name, child.UniqueID, peer}
			for _, dir := range []struct {
				name string
				spi  uint32
			}{{"in", child.SPIIn}, {"out", child.SPIOut}} {
				c.send(ch, ikeChildInfoDesc, 1, append(cid, child.State, child.Mode, child.Protocol, dir.name, fmt.Sprintf("0x%08x", dir.spi))...)
			}
			if child.HasInstalled {
				c.send(ch, ikeChildInstalledDesc, at(-child.InstalledAgo), cid...)
			}
			if child.HasRekey {
				c.send(ch, ikeChildRekeyDesc, at(child.RekeyIn), cid...)
			}
			if child.HasExpiry {
				c.send(ch, ikeChildExpiryDesc, at(child.ExpiresIn), cid...)
			}
		}
	}
	ch <- newConstMetric(ikeSAsOmittedDesc, prometheus.GaugeValue, float64(omitted))
}

// send sends one gauge. Label values come from the daemon's configuration
// (connection names are the operator's): newConstMetric repairs invalid
// UTF-8.
func (c *viciCollector) send(ch chan<- prometheus.Metric, desc *prometheus.Desc, v float64, labels ...string) {
	ch <- newConstMetric(desc, prometheus.GaugeValue, v, labels...)
}

func addrLabel(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
