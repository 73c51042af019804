package scenario

import "testing"

// TestLabGatewayGSO: bulk TCP from C through gateway A into the A-B tunnel
// is segmented after xfrm_output: fewer xfrm_output calls than ESP packets.
func TestLabGatewayGSO(t *testing.T) {
	RequireVM(t)
	g := NewGateway(t, ESPOptions{})
	calls := CountCalls(t, "xfrm_output")
	beforeAB := g.A.SACounters(t, g.ESP.AB)
	beforeBA := g.B.SACounters(t, g.ESP.BA)
	beforeA := g.A.XfrmStat(t)
	const size = 2 << 20
	BulkTCP(t, g.C.Netns, g.B.Netns, g.Server, size)
	ab := g.A.SACounters(t, g.ESP.AB).Sub(beforeAB)
	ba := g.B.SACounters(t, g.ESP.BA).Sub(beforeBA)
	n := calls()
	t.Logf("xfrm_output calls %d; ESP packets A->B %d (%d bytes), B->A %d; xfrm_stat A{%s}",
		n, ab["packets"], ab["bytes"], ba["packets"], g.A.XfrmStat(t).Sub(beforeA))
	if ab["bytes"] < size {
		t.Errorf("SA A->B carried %d bytes, want at least %d", ab["bytes"], size)
	}
	if esp := ab["packets"] + ba["packets"]; n >= esp {
		t.Errorf("xfrm_output ran %d times for %d ESP packets: no GSO segmentation after it", n, esp)
	}
}
