package scenario

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLabNATTOnTheWire: with NATT the ESP packets travel as UDP 4500
// datagrams (not IP protocol 50), and still decrypt.
func TestLabNATTOnTheWire(t *testing.T) {
	RequireVM(t)
	p := NewPair(t)
	e := p.ESP(t, ESPOptions{NATT: true})
	c := p.B.CaptureESP(t)
	if got := p.A.Ping(t, e.BAddr, 3); got != 3 {
		t.Fatalf("%d of 3 replies", got)
	}
	frames := c.Stop()
	if len(frames) != 3 {
		t.Fatalf("captured %d ESP frames at B, want 3", len(frames))
	}
	for _, f := range frames {
		if binary.BigEndian.Uint16(f[12:14]) != unix.ETH_P_IP || f[23] != unix.IPPROTO_UDP {
			t.Errorf("frame is not UDP: % x", f[:40])
		}
	}
}
