package wire

import (
	"net"
	"net/netip"
	"regexp"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestFollowInterfaces: an interface that appears after start is attached,
// one that is deleted is forgotten, a regexp selects by name, and the
// attach status tells which interfaces are counted.
func TestFollowInterfaces(t *testing.T) {
	p := newPair(t)
	m, err := Start(Config{Netns: &p.nsA, Interfaces: regexp.MustCompile(`^(wa|extra\d)$`)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	names := func() []string {
		var out []string
		for _, i := range m.Interfaces() {
			if i.Attached {
				out = append(out, i.Name)
			}
		}
		return out
	}
	if got := names(); !slices.Equal(got, []string{"wa"}) {
		t.Fatalf("attached to %v, want [wa]", got)
	}

	// Selected by name even while down; "other0" is not selected.
	run(t, "ip", "-n", p.nameA, "link", "add", "extra1", "type", "veth", "peer", "name", "other0")
	waitFor(t, "extra1 attached", func() bool { return slices.Equal(names(), []string{"extra1", "wa"}) })
	extra := ifindex(t, p.nsA, "extra1")
	if st := tcState(t, p.nsA, extra); len(st) != 2 {
		t.Errorf("extra1 TC state %v, want our two tcx programs", st)
	}

	run(t, "ip", "-n", p.nameA, "link", "del", "extra1")
	waitFor(t, "extra1 forgotten", func() bool { return slices.Equal(names(), []string{"wa"}) })
	if got := len(m.Interfaces()); got != 1 {
		t.Errorf("%d interfaces known, want 1", got)
	}
}

// TestFollowDefault: without a regexp, every interface that is up and not
// loopback is attached, including one that comes up later.
func TestFollowDefault(t *testing.T) {
	p := newPair(t)
	run(t, "ip", "-n", p.nameA, "link", "set", "lo", "up")
	m := start(t, p.nsA, "")
	attached := func() []string {
		var out []string
		for _, i := range m.Interfaces() {
			if i.Attached {
				out = append(out, i.Name)
			}
		}
		return out
	}
	if got := attached(); !slices.Equal(got, []string{"wa"}) {
		t.Fatalf("attached to %v, want [wa] (not lo)", got)
	}
	run(t, "ip", "-n", p.nameA, "link", "add", "late0", "type", "veth", "peer", "name", "late1")
	run(t, "ip", "-n", p.nameA, "link", "set", "late0", "up")
	waitFor(t, "late0 attached once up", func() bool { return slices.Contains(attached(), "late0") })
}

// TestFollowPeers: a policy added or removed after start reaches the peer
// map through XFRM events, without a refresh from a scrape.
func TestFollowPeers(t *testing.T) {
	p := newPair(t)
	m := start(t, p.nsA, ModeTCX)
	checkPeers(t, m)
	h := handle(t, p.nsA)
	pol := &netlink.XfrmPolicy{
		Src: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)},
		Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)},
		Dir: netlink.XFRM_DIR_OUT,
		Tmpls: []netlink.XfrmPolicyTmpl{{
			Src: net.ParseIP("198.51.100.1"), Dst: net.ParseIP("198.51.100.2"),
			Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL,
		}},
	}
	if err := h.XfrmPolicyAdd(pol); err != nil {
		t.Fatal(err)
	}
	peers := func() []netip.Addr {
		got, err := m.Peers()
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(got, netip.Addr.Compare)
		return got
	}
	want := []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")}
	waitFor(t, "peers from the new policy", func() bool { return slices.Equal(peers(), want) })

	// An address of our own is not a peer.
	run(t, "ip", "-n", p.nameA, "addr", "add", "198.51.100.1/32", "dev", "wa")
	waitFor(t, "the local address to leave the peers", func() bool { return slices.Equal(peers(), want[1:]) })

	if err := h.XfrmPolicyDel(pol); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "peers to go with the policy", func() bool { return len(peers()) == 0 })
}
