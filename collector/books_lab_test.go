package collector

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// The kernel-books collectors against real SAs in the lab VM: every number
// is compared with the kernel's own view (Debian's `ip -s xfrm state`, and
// /proc/net/xfrm_stat read independently by lab/scenario), in named
// namespaces found through /run/netns.

type books struct {
	sa     *saCollector
	policy *policyCollector
	stat   *xfrmStatCollector
	events *eventsCollector
}

func newBooks(t *testing.T, ns ...*scenario.Netns) *books {
	t.Helper()
	targets := labTargets(ns...)
	registry := newListenerRegistry()
	b := &books{
		sa:     newSACollector(booksLogger(), targets, readSAs, true, 0),
		policy: &policyCollector{logger: booksLogger(), targets: targets, read: readPolicies},
		stat:   &xfrmStatCollector{logger: booksLogger(), targets: targets, read: readXfrmStat},
		events: &eventsCollector{logger: booksLogger(), targets: targets, registry: registry},
	}
	b.sa.registry = registry
	if _, err := b.events.sync(); err != nil {
		t.Fatalf("starting listeners: %v", err)
	}
	t.Cleanup(func() { _ = b.events.Close(); _ = b.sa.Close() })
	return b
}

func (b *books) scrape(t *testing.T) samples {
	t.Helper()
	return gatherSamples(t, b.sa, b.policy, b.stat, b.events)
}

