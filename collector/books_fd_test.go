package collector

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
)

// TestBooksNoFDLeak scrapes the sa, policy, events and xfrm_stat collectors
// many times over our namespace and a named one, and checks that the number
// of open file descriptors stays put (each scrape opens netlink sockets and
// namespace files; the events collector keeps one socket per namespace).
func TestBooksNoFDLeak(t *testing.T) {
	dir, path := booksNamespace(t, "books-fd")
	h := booksNetlink(t, path)
	_, sel, _ := net.ParseCIDR("10.7.0.0/16")
	if err := h.XfrmPolicyAdd(&netlink.XfrmPolicy{Src: sel, Dst: sel, Dir: netlink.XFRM_DIR_IN}); err != nil {
		t.Fatal(err)
	}
	targets := func() ([]netnsTarget, error) { return netnsx.List(dir, nil) }
	registry := newListenerRegistry()
	events := &eventsCollector{logger: booksLogger(), targets: targets, registry: registry}
	defer func() { _ = events.Close() }()
	sa := newSACollector(booksLogger(), targets, readSAs, true, 0)
	sa.registry = registry
	defer func() { _ = sa.Close() }()
	collectors := []Collector{
		sa,
		&policyCollector{logger: booksLogger(), targets: targets, read: readPolicies},
		&xfrmStatCollector{logger: booksLogger(), targets: targets, read: readXfrmStat},
		events,
	}
	scrape := func() {
		for _, c := range collectors {
			scrapeText(t, c)
		}
	}
	scrape() // the events collector opens its long-lived sockets here
	before := booksFDs(t)
	for range 200 {
		scrape()
	}
	// A leak grows with the scrapes (200 or more fds); other tests of the
	// package running in parallel open and close a few of their own, so the
	// count may move a little either way without a leak.
	const slack = 10
	if after := booksFDs(t); after > before+slack {
		t.Errorf("open fds %d before 200 scrapes, %d after: a leak", before, after)
	}
}
