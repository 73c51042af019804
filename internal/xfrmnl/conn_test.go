package xfrmnl

import (
	"net"
	"os"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx/netnsxtest"
)

func TestDialOwnNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) for xfrm netlink")
	}
	c, err := Dial(netnsx.Namespace{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if _, err := c.SAs(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Policies(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SADInfo(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SPDInfo(); err != nil {
		t.Fatal(err)
	}
}

// TestPolicyDumpAndSPDInfo adds policies in a fresh namespace (policies need
// no ESP module, so this runs on the build host) and reads them back.
func TestPolicyDumpAndSPDInfo(t *testing.T) {
	ns := netnsxtest.New(t, "", "ns")
	h := netnsxtest.Handle(t, ns)
	src, dst := mustNet("10.1.0.0/24"), mustNet("10.2.0.0/16")
	for _, dir := range []netlink.Dir{netlink.XFRM_DIR_OUT, netlink.XFRM_DIR_IN, netlink.XFRM_DIR_FWD, netlink.XFRM_DIR_IN} {
		p := &netlink.XfrmPolicy{Src: src, Dst: dst, Dir: dir, Priority: 7, Tmpls: []netlink.XfrmPolicyTmpl{{
			Src: net.ParseIP("192.0.2.1"), Dst: net.ParseIP("192.0.2.2"), Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL, Reqid: 5}}}
		if dir == netlink.XFRM_DIR_IN && src.String() == "10.1.0.0/24" {
			src = mustNet("10.3.0.0/24") // second inbound policy, other selector
		}
		if err := h.XfrmPolicyAdd(p); err != nil {
			t.Fatalf("adding policy: %v", err)
		}
	}
	c, err := Dial(ns, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	pols, err := c.Policies()
	if err != nil {
		t.Fatal(err)
	}
	if len(pols) != 4 {
		t.Fatalf("got %d policies, want 4: %+v", len(pols), pols)
	}
	byDir := map[string]int{}
	for _, p := range pols {
		byDir[DirName(p.Dir)]++
		if p.Templates != 1 || p.Priority != 7 || p.Dst.String() != "10.2.0.0/16" || p.AddTime == 0 {
			t.Errorf("policy decoded wrong: %+v", p)
		}
	}
	if byDir["in"] != 2 || byDir["out"] != 1 || byDir["fwd"] != 1 {
		t.Errorf("policies by direction %v", byDir)
	}
	info, err := c.SPDInfo()
	if err != nil {
		t.Fatal(err)
	}
	if info.In != 2 || info.Out != 1 || info.Fwd != 1 || info.SocketIn+info.SocketOut+info.SocketFwd != 0 {
		t.Errorf("SPD info %+v, want in 2 out 1 fwd 1", info)
	}
	sad, err := c.SADInfo()
	if err != nil {
		t.Fatal(err)
	}
	if sad.Count != 0 {
		t.Errorf("SAD count %d in a fresh namespace", sad.Count)
	}
}

func mustNet(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}
