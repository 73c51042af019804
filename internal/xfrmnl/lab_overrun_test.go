package xfrmnl

import (
	"bytes"
	"net"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// TestLabListenerSAOverrun: the reader stalls behind a tiny socket buffer
// while SAs are added and older ones deleted (a rekey burst); the resync
// after the overrun counts every add and delete exactly once. (The deletes'
// notifications, and with them the SAs' final counters, are lost: the peer
// books fall back to the last scrape's counters for those.)
func TestLabListenerSAOverrun(t *testing.T) {
	scenario.RequireVM(t)
	n := scenario.NewNetns(t, "ovr")
	const old, added = 20, 60
	sa := func(i int) *netlink.XfrmState {
		return &netlink.XfrmState{Src: net.ParseIP("192.0.2.1"), Dst: net.IPv4(192, 0, 2, byte(2+i%200)), Proto: netlink.XFRM_PROTO_ESP,
			Mode: netlink.XFRM_MODE_TUNNEL, Spi: 0x100 + i, Reqid: 1,
			Aead: &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: bytes.Repeat([]byte{1}, 20), ICVLen: 128}}
	}
	for i := range old {
		if err := n.NL.XfrmStateAdd(sa(i)); err != nil {
			t.Fatal(err)
		}
	}
	l, err := Listen(labNamespace(t, n), ListenOptions{RcvBuf: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	l.gate.Lock()
	for i := old; i < old+added; i++ {
		if err := n.NL.XfrmStateAdd(sa(i)); err != nil {
			l.gate.Unlock()
			t.Fatal(err)
		}
	}
	for i := range old {
		if err := n.NL.XfrmStateDel(sa(i)); err != nil {
			l.gate.Unlock()
			t.Fatal(err)
		}
	}
	l.gate.Unlock()
	t.Cleanup(func() { _ = n.NL.XfrmStateFlush(0) })
	c := waitFor(t, l, func(c Counts) bool {
		return c.Events[EventSAAdded] >= added && c.Events[EventSADeleted] >= old && c.Overruns > 0
	})
	if c.Events[EventSAAdded] != added || c.Events[EventSADeleted] != old {
		t.Errorf("added %d deleted %d, want %d and %d (overruns %d, resyncs %d)",
			c.Events[EventSAAdded], c.Events[EventSADeleted], added, old, c.Overruns, c.Resyncs)
	}
	t.Logf("kernel %s: %d SAs added and %d deleted during a stall: overruns %d, resyncs %d, %d final states kept",
		scenario.Kernel(), added, old, c.Overruns, c.Resyncs, len(l.TakeFinals()))
}
