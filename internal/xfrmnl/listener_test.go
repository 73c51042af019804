package xfrmnl

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func policy(i int, dir netlink.Dir) *netlink.XfrmPolicy {
	return &netlink.XfrmPolicy{
		Src: mustNet("10.9.0.0/24"), Dst: &net.IPNet{IP: net.IPv4(10, 10, byte(i>>8), byte(i)), Mask: net.CIDRMask(32, 32)},
		Dir: dir,
		Tmpls: []netlink.XfrmPolicyTmpl{{Src: net.ParseIP("192.0.2.1"), Dst: net.ParseIP("192.0.2.2"),
			Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL}},
	}
}

// waitFor polls the listener until cond holds or a second passes.
func waitFor(t *testing.T, l *Listener, cond func(Counts) bool) Counts {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		c := l.Counts()
		if cond(c) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met; counts %+v", c)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestListenerPolicyEvents runs on the build host: policies need no ESP.
func TestListenerPolicyEvents(t *testing.T) {
	ns := newTestNS(t)
	h := nsHandle(t, ns)
	// One policy before the listener starts: its deletion counts, its
	// addition does not.
	if err := h.XfrmPolicyAdd(policy(0, netlink.XFRM_DIR_OUT)); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(ns, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	for i := 1; i <= 3; i++ {
		if err := h.XfrmPolicyAdd(policy(i, netlink.XFRM_DIR_IN)); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.XfrmPolicyUpdate(policy(1, netlink.XFRM_DIR_IN)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*netlink.XfrmPolicy{policy(0, netlink.XFRM_DIR_OUT), policy(2, netlink.XFRM_DIR_IN)} {
		if err := h.XfrmPolicyDel(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.XfrmPolicyFlush(); err != nil {
		t.Fatal(err)
	}
	c := waitFor(t, l, func(c Counts) bool { return c.Events[EventPolicyFlushed] == 1 })
	want := map[Event]uint64{EventPolicyAdded: 3, EventPolicyUpdated: 1, EventPolicyDeleted: 2, EventPolicyFlushed: 1}
	for _, e := range Events {
		if c.Events[e] != want[e] {
			t.Errorf("%s = %d, want %d", e, c.Events[e], want[e])
		}
	}
	if c.Overruns != 0 {
		t.Errorf("overruns %d", c.Overruns)
	}
}

// TestListenerOverrun stalls the reader behind a tiny socket buffer while
// policies are added and older ones removed, and checks that the resync
// after the overrun gets the adds and deletes exactly right. (An add and a
// delete of the same policy both inside an overrun are invisible to any
// dump; the overrun counter is what tells of that.)
func TestListenerOverrun(t *testing.T) {
	ns := newTestNS(t)
	h := nsHandle(t, ns)
	const old, added = 100, 300
	for i := range old {
		if err := h.XfrmPolicyAdd(policy(i, netlink.XFRM_DIR_IN)); err != nil {
			t.Fatal(err)
		}
	}
	l, err := Listen(ns, 1024, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	l.gate.Lock()
	for i := range added {
		if err := h.XfrmPolicyAdd(policy(i, netlink.XFRM_DIR_OUT)); err != nil {
			l.gate.Unlock()
			t.Fatal(err)
		}
	}
	for i := range old {
		if err := h.XfrmPolicyDel(policy(i, netlink.XFRM_DIR_IN)); err != nil {
			l.gate.Unlock()
			t.Fatal(err)
		}
	}
	l.gate.Unlock()
	waitFor(t, l, func(c Counts) bool {
		return c.Events[EventPolicyAdded] >= added && c.Events[EventPolicyDeleted] >= old && c.Overruns > 0
	})
	// Let queued notifications drain, then check nothing counted twice.
	time.Sleep(100 * time.Millisecond)
	c := l.Counts()
	if c.Events[EventPolicyAdded] != added || c.Events[EventPolicyDeleted] != old {
		t.Errorf("added %d deleted %d, want %d and %d (overruns %d, resyncs %d)",
			c.Events[EventPolicyAdded], c.Events[EventPolicyDeleted], added, old, c.Overruns, c.Resyncs)
	}
	if c.Resyncs < c.Overruns {
		t.Errorf("resyncs %d < overruns %d", c.Resyncs, c.Overruns)
	}
	t.Logf("overruns %d, resyncs %d", c.Overruns, c.Resyncs)
}
