package collector

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ipsec-exporter/ipsec_exporter/internal/vici"
)

type fakeVici struct {
	snap *vici.Snapshot
	err  error
}

func (f fakeVici) Read(context.Context) (*vici.Snapshot, error) { return f.snap, f.err }

// viciFixture: one site-to-site connection up with a child rekeying
// (old and new child SA), one down, one road-warrior responder.
func viciFixture() *vici.Snapshot {
	return &vici.Snapshot{
		Daemon: "charon", Version: "5.9.8",
		Conns: []vici.Conn{
			{Name: "site-b", Version: "IKEv2", LocalAddrs: []string{"10.0.0.1"}, RemoteAddrs: []string{"10.0.0.2"}, Children: []string{"net"}},
			{Name: "site-c", Version: "IKEv2", LocalAddrs: []string{"10.0.0.1"}, RemoteAddrs: []string{"10.0.0.3", "gw.example.net"}, Children: []string{"net", "v6"}},
			{Name: "roadwarrior", Version: "IKEv1/2", LocalAddrs: []string{"%any"}, RemoteAddrs: []string{"%any"}, Children: []string{"rw"}},
		},
		IKESAs: []vici.IKESA{{
			Conn: "site-b", UniqueID: "7", Version: "2", State: "ESTABLISHED",
			Local: netip.MustParseAddr("10.0.0.1"), Remote: netip.MustParseAddr("10.0.0.2"),
			Since: 100 * time.Second, HasSince: true, RekeyIn: 3600 * time.Second, HasRekey: true,
			Children: []vici.ChildSA{
				{Name: "net", UniqueID: "12", State: "INSTALLED", Mode: "TUNNEL", Protocol: "ESP", SPIIn: 0xc1234567, SPIOut: 0x0000abcd,
					InstalledAgo: 10 * time.Second, HasInstalled: true, RekeyIn: 50 * time.Second, HasRekey: true, ExpiresIn: 60 * time.Second, HasExpiry: true},
				{Name: "net", UniqueID: "11", State: "REKEYED", Mode: "TUNNEL", Protocol: "ESP", SPIIn: 0xc0000001, SPIOut: 0xc0000002,
					InstalledAgo: 70 * time.Second, HasInstalled: true},
			},
		}, {
			Conn: "site-c", UniqueID: "9", Version: "2", State: "CONNECTING",
			Local: netip.MustParseAddr("10.0.0.1"), Remote: netip.MustParseAddr("10.0.0.3"),
		}},
	}
}

