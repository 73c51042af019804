package collector

import (
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx/netnsxtest"
	"github.com/ipsec-exporter/ipsec_exporter/internal/xfrmnl"
)

// eventsIn is the events collector over the namespaces of dir, with its
// own watcher and listeners.
func eventsIn(t *testing.T, dir string) (*eventsCollector, *xfrmnl.Listeners) {
	t.Helper()
	w, err := netnsx.NewWatcher(netnsx.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ls := xfrmnl.Follow(w, xfrmnl.ListenOptions{})
	t.Cleanup(func() { _ = ls.Close(); _ = w.Close() })
	return &eventsCollector{logger: slog.New(slog.DiscardHandler), namespaces: namespacesNow(w), listeners: ls}, ls
}

// eventPolicy is an outbound policy with a selector of its own.
func eventPolicy(i int) *netlink.XfrmPolicy {
	_, sel, _ := net.ParseCIDR("10.6.0.0/16")
	return &netlink.XfrmPolicy{Src: sel, Dst: &net.IPNet{IP: net.IPv4(10, 16, 0, byte(i)), Mask: net.CIDRMask(32, 32)}, Dir: netlink.XFRM_DIR_OUT}
}

// addDelPolicies adds n policies, and deletes the first del of them.
func addDelPolicies(t *testing.T, h *netlink.Handle, n, del int) {
	t.Helper()
	for i := range n {
		if err := h.XfrmPolicyAdd(eventPolicy(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range del {
		if err := h.XfrmPolicyDel(eventPolicy(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// waitLines scrapes until every line is in the exposition, and returns it.
func waitLines(t *testing.T, c Collector, lines ...string) string {
	t.Helper()
	var got string
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got = scrapeText(t, c)
		missing := ""
		for _, l := range lines {
			if !strings.Contains(got, l+"\n") {
				missing = l
				break
			}
		}
		if missing == "" {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("missing %s in\n%s", missing, got)
		}
	}
}

// TestEventsCollector: a listener per namespace counts policy lifecycle
// events between scrapes (policies need no ESP: this runs on the host), in
// the exporter's own namespace too.
func TestEventsCollector(t *testing.T) {
	dir := t.TempDir()
	ns := netnsxtest.New(t, dir, "ev")
	c, _ := eventsIn(t, dir)
	scrapeText(t, c)
	addDelPolicies(t, netnsxtest.Handle(t, ns), 2, 2)
	got := waitLines(t, c,
		`ipsec_xfrm_events_total{event="policy_added",netns="ev"} 2`,
		`ipsec_xfrm_events_total{event="policy_deleted",netns="ev"} 2`,
		`ipsec_xfrm_events_total{event="sa_hard_expired",netns="ev"} 0`,
		`ipsec_xfrm_event_overruns_total{netns="ev"} 0`,
		`ipsec_xfrm_events_lost_total{netns="ev"} 0`)
	if !strings.Contains(got, `netns=""}`) {
		t.Error("no listener for the exporter's own namespace")
	}
}

// TestEventsNamespaceFollowed: a namespace's events count from the moment
// it appears, with no scrape in between (a policy added and deleted again
// before any scrape is counted both ways: only a listener that was already
// there saw it go), and a namespace deleted and created again under the
// same name is followed: its new events count, on top of the old
// namespace's under the same name, and the old one's listener is closed.
func TestEventsNamespaceFollowed(t *testing.T) {
	dir := t.TempDir()
	old := netnsxtest.New(t, dir, "zz")
	c, ls := eventsIn(t, dir)
	addDelPolicies(t, netnsxtest.Handle(t, old), 1, 1)
	waitLines(t, c, `ipsec_xfrm_events_total{event="policy_added",netns="zz"} 1`)

	// Deleted and created again, with no scrape between; then a namespace
	// that did not exist.
	again := netnsxtest.Recreate(t, old)
	late := netnsxtest.New(t, dir, "late")
	// Added at once, perhaps before its listener subscribed: the
	// listener of a namespace that just appeared counts what it finds.
	lateNL := netnsxtest.Handle(t, late)
	addDelPolicies(t, lateNL, 2, 0)
	waitListening(t, ls, again, late)
	addDelPolicies(t, netnsxtest.Handle(t, again), 3, 1)
	for i := range 2 {
		if err := lateNL.XfrmPolicyDel(eventPolicy(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitLines(t, c,
		`ipsec_xfrm_events_total{event="policy_added",netns="zz"} 4`,
		`ipsec_xfrm_events_total{event="policy_deleted",netns="zz"} 2`,
		`ipsec_xfrm_events_total{event="policy_added",netns="late"} 2`,
		`ipsec_xfrm_events_total{event="policy_deleted",netns="late"} 2`)
	if l, _ := ls.Get(old.ID); l != nil {
		t.Error("the deleted namespace still has its listener (and is kept alive by it)")
	}

	// A name gone keeps its counts for netnsRetention, then its series end.
	if err := netnsxtest.Delete(late.Path); err != nil {
		t.Fatal(err)
	}
	waitLines(t, c, `ipsec_xfrm_events_total{event="policy_deleted",netns="late"} 2`)
	c.now = func() time.Time { return time.Now().Add(netnsRetention + time.Minute) }
	if got := scrapeText(t, c); strings.Contains(got, `netns="late"`) {
		t.Errorf("a name gone for longer than %v still reported:\n%s", netnsRetention, got)
	}
}

// waitListening waits, without scraping, until every namespace has its
// listener: the watcher found them by itself.
func waitListening(t *testing.T, ls *xfrmnl.Listeners, nss ...netnsx.Namespace) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for _, ns := range nss {
		for {
			if l, _ := ls.Get(ns.ID); l != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no listener for %v within 3s", ns)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}
