package collector

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx/netnsxtest"
	"github.com/ipsec-exporter/ipsec_exporter/internal/xfrmnl"
)

func TestPolicyCollectorGolden(t *testing.T) {
	spd := xfrmnl.SPDInfo{In: 1, Out: 1, SocketIn: 1, SocketOut: 1}
	pols := []xfrmnl.Policy{
		{Family: 2, Src: netip.MustParsePrefix("10.78.1.0/24"), Dst: netip.MustParsePrefix("10.78.2.1/32"),
			Index: 9, Dir: xfrmnl.PolicyOut, Priority: 100, Templates: 1, AddTime: 1700000000, UseTime: 1700000100},
		{Family: 2, Src: netip.MustParsePrefix("10.78.2.1/32"), Dst: netip.MustParsePrefix("10.78.1.0/24"), Proto: 17,
			Index: 16, Dir: xfrmnl.PolicyIn, Action: 1, AddTime: 1700000000},
	}
	c := &policyCollector{logger: slog.New(slog.DiscardHandler), namespaces: fakeNamespaces("gw"), read: fakePolicyReader(spd, pols)}
	compareGolden(t, "testdata/policy.prom", scrapeText(t, c))
	c.max = 1
	if got := scrapeText(t, c); !strings.Contains(got, "\nipsec_policy_omitted 1\n") || strings.Count(got, "\nipsec_policy_info{") != 1 {
		t.Errorf("capped at 1:\n%s", got)
	}
}

// fakePolicyReader reads the same policies in every namespace.
func fakePolicyReader(spd xfrmnl.SPDInfo, pols []xfrmnl.Policy) func(netnsx.Namespace) (policyNamespace, error) {
	return func(netnsx.Namespace) (policyNamespace, error) {
		return policyNamespace{SPD: spd, Close: func() {}, Each: func(fn func(*xfrmnl.Policy) error) error {
			var p xfrmnl.Policy // reused, as the real reader does
			for i := range pols {
				p = pols[i]
				if err := fn(&p); err != nil {
					return err
				}
			}
			return nil
		}}, nil
	}
}

// TestPolicyCollectorKernel adds policies in a fresh namespace (no ESP
// needed, so this runs on the build host) and reads them through the
// namespace directory.
func TestPolicyCollectorKernel(t *testing.T) {
	ns := netnsxtest.New(t, "", "pol")
	h := netnsxtest.Handle(t, ns)
	_, sel, _ := net.ParseCIDR("10.5.0.0/16")
	for _, dir := range []netlink.Dir{netlink.XFRM_DIR_OUT, netlink.XFRM_DIR_IN, netlink.XFRM_DIR_FWD} {
		err := h.XfrmPolicyAdd(&netlink.XfrmPolicy{Src: sel, Dst: sel, Dir: dir, Tmpls: []netlink.XfrmPolicyTmpl{{
			Src: net.ParseIP("192.0.2.1"), Dst: net.ParseIP("192.0.2.2"), Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	c := &policyCollector{logger: slog.New(slog.DiscardHandler), read: readPolicies,
		namespaces: func() []netnsx.Namespace { return []netnsx.Namespace{ns} }}
	got := scrapeText(t, c)
	for _, line := range []string{
		`ipsec_policies{direction="fwd",netns="pol"} 1`,
		`ipsec_policies{direction="in",netns="pol"} 1`,
		`ipsec_policies{direction="out",netns="pol"} 1`,
		`ipsec_socket_policies{direction="out",netns="pol"} 0`,
	} {
		if !strings.Contains(got, line+"\n") {
			t.Errorf("missing %s in\n%s", line, got)
		}
	}
	if n := strings.Count(got, `ipsec_policy_info{action="allow",direction=`); n < 3 {
		t.Errorf("%d policy_info series for pol, want 3", n)
	}
}