// waitEvents scrapes until the event counter reaches want (events arrive
// asynchronously) and returns the last scrape.
func (b *books) waitEvents(t *testing.T, netns, event string, want float64) samples {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := b.scrape(t)
		got := s.get(t, "ipsec_xfrm_events_total", labels("netns", netns, "event", event))
		if got >= want || time.Now().After(deadline) {
			if got != want {
				t.Errorf("%s %s events: %v, want %v", netns, event, got, want)
			}
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLabBooksTraffic: after pings over a v4 transport AEAD pair and a v6
// tunnel CBC+HMAC pair, every SA's counters equal ip's, the direction,
// peer and per-peer sums are right, and the add events match the SAs and
// policies the scenario installed.
func TestLabBooksTraffic(t *testing.T) {
	scenario.RequireVM(t)
	p := scenario.NewPair(t)
	b := newBooks(t, p.A.Netns, p.B.Netns)
	e4 := p.ESP(t, scenario.ESPOptions{})
	e6 := p.ESP(t, scenario.ESPOptions{IPv6: true, Tunnel: true, Cipher: scenario.CBCHMAC})
	if got := p.A.Ping(t, e4.BAddr, 5); got != 5 {
		t.Fatalf("v4: %d of 5 replies", got)
	}
	if got := p.A.Ping(t, e6.BAddr, 3); got != 3 {
		t.Fatalf("v6: %d of 3 replies", got)
	}
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

// TestLabBooksFaults provokes each failure the scenario offers and checks
// the MIB delta the collector reports against the scenario's own reading of
// /proc/net/xfrm_stat and against the count the fault must cause, and the
// per-SA counters against ip.
func TestLabBooksFaults(t *testing.T) {
	scenario.RequireVM(t)
	const n = 4
	for _, c := range []struct {
		name    string
		opts    scenario.ESPOptions
		replay  bool
		onB     bool // where the counter moves
		counter string
	}{
		{name: "wrong-key", opts: scenario.ESPOptions{WrongKey: true}, onB: true, counter: "XfrmInStateProtoError"},
		{name: "wrong-hmac", opts: scenario.ESPOptions{WrongKey: true, Cipher: scenario.CBCHMAC}, onB: true, counter: "XfrmInStateProtoError"},
		{name: "no-inbound-sa", opts: scenario.ESPOptions{NoInboundSA: true}, onB: true, counter: "XfrmInNoStates"},
		{name: "no-outbound-sa", opts: scenario.ESPOptions{NoOutboundSA: true}, counter: "XfrmOutNoStates"},
		{name: "replay", replay: true, onB: true, counter: "XfrmInStateSeqError"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := scenario.NewPair(t)
			b := newBooks(t, p.A.Netns, p.B.Netns)
			e := p.ESP(t, c.opts)
			at := p.A.Netns
			if c.onB {
				at = p.B.Netns
			}
			kernelBefore := at.XfrmStat(t)
			before := b.scrape(t)
			want := uint64(n)
			if c.replay {
				want = uint64(p.Replay(t, e, n))
			} else {
				p.A.PingTimeout(t, e.BAddr, n, 300*time.Millisecond)
			}
			after := b.scrape(t)
			kernel := at.XfrmStat(t).Sub(kernelBefore)
			got := mibDelta(t, before, after, at.Name)
			if got.String() != kernel.String() {
				t.Errorf("MIB delta in %s: exporter %v, /proc/net/xfrm_stat %v", at.Name, got, kernel)
			}
			if got[c.counter] != want {
				t.Errorf("%s +%d, want +%d (delta %v)", c.counter, got[c.counter], want, got)
			}
			for _, ns := range []*scenario.Netns{p.A.Netns, p.B.Netns} {
				compareWithIP(t, after, ns)
			}
			sa := labels("netns", p.B.Name, "spi", spiHex(e.AB.SPI))
			switch c.name {
			case "wrong-key", "wrong-hmac":
				if v := after.get(t, "ipsec_sa_integrity_failures_total", sa); v != n {
					t.Errorf("B's SA integrity failures %v, want %d", v, n)
				}
				if v := after.get(t, "ipsec_peer_integrity_failures_total", labels("netns", p.B.Name, "direction", "in", "peer", p.A.IPv4.String())); v != n {
					t.Errorf("B's peer integrity failures %v, want %d", v, n)
				}
			case "replay":
				if v := after.get(t, "ipsec_sa_replay_failures_total", labels("netns", p.B.Name, "spi", spiHex(e.AB.SPI), "reason", "duplicate")); v != float64(want) {
					t.Errorf("B's SA replay failures %v, want %d", v, want)
				}
			case "no-outbound-sa":
				// The policy wants an SA that is not there: the kernel
				// asks the (absent) IKE daemon for one.
				b.waitEvents(t, p.A.Name, "acquire", 1)
			}
			t.Logf("kernel %s %s: MIB delta in %s: %v", scenario.Kernel(), c.name, at.Name, got)
		})
	}
}

// TestLabBooksLifecycle installs an A->B SA with a soft limit of 3 packets
// and a hard limit of 6, sends 8 pings through it and checks the lifetime
// ratios on the way, then the soft and hard expiry events, the acquire that
// follows, an update and a delete: each counted exactly once.
func TestLabBooksLifecycle(t *testing.T) {
	scenario.RequireVM(t)
	p := scenario.NewPair(t)
	b := newBooks(t, p.A.Netns, p.B.Netns)
	key := bytes.Repeat([]byte{0x42}, 20)
	const spi = 0x5e7
	state := func() *netlink.XfrmState {
		s := &netlink.XfrmState{
			Src: p.A.IPv4.AsSlice(), Dst: p.B.IPv4.AsSlice(), Proto: netlink.XFRM_PROTO_ESP,
			Mode: netlink.XFRM_MODE_TRANSPORT, Spi: spi, Reqid: spi, ReplayWindow: 32,
			Aead: &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: key, ICVLen: 128},
		}
		s.Limits.PacketSoft, s.Limits.PacketHard = 3, 6
		return s
	}
	scenario.AddSA(t, p.A.Netns, state())
	scenario.AddSA(t, p.B.Netns, state())
	sel := func(a net.IP) *net.IPNet { return &net.IPNet{IP: a, Mask: net.CIDRMask(32, 32)} }
	tmpl := []netlink.XfrmPolicyTmpl{{Src: p.A.IPv4.AsSlice(), Dst: p.B.IPv4.AsSlice(), Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT, Reqid: spi}}
	scenario.AddPolicy(t, p.A.Netns, &netlink.XfrmPolicy{Src: sel(p.A.IPv4.AsSlice()), Dst: sel(p.B.IPv4.AsSlice()), Dir: netlink.XFRM_DIR_OUT, Tmpls: tmpl})
	scenario.AddPolicy(t, p.B.Netns, &netlink.XfrmPolicy{Src: sel(p.A.IPv4.AsSlice()), Dst: sel(p.B.IPv4.AsSlice()), Dir: netlink.XFRM_DIR_IN, Tmpls: tmpl})

	// Replies go back in plaintext (no B->A policy): only A->B uses the SA.
	if got := p.A.Ping(t, p.B.IPv4, 3); got != 3 {
		t.Fatalf("%d of 3 replies", got)
	}
	sa := labels("netns", p.A.Name, "spi", spiHex(spi))
	s := b.scrape(t)
	for lim, want := range map[string]float64{"soft": 1, "hard": 0.5} {
		if got := s.get(t, "ipsec_sa_lifetime_used_ratio", labels("netns", p.A.Name, "spi", spiHex(spi), "limit", lim)); got != want {
			t.Errorf("%s lifetime used %v after 3 of 3/6 packets, want %v", lim, got, want)
		}
	}
	if got := s.get(t, "ipsec_sa_limit_packets", labels("netns", p.A.Name, "spi", spiHex(spi), "limit", "hard")); got != 6 {
		t.Errorf("hard packet limit %v", got)
	}
	kernelBefore := p.A.XfrmStat(t)
	p.A.PingTimeout(t, p.B.IPv4, 5, 300*time.Millisecond)
	s = b.waitEvents(t, p.A.Name, "sa_hard_expired", 1)
	for ev, want := range map[string]float64{"sa_added": 1, "policy_added": 1, "sa_soft_expired": 1, "sa_hard_expired": 1, "sa_deleted": 0} {
		if got := s.get(t, "ipsec_xfrm_events_total", labels("netns", p.A.Name, "event", ev)); got != want {
			t.Errorf("A %s: %v, want %v", ev, got, want)
		}
	}
	if _, ok := s.find(t, "ipsec_sa_packets_total", sa); ok {
		t.Error("hard-expired SA still exported")
	}
	t.Logf("kernel %s: MIB delta in A over the expiry: %v", scenario.Kernel(), p.A.XfrmStat(t).Sub(kernelBefore))
	// The peer's counters keep the expired SA's share: all 6 packets it
	// carried, from the hard-expire notification, though the last scrape
	// that saw the SA saw 3.
	if got := s.get(t, "ipsec_peer_packets_total", labels("netns", p.A.Name, "peer", p.B.IPv4.String(), "direction", "out")); got != 6 {
		t.Errorf("A's peer packets after the SA expired: %v, want 6", got)
	}

	// B: an update and a delete of its copy of the SA.
	upd := state()
	upd.Limits.PacketSoft, upd.Limits.PacketHard = 100, 200
	if err := p.B.NL.XfrmStateUpdate(upd); err != nil {
		t.Fatal(err)
	}
	if err := p.B.NL.XfrmStateDel(upd); err != nil {
		t.Fatal(err)
	}
	s = b.waitEvents(t, p.B.Name, "sa_deleted", 1)
	// B's copy has the same limits and counted the 6 packets that got
	// through: soft-expired too, but never hard.
	for ev, want := range map[string]float64{"sa_added": 1, "sa_updated": 1, "sa_deleted": 1, "sa_soft_expired": 1, "sa_hard_expired": 0} {
		if got := s.get(t, "ipsec_xfrm_events_total", labels("netns", p.B.Name, "event", ev)); got != want {
			t.Errorf("B %s: %v, want %v", ev, got, want)
		}
	}
	if v := s.get(t, "ipsec_xfrm_event_overruns_total", labels("netns", p.A.Name)); v != 0 {
		t.Errorf("overruns %v", v)
	}
}
