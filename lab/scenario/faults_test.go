package scenario

import (
	"testing"
	"time"
)

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
