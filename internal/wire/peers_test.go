package wire

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestPeersOf(t *testing.T) {
	ip := func(s string) net.IP { return net.ParseIP(s) }
	prefix := func(s string) *net.IPNet {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	states := []netlink.XfrmState{
		{Src: ip("10.0.0.1"), Dst: ip("10.0.0.2")}, // out SA
		{Src: ip("10.0.0.2"), Dst: ip("10.0.0.1")}, // in SA
		{Src: ip("fd00::1"), Dst: ip("fd00::3")},
		{Src: ip("10.0.0.1"), Dst: ip("0.0.0.0")}, // larval/acquire: no peer
	}
	policies := []netlink.XfrmPolicy{
		// Tunnel: the template endpoints, not the subnets.
		{Src: prefix("192.168.1.0/24"), Dst: prefix("192.168.2.0/24"), Dir: netlink.XFRM_DIR_OUT,
			Tmpls: []netlink.XfrmPolicyTmpl{{Src: ip("10.0.0.1"), Dst: ip("10.0.0.4"), Mode: netlink.XFRM_MODE_TUNNEL}}},
		// Tunnel with host selectors: the hosts behind the peers are not peers.
		{Src: prefix("192.168.1.1/32"), Dst: prefix("192.168.2.1/32"), Dir: netlink.XFRM_DIR_OUT,
			Tmpls: []netlink.XfrmPolicyTmpl{{Src: ip("10.0.0.1"), Dst: ip("10.0.0.4"), Mode: netlink.XFRM_MODE_TUNNEL}}},
		// Transport with empty template addresses: the host selector.
		{Src: prefix("10.0.0.1/32"), Dst: prefix("10.0.0.5/32"), Dir: netlink.XFRM_DIR_OUT,
			Tmpls: []netlink.XfrmPolicyTmpl{{Src: ip("0.0.0.0"), Dst: ip("0.0.0.0"), Mode: netlink.XFRM_MODE_TRANSPORT}}},
		// An allow policy without templates names no peer.
		{Src: prefix("10.0.0.1/32"), Dst: prefix("10.0.0.6/32"), Dir: netlink.XFRM_DIR_OUT},
		// Multicast and loopback never.
		{Src: prefix("224.0.0.1/32"), Dst: prefix("127.0.0.1/32"),
			Tmpls: []netlink.XfrmPolicyTmpl{{Mode: netlink.XFRM_MODE_TRANSPORT}}},
	}
	local := map[netip.Addr]bool{netip.MustParseAddr("10.0.0.1"): true, netip.MustParseAddr("fd00::1"): true}
	got := peersOf(states, policies, local)
	want := []netip.Addr{
		netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.4"), netip.MustParseAddr("10.0.0.5"),
		netip.MustParseAddr("fd00::3"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("peers %v, want %v", got, want)
	}
}
