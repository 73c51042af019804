package scenario

import (
	"fmt"
	"testing"
	"time"
)

// snapshot is every counter a scenario may move: both namespaces'
// xfrm_stat and the four SA views (each SA exists on both nodes).
type snapshot struct {
	a, b               Counters
	aAB, bAB, aBA, bBA Counters
}

func take(t *testing.T, p *Pair, e *ESP) snapshot {
	return snapshot{
		a: p.A.XfrmStat(t), b: p.B.XfrmStat(t),
		aAB: p.A.SACounters(t, e.AB), bAB: p.B.SACounters(t, e.AB),
		aBA: p.A.SACounters(t, e.BA), bBA: p.B.SACounters(t, e.BA),
	}
}

// delta is what moved between two snapshots.
type delta struct{ A, B, AAB, BAB, ABA, BBA Counters }

func (s snapshot) sub(before snapshot) delta {
	return delta{s.a.Sub(before.a), s.b.Sub(before.b), s.aAB.Sub(before.aAB), s.bAB.Sub(before.bAB), s.aBA.Sub(before.aBA), s.bBA.Sub(before.bBA)}
}

func (d delta) String() string {
	return fmt.Sprintf("xfrm_stat A{%s} B{%s}; SA A->B on A{%s} on B{%s}; SA B->A on A{%s} on B{%s}", d.A, d.B, d.AAB, d.BAB, d.ABA, d.BBA)
}

// want checks one counter of a delta and reports it with the whole delta.
func want(t *testing.T, d delta, what string, c Counters, name string, n uint64) {
	t.Helper()
	if c[name] != n {
		t.Errorf("%s %s moved by %d, want %d\n%s", what, name, c[name], n, d)
	}
}

// TestLabHealthy: pings over every healthy combination move each SA by
// exactly the number of pings on both nodes, and no xfrm_stat counter.
func TestLabHealthy(t *testing.T) {
	RequireVM(t)
	for _, o := range []ESPOptions{
		{},
		{Cipher: CBCHMAC},
		{IPv6: true},
		{IPv6: true, Cipher: CBCHMAC},
		{Tunnel: true},
		{Tunnel: true, Cipher: CBCHMAC},
		{Tunnel: true, IPv6: true},
		{NATT: true},
		{NATT: true, Tunnel: true},
		{NATT: true, IPv6: true},
	} {
		t.Run(name(o), func(t *testing.T) {
			p := NewPair(t)
			e := p.ESP(t, o)
			before := take(t, p, e)
			const n = 5
			got := p.A.Ping(t, e.BAddr, n)
			d := take(t, p, e).sub(before)
			if got != n {
				t.Errorf("ping %s: %d of %d replies; %s", e.BAddr, got, n, d)
			}
			want(t, d, "SA A->B on A", d.AAB, "packets", n)
			want(t, d, "SA A->B on B", d.BAB, "packets", n)
			want(t, d, "SA B->A on B", d.BBA, "packets", n)
			want(t, d, "SA B->A on A", d.ABA, "packets", n)
			if len(d.A)+len(d.B) != 0 {
				t.Errorf("xfrm_stat moved: %s", d)
			}
			t.Logf("%s", d)
		})
	}
}

func name(o ESPOptions) string {
	s := "v4"
	if o.IPv6 {
		s = "v6"
	}
	if o.Tunnel {
		s += "-tunnel"
	} else {
		s += "-transport"
	}
	if o.Cipher == CBCHMAC {
		s += "-cbc"
	} else {
		s += "-gcm"
	}
	if o.NATT {
		s += "-natt"
	}
	return s
}

// TestLabFaults: each provoked failure moves its xfrm_stat counter (and SA
// statistic) once per packet.
func TestLabFaults(t *testing.T) {
	RequireVM(t)
	const n = 4
	for _, c := range []struct {
		name  string
		o     ESPOptions
		check func(t *testing.T, d delta)
	}{
		{"wrong-key-gcm", ESPOptions{WrongKey: true}, func(t *testing.T, d delta) {
			want(t, d, "B", d.B, "XfrmInStateProtoError", n)
			want(t, d, "SA A->B on B", d.BAB, "integrity_failed", n)
		}},
		{"wrong-key-cbc", ESPOptions{WrongKey: true, Cipher: CBCHMAC}, func(t *testing.T, d delta) {
			want(t, d, "B", d.B, "XfrmInStateProtoError", n)
			want(t, d, "SA A->B on B", d.BAB, "integrity_failed", n)
		}},
		{"no-inbound-sa", ESPOptions{NoInboundSA: true}, func(t *testing.T, d delta) {
			want(t, d, "B", d.B, "XfrmInNoStates", n)
		}},
		{"no-outbound-sa", ESPOptions{NoOutboundSA: true}, func(t *testing.T, d delta) {
			want(t, d, "A", d.A, "XfrmOutNoStates", n)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := NewPair(t)
			e := p.ESP(t, c.o)
			before := take(t, p, e)
			if got := p.A.PingTimeout(t, e.BAddr, n, 300*time.Millisecond); got != 0 {
				t.Errorf("%d replies, want none", got)
			}
			d := take(t, p, e).sub(before)
			c.check(t, d)
			t.Logf("%s", d)
		})
	}
}

// TestLabReplay: ESP frames captured at B and sent again from A are replays
// to B: XfrmInStateSeqError and the SA's replay statistic rise per frame.
func TestLabReplay(t *testing.T) {
	RequireVM(t)
	p := NewPair(t)
	e := p.ESP(t, ESPOptions{})
	const n = 3
	p.A.Ping(t, e.BAddr, 1) // some traffic first, so the window has moved
	before := take(t, p, e)
	frames := p.Replay(t, e, n)
	if frames != n {
		t.Fatalf("captured %d frames, want %d", frames, n)
	}
	time.Sleep(50 * time.Millisecond)
	d := take(t, p, e).sub(before)
	want(t, d, "B", d.B, "XfrmInStateSeqError", n)
	want(t, d, "SA A->B on B", d.BAB, "replay", n)
	want(t, d, "SA A->B on B", d.BAB, "packets", n) // only the original pings count
	t.Logf("%s", d)
}

// TestLabExpired: an SA with a hard limit of 3 packets carries 3 pings, then
// expires: the kernel counts the expired state and deletes the SA.
func TestLabExpired(t *testing.T) {
	RequireVM(t)
	p := NewPair(t)
	e := p.ESP(t, ESPOptions{HardPackets: 3})
	before := take(t, p, e)
	if got := p.A.Ping(t, e.BAddr, 3); got != 3 {
		t.Fatalf("%d of 3 replies before the limit", got)
	}
	got := p.A.PingTimeout(t, e.BAddr, 3, 300*time.Millisecond)
	d := take(t, p, e).sub(before)
	t.Logf("after the limit: %d replies; %s", got, d)
	if got != 0 {
		t.Errorf("%d replies after the hard limit, want none", got)
	}
	if d.A["XfrmOutStateExpired"] == 0 {
		t.Errorf("XfrmOutStateExpired on A did not move: %s", d)
	}
	if _, ok := p.A.LookupState(t, e.AB); ok {
		t.Errorf("expired SA A->B still on A")
	}
}
