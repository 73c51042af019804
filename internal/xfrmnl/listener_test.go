package xfrmnl

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx/netnsxtest"
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
	ns := netnsxtest.New(t, "", "ns")
	h := netnsxtest.Handle(t, ns)
	// One policy before the listener starts: its deletion counts, its
	// addition does not.
	if err := h.XfrmPolicyAdd(policy(0, netlink.XFRM_DIR_OUT)); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(ns, ListenOptions{})
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
	ns := netnsxtest.New(t, "", "ns")
	h := netnsxtest.Handle(t, ns)
	const old, added = 100, 300
	for i := range old {
		if err := h.XfrmPolicyAdd(policy(i, netlink.XFRM_DIR_IN)); err != nil {
			t.Fatal(err)
		}
	}
	l, err := Listen(ns, ListenOptions{RcvBuf: 1024})
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

// TestListenerFlushAndAdd flushes the policy database and adds the same
// policies back, again and again, while the listener counts: every add is
// counted, because the listener applies a flush to what it knows instead
// of re-reading the state (a re-read after the flush already holds policies
// added since, whose notifications were then not counted: issue 14's 61,747
// counted of 62,000 SA adds).
func TestListenerFlushAndAdd(t *testing.T) {
	ns := netnsxtest.New(t, "", "ns")
	h := netnsxtest.Handle(t, ns)
	l, err := Listen(ns, ListenOptions{RcvBuf: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	const perRound, rounds = 300, 8
	adds := 0
	for range rounds {
		if err := h.XfrmPolicyFlush(); err != nil {
			t.Fatal(err)
		}
		for i := range perRound {
			if err := h.XfrmPolicyAdd(policy(i, netlink.XFRM_DIR_OUT)); err != nil {
				t.Fatal(err)
			}
			adds++
		}
	}
	// The first flush found an empty database: the kernel announces none.
	waitFor(t, l, func(c Counts) bool { return c.Events[EventPolicyAdded] >= uint64(adds) })
	time.Sleep(50 * time.Millisecond) // nothing more may come
	c := l.Counts()
	if c.Events[EventPolicyAdded] != uint64(adds) || c.Events[EventPolicyFlushed] != rounds-1 || c.Events[EventPolicyDeleted] != 0 {
		t.Errorf("policy_added %d (want %d), policy_flushed %d (want %d), policy_deleted %d (want 0); overruns %d",
			c.Events[EventPolicyAdded], adds, c.Events[EventPolicyFlushed], rounds-1, c.Events[EventPolicyDeleted], c.Overruns)
	}
	if c.Overruns != 0 || c.Resyncs != 0 {
		t.Errorf("overruns %d, resyncs %d: a flush needs no re-read", c.Overruns, c.Resyncs)
	}
}

// TestListenerLost: notifications the kernel dropped during a stall are
// counted in Lost, as the kernel's own drop count of the socket
// (/proc/net/netlink) shows them.
func TestListenerLost(t *testing.T) {
	ns := netnsxtest.New(t, "", "ns")
	h := netnsxtest.Handle(t, ns)
	l, err := Listen(ns, ListenOptions{RcvBuf: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	const added = 200
	l.gate.Lock()
	for i := range added {
		if err := h.XfrmPolicyAdd(policy(i, netlink.XFRM_DIR_OUT)); err != nil {
			l.gate.Unlock()
			t.Fatal(err)
		}
	}
	drops := kernelDrops(t, ns, l.conn.port)
	l.gate.Unlock()
	c := waitFor(t, l, func(c Counts) bool { return c.Events[EventPolicyAdded] == added && c.Resyncs > 0 })
	if c.Lost == 0 || c.Lost != drops || c.Lost >= added {
		t.Errorf("lost %d, the kernel dropped %d of %d notifications", c.Lost, drops, added)
	}
	t.Logf("%d policies added during a stall: %d notifications dropped, %d overruns, %d resyncs", added, c.Lost, c.Overruns, c.Resyncs)
}

// kernelDrops reads the Drops column of a netlink socket in
// /proc/net/netlink of the namespace.
func kernelDrops(t *testing.T, ns netnsx.Namespace, port uint32) uint64 {
	t.Helper()
	b, err := ns.ReadFile("/proc/net/netlink")
	if err != nil {
		t.Fatal(err)
	}
	// sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 9 && f[1] == fmt.Sprint(unix.NETLINK_XFRM) && f[2] == fmt.Sprint(port) {
			d, err := strconv.ParseUint(f[8], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
	}
	t.Fatalf("socket %d not in /proc/net/netlink:\n%s", port, b)
	return 0
}

// TestListenerCountsUnannouncedDelete: a key manager allocates an SPI
// (XFRM_MSG_ALLOCSPI, which the kernel does not announce) and deletes the
// SA when its negotiation fails; the kernel announces that delete, and so
// the listener counts it: the counts are the kernel's event stream (ike's
// wrong-PSK lab scenario found it one short per failed negotiation).
func TestListenerCountsUnannouncedDelete(t *testing.T) {
	ns := netnsxtest.New(t, "", "ns")
	h := netnsxtest.Handle(t, ns)
	l, err := Listen(ns, ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	const n = 3
	for i := range n {
		var sa *netlink.XfrmState
		err := ns.Do(func() error {
			var err error
			sa, err = netlink.XfrmStateAllocSpi(&netlink.XfrmState{Src: net.ParseIP("192.0.2.1"), Dst: net.IPv4(192, 0, 2, byte(10+i)),
				Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL, Reqid: 7})
			return err
		})
		if err != nil {
			t.Skipf("this kernel allocates no SPI without ESP: %v", err)
		}
		if err := h.XfrmStateDel(sa); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, l, func(c Counts) bool { return c.Events[EventSADeleted] >= n })
	time.Sleep(50 * time.Millisecond)
	c := l.Counts()
	if c.Events[EventSADeleted] != n || c.Events[EventSAAdded] != 0 {
		t.Errorf("sa_deleted %d, sa_added %d; want %d deletes, as the kernel announced, and no add", c.Events[EventSADeleted], c.Events[EventSAAdded], n)
	}
}
