package collector

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// The events collector against SA lifecycles in the lab VM.

// TestLabEventsLifecycle installs an A->B SA with a soft limit of 3 packets
// and a hard limit of 6, sends 8 pings through it and checks the lifetime
// ratios on the way, then the soft and hard expiry events, the acquire that
// follows, an update and a delete: each counted exactly once.
func TestLabEventsLifecycle(t *testing.T) {
	scenario.RequireVM(t)
	p := scenario.NewPair(t)
	b := newStateCollectors(t, p.A.Netns, p.B.Netns)
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
