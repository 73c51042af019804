package collector

import (
	"testing"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// The sa collector (with policy, events and xfrm_stat beside it) against
// real SAs in the lab VM: every number is compared with the kernel's own view
// (Debian's `ip -s xfrm state`), in named namespaces found through
// /run/netns.

// TestLabSATraffic: after pings over a v4 transport AEAD pair and a v6
// tunnel CBC+HMAC pair, every SA's counters equal ip's, the direction,
// peer and per-peer sums are right, and the add events match the SAs and
// policies the scenario installed.
func TestLabSATraffic(t *testing.T) {
	scenario.RequireVM(t)
	p := scenario.NewPair(t)
	b := newStateCollectors(t, p.A.Netns, p.B.Netns)
	e4 := p.ESP(t, scenario.ESPOptions{})
	e6 := p.ESP(t, scenario.ESPOptions{IPv6: true, Tunnel: true, Cipher: scenario.CBCHMAC})
	if got := p.A.Ping(t, e4.BAddr, 5); got != 5 {
		t.Fatalf("v4: %d of 5 replies", got)
	}
	if got := p.A.Ping(t, e6.BAddr, 3); got != 3 {
		t.Fatalf("v6: %d of 3 replies", got)
	}
	// Each namespace's listener reads its own socket on its own goroutine:
	// B's last event says nothing of how far A's listener has read (on a
	// loaded host it lagged by seconds). A policy is the last event of
	// each namespace's stream (ESP adds its SAs first).
	b.waitEvents(t, p.A.Name, "policy_added", 4)
	s := b.waitEvents(t, p.B.Name, "policy_added", 4)
	for _, n := range []*scenario.Netns{p.A.Netns, p.B.Netns} {
		if got := compareWithIP(t, s, n); got != 4 {
			t.Errorf("%s: %d SAs compared, want 4", n.Name, got)
		}
		for ev, want := range map[string]float64{"sa_added": 4, "policy_added": 4, "sa_deleted": 0, "sa_hard_expired": 0} {
			if got := s.get(t, "ipsec_xfrm_events_total", labels("netns", n.Name, "event", ev)); got != want {
				t.Errorf("%s %s: %v, want %v", n.Name, ev, got, want)
			}
		}
		for dir, want := range map[string]float64{"in": 2, "out": 2} {
			if got := s.get(t, "ipsec_sas", labels("netns", n.Name, "direction", dir)); got != want {
				t.Errorf("%s ipsec_sas %s: %v, want %v", n.Name, dir, got, want)
			}
		}
		if got := s.get(t, "ipsec_sad_entries", labels("netns", n.Name)); got != 4 {
			t.Errorf("%s SAD entries %v", n.Name, got)
		}
		for dir, want := range map[string]float64{"in": 2, "out": 2, "fwd": 0} {
			if got := s.get(t, "ipsec_policies", labels("netns", n.Name, "direction", dir)); got != want {
				t.Errorf("%s ipsec_policies %s: %v, want %v", n.Name, dir, got, want)
			}
		}
	}
	// A->B: 5 pings are 5 packets on A's outbound SA.
	ab := labels("netns", p.A.Name, "spi", spiHex(e4.AB.SPI))
	if d := s.get(t, "ipsec_sa_packets_total", ab); d != 5 {
		t.Errorf("A's outbound v4 SA: %v packets, want 5", d)
	}
	checkLabel := func(netns string, spi uint32, key, want string) {
		t.Helper()
		if _, ok := s.find(t, "ipsec_sa_info", labels("netns", netns, "spi", spiHex(spi), key, want)); !ok {
			t.Errorf("%s spi %s: no ipsec_sa_info with %s=%q", netns, spiHex(spi), key, want)
		}
	}
	checkLabel(p.A.Name, e4.AB.SPI, "direction", "out")
	checkLabel(p.A.Name, e4.AB.SPI, "peer", p.B.IPv4.String())
	checkLabel(p.B.Name, e4.AB.SPI, "direction", "in")
	checkLabel(p.B.Name, e4.AB.SPI, "peer", p.A.IPv4.String())
	checkLabel(p.A.Name, e4.AB.SPI, "aead", "rfc4106(gcm(aes))")
	checkLabel(p.A.Name, e6.AB.SPI, "crypt", "cbc(aes)")
	checkLabel(p.A.Name, e6.AB.SPI, "auth", "hmac(sha256)")
	checkLabel(p.A.Name, e6.AB.SPI, "mode", "tunnel")
	// Per-peer sums are the sums of the per-SA series.
	for _, c := range []struct {
		netns, peer, dir string
		spi              uint32
	}{
		{p.A.Name, p.B.IPv4.String(), "out", e4.AB.SPI}, {p.A.Name, p.B.IPv6.String(), "out", e6.AB.SPI},
		{p.B.Name, p.A.IPv4.String(), "in", e4.AB.SPI}, {p.B.Name, p.A.IPv6.String(), "in", e6.AB.SPI},
	} {
		peer := labels("netns", c.netns, "peer", c.peer, "direction", c.dir)
		sa := labels("netns", c.netns, "spi", spiHex(c.spi))
		for _, m := range []string{"bytes_total", "packets_total"} {
			if pv, sv := s.get(t, "ipsec_peer_"+m, peer), s.get(t, "ipsec_sa_"+m, sa); pv != sv || pv == 0 {
				t.Errorf("%s peer %s %s %s: %v, the one SA has %v", c.netns, c.peer, c.dir, m, pv, sv)
			}
		}
	}
	// Sequence number use moved off zero, ratios stay within [0, 1].
	if r := s.get(t, "ipsec_sa_sequence_used_ratio", ab); r <= 0 || r > 1e-6 {
		t.Errorf("sequence used ratio %v", r)
	}
	// The kernel's last-use time (XFRMA_LASTUSED): 6.1 keeps it only for
	// IPv6 route optimization, never for ESP; 6.12 for every SA.
	_, ok := s.find(t, "ipsec_sa_last_used_timestamp_seconds", ab)
	if want := scenario.Kernel() != "6.1"; ok != want {
		t.Errorf("last-used time of a used SA exported: %v, want %v on %s", ok, want, scenario.Kernel())
	}
	t.Logf("kernel %s: A's v4 out SA %v packets %v bytes; B's v6 in SA %v packets %v bytes",
		scenario.Kernel(), s.get(t, "ipsec_sa_packets_total", ab), s.get(t, "ipsec_sa_bytes_total", ab),
		s.get(t, "ipsec_sa_packets_total", labels("netns", p.B.Name, "spi", spiHex(e6.AB.SPI))),
		s.get(t, "ipsec_sa_bytes_total", labels("netns", p.B.Name, "spi", spiHex(e6.AB.SPI))))
}
