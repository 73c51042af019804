package scenario

import (
	"testing"
)

// TestLabIKEEstablish: each daemon pair negotiates transport and tunnel
// children with a PSK, and pings move both kernels' SAs by exactly the
// number sent.
func TestLabIKEEstablish(t *testing.T) {
	RequireVM(t)
	for _, dp := range DaemonPairs {
		for _, tunnel := range []bool{false, true} {
			name := dp.Name + "/transport"
			if tunnel {
				name = dp.Name + "/tunnel"
			}
			t.Run(name, func(t *testing.T) {
				p := NewPair(t)
				e := p.IKE(t, dp.A, dp.B, IKEOptions{Tunnel: tunnel})
				t.Logf("child SAs in both kernels %s after A started", e.Established)
				ab, ba := e.SPIs(t, p.A)
				const n = 10
				beforeA, beforeB := p.A.SACounters(t, SA{Src: p.A.IPv4, Dst: p.B.IPv4, SPI: ab[0]}), p.B.SACounters(t, SA{Src: p.B.IPv4, Dst: p.A.IPv4, SPI: ba[0]})
				if got := p.A.Ping(t, e.BAddr, n); got != n {
					t.Errorf("%d of %d replies", got, n)
				}
				dA := p.A.SACounters(t, SA{Src: p.A.IPv4, Dst: p.B.IPv4, SPI: ab[0]}).Sub(beforeA)
				dB := p.B.SACounters(t, SA{Src: p.B.IPv4, Dst: p.A.IPv4, SPI: ba[0]}).Sub(beforeB)
				if dA["packets"] != n || dB["packets"] != n {
					t.Errorf("A->B SA on A moved %v, B->A SA on B moved %v; want %d packets each", dA, dB, n)
				}
				t.Logf("A rss %d KiB, B rss %d KiB", RSS(t, e.A.Pid())>>10, RSS(t, e.B.Pid())>>10)
			})
		}
	}
}

// TestLabIKEGateway: the gateway of `make lab` with its tunnel negotiated by
// strongSwan (A's traffic selector is the client subnet behind it, ESP in
// UDP forced): pings from the client C to B's inner address cross it and
// move both kernels' SAs by exactly the number sent.
func TestLabIKEGateway(t *testing.T) {
	RequireVM(t)
	g := NewIKEGateway(t, StrongSwanKind, StrongSwanKind, IKEOptions{Encap: true})
	ab, _ := g.IKE.SPIs(t, g.A)
	_, ba := g.IKE.SPIs(t, g.B)
	sa := func(n *Node, src, dst *Node, spi uint32) Counters {
		return n.SACounters(t, SA{Src: src.IPv4, Dst: dst.IPv4, SPI: spi})
	}
	beforeA, beforeB := sa(g.A, g.A, g.B, ab[0]), sa(g.B, g.B, g.A, ba[0])
	const n = 10
	if got := g.C.Ping(t, g.Server, n); got != n {
		t.Errorf("%d of %d replies through the gateway", got, n)
	}
	dA, dB := sa(g.A, g.A, g.B, ab[0]).Sub(beforeA), sa(g.B, g.B, g.A, ba[0]).Sub(beforeB)
	if dA["packets"] != n || dB["packets"] != n {
		t.Errorf("gateway A->B SA moved %v, B->A SA %v; want %d packets each", dA, dB, n)
	}
	if st := g.A.State(t, SA{Src: g.A.IPv4, Dst: g.B.IPv4, SPI: ab[0]}); st.Encap == nil {
		t.Errorf("A's SA has no UDP encapsulation with Encap set")
	}
}
