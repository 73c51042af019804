package collector

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// wireOnly runs the exporter with the wire collector (and the namespace
// watcher's own) only: the verdict programs take a minute to load under
// emulation and are not what these tests look at.
var wireOnly = []string{"--no-collector.verdict", "--no-collector.sa", "--no-collector.policy",
	"--no-collector.events", "--no-collector.xfrm_stat", "--collector.netns.dir=/run/netns"}

// TestLabWireNamespaces: the exporter in the VM's own namespace counts the
// ESP of IPsec that lives in named namespaces, per namespace and interface,
// exactly as many packets as the SAs carried, under the namespace's netns
// label; a namespace created after the start is attached and counted too
// (issue 17: the lab's headline panel read 0% because the wire program
// watched only the exporter's own namespace).
func TestLabWireNamespaces(t *testing.T) {
	scenario.RequireVM(t)
	const pings = 10
	p := scenario.NewPair(t)
	e := p.ESP(t, scenario.ESPOptions{})
	x := startExporter(t, nil, wireOnly...)
	x.waitFor(t, "ipsec_bpf_wire_interface_attached", labels("netns", p.B.Name, "interface", "eth0"), 1)

	check := func(p *scenario.Pair, e *scenario.ESP) {
		t.Helper()
		if got := p.A.Ping(t, e.BAddr, pings); got != pings {
			t.Fatalf("%d of %d pings answered", got, pings)
		}
		ab, ba := p.A.SACounters(t, e.AB)["packets"], p.B.SACounters(t, e.BA)["packets"]
		for _, c := range []struct {
			n         *scenario.Node
			direction string
			want      uint64
		}{{p.A, "egress", ab}, {p.B, "ingress", ab}, {p.B, "egress", ba}, {p.A, "ingress", ba}} {
			x.waitFor(t, "ipsec_wire_packets_total",
				labels("netns", c.n.Name, "interface", "eth0", "direction", c.direction, "class", "esp"), float64(c.want))
		}
		s := x.samples(t)
		for k, v := range s {
			if strings.HasPrefix(k, "ipsec_wire_packets_total{") && strings.Contains(k, "class=esp,") && strings.Contains(k, ",netns=}") && v > 0 {
				t.Errorf("ESP counted in the exporter's own namespace, where there is none: %s %v", k, v)
			}
		}
		t.Logf("kernel %s: %s/%s: %d pings, SAs %d and %d packets, wire esp A egress %v, B ingress %v",
			scenario.Kernel(), p.A.Name, p.B.Name, pings, ab, ba,
			s.get(t, "ipsec_wire_packets_total", labels("netns", p.A.Name, "interface", "eth0", "direction", "egress", "class", "esp")),
			s.get(t, "ipsec_wire_packets_total", labels("netns", p.B.Name, "interface", "eth0", "direction", "ingress", "class", "esp")))
	}
	check(p, e)

	// A namespace pair that appears while the exporter runs.
	q := scenario.NewPairNamed(t, "late", "laterb", 9)
	f := q.ESP(t, scenario.ESPOptions{})
	x.waitFor(t, "ipsec_bpf_wire_interface_attached", labels("netns", q.B.Name, "interface", "eth0"), 1)
	check(q, f)
}

// TestLabWireRemembersPeers: a tunnel's SAs and policies are removed on one
// side the way an IKE daemon does after dead peer detection; the traffic to
// the peer then leaves in plaintext. The peer stays known
// (--peers.forget-after), so the leak is counted per peer on both ends and
// the remembered peer is reported. Without the memory (forget-after 0) the
// sender's side sees nothing, which is what issue 19 found with a real
// daemon.
func TestLabWireRemembersPeers(t *testing.T) {
	scenario.RequireVM(t)
	const leaked = 7
	for _, tc := range []struct {
		forget   string
		remember bool
	}{{"10m", true}, {"0s", false}} {
		t.Run("forget-after="+tc.forget, func(t *testing.T) {
			p := scenario.NewPair(t)
			e := p.ESP(t, scenario.ESPOptions{})
			x := startExporter(t, nil, append(wireOnly, "--peers.forget-after="+tc.forget)...)
			x.waitFor(t, "ipsec_wire_peers", labels("netns", p.A.Name), 1)
			if got := p.A.Ping(t, e.BAddr, 3); got != 3 {
				t.Fatalf("%d of 3 pings answered through the tunnel", got)
			}

			// DPD on A: the daemon deletes the peer's SAs and policies.
			if err := p.A.NL.XfrmPolicyFlush(); err != nil {
				t.Fatal(err)
			}
			if err := p.A.NL.XfrmStateFlush(0); err != nil {
				t.Fatal(err)
			}
			if tc.remember {
				x.waitFor(t, "ipsec_wire_peers_remembered", labels("netns", p.A.Name), 1)
			} else {
				x.waitFor(t, "ipsec_wire_peers", labels("netns", p.A.Name), 0)
			}
			before := p.B.XfrmStat(t)
			// B still requires ESP from A: it drops the plaintext.
			if got := p.A.PingTimeout(t, e.BAddr, leaked, 500*time.Millisecond); got != 0 {
				t.Fatalf("%d plaintext pings answered, want 0 (B's policy drops them)", got)
			}
			t.Logf("B's xfrm_stat moved: %s", p.B.XfrmStat(t).Sub(before))
			x.waitFor(t, "ipsec_wire_unprotected_packets_total",
				labels("netns", p.B.Name, "peer", e.AAddr.String(), "direction", "ingress"), leaked)
			s := x.samples(t)
			out, ok := s.find(t, "ipsec_wire_unprotected_packets_total",
				labels("netns", p.A.Name, "peer", e.BAddr.String(), "direction", "egress"))
			if tc.remember && out != leaked {
				t.Errorf("A egress to its remembered peer: %v unprotected packets, want %d", out, leaked)
			}
			if !tc.remember && ok {
				t.Errorf("A egress to a forgotten peer: %v unprotected packets counted", out)
			}
			t.Logf("kernel %s, forget-after %s: %d pings leaked in plaintext after A's SAs and policies went: unprotected A egress %v (present %v), B ingress %v; A's peers %v, remembered %v",
				scenario.Kernel(), tc.forget, leaked, out, ok,
				s.get(t, "ipsec_wire_unprotected_packets_total", labels("netns", p.B.Name, "peer", e.AAddr.String(), "direction", "ingress")),
				s.get(t, "ipsec_wire_peers", labels("netns", p.A.Name)), s.get(t, "ipsec_wire_peers_remembered", labels("netns", p.A.Name)))
		})
	}
}