func TestViciCollector(t *testing.T) {
	c := newViciCollector(slog.New(slog.DiscardHandler), fakeVici{snap: viciFixture()}, 0)
	c.now = func() time.Time { return time.Unix(1_000_000, 0) }
	var peers []netip.Addr
	c.peers = func(a []netip.Addr) { peers = a }
	want := `
# HELP ipsec_ike_child_sa_expiry_timestamp_seconds When the child SA's hard lifetime ends (the kernel deletes it), as a Unix time (absent: no lifetime).
# TYPE ipsec_ike_child_sa_expiry_timestamp_seconds gauge
ipsec_ike_child_sa_expiry_timestamp_seconds{child="net",connection="site-b",peer="10.0.0.2",uid="12"} 1.00006e+06
# HELP ipsec_ike_child_sa_info A child SA, once per direction with the kernel SA's SPI in the form ipsec_sa_* uses: join with ` + "`* on (spi, direction) group_left (connection, child)`" + ` to read the kernel's counters per configured connection. Always 1.
# TYPE ipsec_ike_child_sa_info gauge
ipsec_ike_child_sa_info{child="net",connection="site-b",direction="in",mode="TUNNEL",peer="10.0.0.2",protocol="ESP",spi="0xc0000001",state="REKEYED",uid="11"} 1
ipsec_ike_child_sa_info{child="net",connection="site-b",direction="in",mode="TUNNEL",peer="10.0.0.2",protocol="ESP",spi="0xc1234567",state="INSTALLED",uid="12"} 1
ipsec_ike_child_sa_info{child="net",connection="site-b",direction="out",mode="TUNNEL",peer="10.0.0.2",protocol="ESP",spi="0x0000abcd",state="INSTALLED",uid="12"} 1
ipsec_ike_child_sa_info{child="net",connection="site-b",direction="out",mode="TUNNEL",peer="10.0.0.2",protocol="ESP",spi="0xc0000002",state="REKEYED",uid="11"} 1
# HELP ipsec_ike_child_sa_installed_timestamp_seconds When the child SA was installed in the kernel, as a Unix time.
# TYPE ipsec_ike_child_sa_installed_timestamp_seconds gauge
ipsec_ike_child_sa_installed_timestamp_seconds{child="net",connection="site-b",peer="10.0.0.2",uid="11"} 999930
ipsec_ike_child_sa_installed_timestamp_seconds{child="net",connection="site-b",peer="10.0.0.2",uid="12"} 999990
# HELP ipsec_ike_child_sa_rekey_timestamp_seconds When the child SA is scheduled to be rekeyed, as a Unix time (absent: none scheduled).
# TYPE ipsec_ike_child_sa_rekey_timestamp_seconds gauge
ipsec_ike_child_sa_rekey_timestamp_seconds{child="net",connection="site-b",peer="10.0.0.2",uid="12"} 1.00005e+06
# HELP ipsec_ike_connection_children_installed Child SAs of the configured connection's child in state INSTALLED (in the kernel). 0: the tunnel carries nothing.
# TYPE ipsec_ike_connection_children_installed gauge
ipsec_ike_connection_children_installed{child="net",connection="site-b"} 1
ipsec_ike_connection_children_installed{child="net",connection="site-c"} 0
ipsec_ike_connection_children_installed{child="rw",connection="roadwarrior"} 0
ipsec_ike_connection_children_installed{child="v6",connection="site-c"} 0
# HELP ipsec_ike_connection_established IKE SAs of the configured connection in state ESTABLISHED. 0: the connection is configured but not up.
# TYPE ipsec_ike_connection_established gauge
ipsec_ike_connection_established{connection="roadwarrior"} 0
ipsec_ike_connection_established{connection="site-b"} 1
ipsec_ike_connection_established{connection="site-c"} 0
# HELP ipsec_ike_connection_info A configured connection with its IKE version and configured addresses (comma-separated, as configured: %any accepts any peer). Always 1.
# TYPE ipsec_ike_connection_info gauge
ipsec_ike_connection_info{connection="roadwarrior",local_addrs="%any",remote_addrs="%any",version="IKEv1/2"} 1
ipsec_ike_connection_info{connection="site-b",local_addrs="10.0.0.1",remote_addrs="10.0.0.2",version="IKEv2"} 1
ipsec_ike_connection_info{connection="site-c",local_addrs="10.0.0.1",remote_addrs="10.0.0.3,gw.example.net",version="IKEv2"} 1
# HELP ipsec_ike_daemon_info The IKE daemon's name and version, as it reports them. Always 1.
# TYPE ipsec_ike_daemon_info gauge
ipsec_ike_daemon_info{daemon="charon",version="5.9.8"} 1
# HELP ipsec_ike_daemon_up Whether the IKE daemon answered on its VICI socket in this scrape (1) or could not be reached (0: not running, socket missing or refused, or too slow).
# TYPE ipsec_ike_daemon_up gauge
ipsec_ike_daemon_up 1
# HELP ipsec_ike_sa_established_timestamp_seconds When the IKE SA was established, as a Unix time (absent until it is).
# TYPE ipsec_ike_sa_established_timestamp_seconds gauge
ipsec_ike_sa_established_timestamp_seconds{connection="site-b",peer="10.0.0.2",uid="7"} 999900
# HELP ipsec_ike_sa_info An IKE SA with its state (CONNECTING, ESTABLISHED, REKEYING, DELETING, ...), IKE version and local address; peer is the remote IKE address. Always 1.
# TYPE ipsec_ike_sa_info gauge
ipsec_ike_sa_info{connection="site-b",local="10.0.0.1",peer="10.0.0.2",state="ESTABLISHED",uid="7",version="2"} 1
ipsec_ike_sa_info{connection="site-c",local="10.0.0.1",peer="10.0.0.3",state="CONNECTING",uid="9",version="2"} 1
# HELP ipsec_ike_sa_rekey_timestamp_seconds When the IKE SA is scheduled to be rekeyed, as a Unix time (absent: no rekey scheduled).
# TYPE ipsec_ike_sa_rekey_timestamp_seconds gauge
ipsec_ike_sa_rekey_timestamp_seconds{connection="site-b",peer="10.0.0.2",uid="7"} 1.0036e+06
# HELP ipsec_ike_sas_omitted IKE SAs seen in this scrape that got no per-SA series (--collector.vici.max-sas), nor did their child SAs. They still count in ipsec_ike_connection_*.
# TYPE ipsec_ike_sas_omitted gauge
ipsec_ike_sas_omitted 0
`
	if err := testutil.GatherAndCompare(viciRegistry(t, c), strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	// Configured concrete addresses and the IKE SAs' peers; never %any or
	// a DNS name.
	if got := fmt.Sprint(peers); got != "[10.0.0.2 10.0.0.3]" {
		t.Errorf("peers published %s, want [10.0.0.2 10.0.0.3]", got)
	}
}

// TestViciCollectorCap: past --collector.vici.max-sas, IKE SAs and their
// children get no series but are counted; the connection counts stay whole.
func TestViciCollectorCap(t *testing.T) {
	c := newViciCollector(slog.New(slog.DiscardHandler), fakeVici{snap: viciFixture()}, 1)
	s := gatherSamples(t, c)
	if got := s.get(t, "ipsec_ike_sas_omitted", nil); got != 1 {
		t.Errorf("ipsec_ike_sas_omitted %v, want 1", got)
	}
	if _, ok := s.find(t, "ipsec_ike_sa_info", labels("connection", "site-c")); ok {
		t.Errorf("the IKE SA past the cap has series")
	}
	if got := s.get(t, "ipsec_ike_connection_established", labels("connection", "site-b")); got != 1 {
		t.Errorf("site-b established %v, want 1", got)
	}
}

// TestViciCollectorUnreachable: a daemon that is down is ipsec_ike_daemon_up
// 0 and no collector failure; an answer that cannot be read is a failure.
func TestViciCollectorUnreachable(t *testing.T) {
	c := newViciCollector(slog.New(slog.DiscardHandler), fakeVici{err: fmt.Errorf("%w: dial: no such file", vici.ErrUnreachable)}, 0)
	ch := make(chan prometheus.Metric, 10)
	if err := c.Update(ch); err != nil {
		t.Fatalf("Update with the daemon down: %v, want no error", err)
	}
	close(ch)
	var n int
	for m := range ch {
		n++
		if !strings.Contains(m.Desc().String(), "ipsec_ike_daemon_up") {
			t.Errorf("unexpected series %s with the daemon down", m.Desc())
		}
	}
	if n != 1 {
		t.Errorf("%d series with the daemon down, want ipsec_ike_daemon_up only", n)
	}
	c = newViciCollector(slog.New(slog.DiscardHandler), fakeVici{err: fmt.Errorf("list-sas: bad message")}, 0)
	if err := c.Update(make(chan prometheus.Metric, 10)); err == nil {
		t.Errorf("Update with an unreadable answer: no error")
	}
}

// TestViciCollectorRealSocket: the real client against a socket nobody
// listens on is "unreachable", quickly.
func TestViciCollectorRealSocket(t *testing.T) {
	client := &vici.Client{Socket: t.TempDir() + "/charon.vici", Timeout: time.Second}
	c := newViciCollector(slog.New(slog.DiscardHandler), client, 0)
	s := gatherSamples(t, c)
	if got := s.get(t, "ipsec_ike_daemon_up", nil); got != 0 {
		t.Errorf("ipsec_ike_daemon_up %v with no socket, want 0", got)
	}
}

func viciRegistry(t *testing.T, c Collector) prometheus.Gatherer {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(adapt(t, c))
	return reg
}
