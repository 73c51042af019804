package collector

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
)

// TestEventsCollector: a listener per namespace counts policy lifecycle
// events between scrapes (policies need no ESP: this runs on the host), a
// namespace created later gets its listener at the next scrape, and one
// that is gone loses it.
func TestEventsCollector(t *testing.T) {
	dir, path := booksNamespace(t, "books-ev")
	h := booksNetlink(t, path)
	targets := []string{"books-ev"}
	registry := newListenerRegistry()
	c := &eventsCollector{logger: booksLogger(), registry: registry,
		targets: func() ([]netnsTarget, error) { return netnsx.List(dir, targets) }}
	defer func() { _ = c.Close() }()
	scrapeText(t, c) // starts the listener
	_, sel, _ := net.ParseCIDR("10.6.0.0/16")
	p := &netlink.XfrmPolicy{Src: sel, Dst: sel, Dir: netlink.XFRM_DIR_OUT}
	for range 2 {
		if err := h.XfrmPolicyAdd(p); err != nil {
			t.Fatal(err)
		}
		if err := h.XfrmPolicyDel(p); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		`ipsec_xfrm_events_total{event="policy_added",netns="books-ev"} 2`,
		`ipsec_xfrm_events_total{event="policy_deleted",netns="books-ev"} 2`,
		`ipsec_xfrm_events_total{event="sa_hard_expired",netns="books-ev"} 0`,
		`ipsec_xfrm_event_overruns_total{netns="books-ev"} 0`,
	}
	var got string
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		got = scrapeText(t, c)
		if strings.Contains(got, want[1]+"\n") {
			break
		}
	}
	for _, line := range want {
		if !strings.Contains(got, line+"\n") {
			t.Errorf("missing %s in\n%s", line, got)
		}
	}
	if !strings.Contains(got, `netns=""}`) {
		t.Error("no listener for the exporter's own namespace")
	}
	targets = []string{"none-of-these"}
	got = scrapeText(t, c)
	if strings.Contains(got, `netns="books-ev"`) {
		t.Error("listener of a namespace no longer listed still reported")
	}
	if len(registry.byName) != 1 {
		t.Errorf("%d listeners, want 1 (own namespace)", len(registry.byName))
	}
	_ = c.Close()
	if len(registry.byName) != 0 {
		t.Errorf("%d listeners after Close", len(registry.byName))
	}
}