// ourFilters describes the wire program's cls_bpf filters and the clsact
// qdisc on an interface of n.
func ourFilters(t *testing.T, n *scenario.Netns, ifname string) (filters []string, clsact bool) {
	t.Helper()
	l, err := n.NL.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	qdiscs, err := n.NL.QdiscList(l)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qdiscs {
		clsact = clsact || q.Type() == "clsact"
	}
	if !clsact {
		return nil, false
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := n.NL.FilterList(l, parent)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			if b, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(b.Name, "ipsec_exporter_wire") {
				filters = append(filters, fmt.Sprintf("%x:%s", parent, b.Name))
			}
		}
	}
	return filters, true
}

// TestLabWireKilledInTCMode: in tc attach mode (the only one on 6.1) the
// cls_bpf filters outlive an exporter killed with SIGKILL. A restart that
// selects fewer interfaces removes them from the others, with the clsact
// qdisc that held only them, and counts without a second copy; SIGTERM then
// removes everything it made, qdisc included (issue 14 finding 4).
func TestLabWireKilledInTCMode(t *testing.T) {
	scenario.RequireVM(t)
	p := scenario.NewPair(t)
	e := p.ESP(t, scenario.ESPOptions{})
	spare := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "spare0"}, PeerName: "spare1"}
	if err := p.A.NL.LinkAdd(spare); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"spare0", "spare1"} {
		l, err := p.A.NL.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.A.NL.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	args := append(wireOnly, "--collector.netns.name="+p.A.Name, "--collector.wire.attach-mode=tc")
	first := startExporter(t, nil, args...)
	for _, name := range []string{"eth0", "spare0", "spare1"} {
		first.waitFor(t, "ipsec_bpf_wire_interface_attached", labels("netns", p.A.Name, "interface", name, "mode", "tc"), 1)
	}
	first.stop(t, syscall.SIGKILL)
	for _, name := range []string{"eth0", "spare0", "spare1"} {
		if fs, _ := ourFilters(t, p.A.Netns, name); len(fs) != 2 {
			t.Fatalf("%s after SIGKILL: our filters %v, want the two the killed exporter left", name, fs)
		}
	}

	second := startExporter(t, nil, append(args, "--collector.wire.interfaces=eth0")...)
	second.waitFor(t, "ipsec_bpf_wire_interface_attached", labels("netns", p.A.Name, "interface", "eth0", "mode", "tc"), 1)
	for _, name := range []string{"spare0", "spare1"} {
		if fs, clsact := ourFilters(t, p.A.Netns, name); len(fs) != 0 || clsact {
			t.Errorf("%s, no longer selected: our filters %v, clsact qdisc %v; want neither", name, fs, clsact)
		}
	}
	if fs, _ := ourFilters(t, p.A.Netns, "eth0"); len(fs) != 2 {
		t.Errorf("eth0: our filters %v, want one at ingress and one at egress", fs)
	}
	const pings = 4
	if got := p.A.Ping(t, e.BAddr, pings); got != pings {
		t.Fatalf("%d of %d pings answered", got, pings)
	}
	second.waitFor(t, "ipsec_wire_packets_total", labels("netns", p.A.Name, "interface", "eth0", "direction", "egress", "class", "esp"), pings)

	second.stop(t, syscall.SIGTERM)
	if fs, clsact := ourFilters(t, p.A.Netns, "eth0"); len(fs) != 0 || clsact {
		t.Errorf("eth0 after SIGTERM: our filters %v, clsact qdisc %v; want neither", fs, clsact)
	}
	t.Logf("kernel %s, tc mode: SIGKILL left 2 filters on each of 3 interfaces; the restart selecting eth0 removed them and the clsact qdisc from spare0 and spare1, counted %d ESP packets for %d pings; SIGTERM left nothing",
		scenario.Kernel(), pings, pings)
}
