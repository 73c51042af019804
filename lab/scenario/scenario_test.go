package scenario

import (
	"testing"
)

// TestLabTransportAEAD: five pings over transport-mode rfc4106(gcm(aes))
// between two namespaces move both SAs by exactly five packets on each side,
// and no error counter moves.
func TestLabTransportAEAD(t *testing.T) {
	RequireVM(t)
	p := NewPair(t)
	e := p.ESP(t, ESPOptions{})
	beforeA, beforeB := p.A.XfrmStat(t), p.B.XfrmStat(t)

	if got := p.A.Ping(t, e.BAddr, 5); got != 5 {
		t.Fatalf("ping %s: %d of 5 replies", e.BAddr, got)
	}
	for _, side := range []struct {
		n  *Node
		sa SA
	}{{p.A, e.AB}, {p.B, e.AB}, {p.A, e.BA}, {p.B, e.BA}} {
		c := side.n.SACounters(t, side.sa)
		if c["packets"] != 5 {
			t.Errorf("%s: SA 0x%x: packets %d, want 5 (%s)", side.n.Name, side.sa.SPI, c["packets"], c)
		}
	}
	if d := p.A.XfrmStat(t).Sub(beforeA); len(d) != 0 {
		t.Errorf("A xfrm_stat moved: %s", d)
	}
	if d := p.B.XfrmStat(t).Sub(beforeB); len(d) != 0 {
		t.Errorf("B xfrm_stat moved: %s", d)
	}
	t.Logf("A:\n%s", p.A.IP(t, "-s", "xfrm", "state"))
}
