package collector

import (
	"testing"
	"time"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// The xfrm_stat collector against faults provoked in the lab VM, compared
// with /proc/net/xfrm_stat read independently by lab/scenario.

// TestLabXfrmStatFaults provokes each failure the scenario offers and checks
// the MIB delta the collector reports against the scenario's own reading of
// /proc/net/xfrm_stat and against the count the fault must cause, and the
// per-SA counters against ip.
func TestLabXfrmStatFaults(t *testing.T) {
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
			b := newStateCollectors(t, p.A.Netns, p.B.Netns)
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
