package wire

import (
	"net"
	"net/netip"
	"regexp"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// labMode is the attach mode auto must settle on: tcx exists from 6.6.
func labMode(t *testing.T) Mode {
	switch scenario.Kernel() {
	case "6.1":
		return ModeTC
	case "6.12":
		return ModeTCX
	}
	t.Fatalf("unknown lab kernel %q", scenario.Kernel())
	return ""
}

func startLab(t *testing.T, n *scenario.Node) *Monitor {
	t.Helper()
	ns := n.Handle()
	m, err := Start(Config{Netns: &ns})
	if err != nil {
		t.Fatalf("Start in %s: %v", n.Name, err)
	}
	t.Cleanup(func() { _ = m.Close() })
	got := m.Interfaces()
	if len(got) != 1 || got[0].Name != n.Link || !got[0].Attached || got[0].Mode != labMode(t) {
		t.Fatalf("%s: interfaces %+v, want %s attached with %s", n.Name, got, n.Link, labMode(t))
	}
	return m
}

// TestLabWireESP: real ESP (transport, IPv4 and IPv6, and NAT-T) between two
// namespaces counts as esp or esp_in_udp, exactly as many packets as the SAs
// carried, on both ends; nothing is plaintext; auto picks clsact on 6.1 and
// tcx on 6.12.
func TestLabWireESP(t *testing.T) {
	scenario.RequireVM(t)
	const pings = 10
	for _, tc := range []struct {
		name  string
		opts  scenario.ESPOptions
		class Class
	}{
		{"ipv4", scenario.ESPOptions{}, ClassESP},
		{"ipv6", scenario.ESPOptions{IPv6: true}, ClassESP},
		{"natt", scenario.ESPOptions{NATT: true}, ClassESPInUDP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := scenario.NewPair(t)
			e := p.ESP(t, tc.opts)
			mA, mB := startLab(t, p.A), startLab(t, p.B)
			checkPeers(t, mA, e.AB.Dst)
			checkPeers(t, mB, e.AB.Src)

			if got := p.A.Ping(t, e.BAddr, pings); got != pings {
				t.Fatalf("%d of %d pings answered", got, pings)
			}
			sentAB := p.A.SACounters(t, e.AB)["packets"]
			sentBA := p.B.SACounters(t, e.BA)["packets"]
			if sentAB != pings || sentBA != pings {
				t.Fatalf("SAs carried %d and %d packets, want %d", sentAB, sentBA, pings)
			}
			for _, c := range []struct {
				side string
				m    *Monitor
				d    Direction
				want uint64
			}{
				{"A", mA, Egress, sentAB}, {"B", mB, Ingress, sentAB},
				{"B", mB, Egress, sentBA}, {"A", mA, Ingress, sentBA},
			} {
				if got := wireCount(t, c.m, c.d, tc.class); got != c.want {
					t.Errorf("%s %s %s: %d packets, want %d", c.side, c.d, tc.class, got, c.want)
				}
				// Plaintext is not checked for zero: the kernel's
				// IPv6 on the link sends MLD reports of its own
				// (to multicast groups, not to the peer).
			}
			checkUnprotected(t, "A", mA, Egress, nil)
			checkUnprotected(t, "B", mB, Ingress, nil)
			t.Logf("kernel %s, %s: %d pings; SAs A->B %d, B->A %d packets; %s counted A egress %d, B ingress %d, B egress %d, A ingress %d",
				scenario.Kernel(), labMode(t), pings, sentAB, sentBA, tc.class,
				wireCount(t, mA, Egress, tc.class), wireCount(t, mB, Ingress, tc.class),
				wireCount(t, mB, Egress, tc.class), wireCount(t, mA, Ingress, tc.class))
		})
	}
}

// TestLabWirePolicyHole: A has ESP with B but a higher-priority "allow"
// policy for UDP port 7777 (a hole). Datagrams through the hole are
// unprotected traffic to the peer, exactly as many as were sent, on A's
// egress and B's ingress; pings through the SAs are not.
func TestLabWirePolicyHole(t *testing.T) {
	scenario.RequireVM(t)
	const datagrams, pings = 7, 5
	p := scenario.NewPair(t)
	e := p.ESP(t, scenario.ESPOptions{})
	hole := &netlink.XfrmPolicy{
		Src:      &net.IPNet{IP: e.AAddr.AsSlice(), Mask: net.CIDRMask(32, 32)},
		Dst:      &net.IPNet{IP: e.BAddr.AsSlice(), Mask: net.CIDRMask(32, 32)},
		Proto:    netlink.Proto(17),
		DstPort:  7777,
		Dir:      netlink.XFRM_DIR_OUT,
		Priority: 1,
		Action:   netlink.XFRM_POLICY_ALLOW,
	}
	// The scenario's policies have priority 0, the most preferred: move
	// A's out policy behind the hole.
	pols, err := p.A.NL.XfrmPolicyList(netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, pol := range pols {
		if pol.Dir == netlink.XFRM_DIR_OUT {
			pol.Priority = 10
			if err := p.A.NL.XfrmPolicyUpdate(&pol); err != nil {
				t.Fatal(err)
			}
		}
	}
	scenario.AddPolicy(t, p.A.Netns, hole)
	mA, mB := startLab(t, p.A), startLab(t, p.B)

	if got := p.A.Ping(t, e.BAddr, pings); got != pings {
		t.Fatalf("%d of %d pings answered", got, pings)
	}
	statB := p.B.XfrmStat(t)
	var conn net.PacketConn
	err = p.A.Do(func() (err error) {
		conn, err = net.ListenPacket("udp4", ":0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	payload := make([]byte, 100)
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(e.BAddr, 7777))
	for range datagrams {
		if _, err := conn.WriteTo(payload, dst); err != nil {
			t.Fatal(err)
		}
	}
	// B drops them at its inbound policy check, after its TC hook.
	const frame = 14 + 20 + 8 + 100
	want := Counter{Packets: datagrams, Bytes: datagrams * frame}
	waitFor(t, "B to see the datagrams", func() bool {
		u, _ := mB.UnprotectedCounters()
		return u[PeerKey{Peer: e.AAddr, Direction: Ingress}].Packets >= datagrams
	})
	checkUnprotected(t, "A", mA, Egress, map[netip.Addr]Counter{e.BAddr: want})
	checkUnprotected(t, "B", mB, Ingress, map[netip.Addr]Counter{e.AAddr: want})
	if got := wireCount(t, mA, Egress, ClassESP); got != pings {
		t.Errorf("A egress esp: %d, want %d", got, pings)
	}
	// Plaintext may hold an MLD report of A's own IPv6 besides.
	if got := wireCount(t, mA, Egress, ClassPlaintext); got < datagrams {
		t.Errorf("A egress plaintext: %d, want at least %d", got, datagrams)
	}
	t.Logf("B's xfrm_stat moved: %s", p.B.XfrmStat(t).Sub(statB))
	uA, _ := mA.UnprotectedCounters()
	uB, _ := mB.UnprotectedCounters()
	t.Logf("kernel %s, %s: %d datagrams sent through the hole; unprotected A egress to %s %d, B ingress from %s %d; %d pings, A egress esp %d",
		scenario.Kernel(), labMode(t), datagrams, e.BAddr, uA[PeerKey{Peer: e.BAddr, Direction: Egress}].Packets,
		e.AAddr, uB[PeerKey{Peer: e.AAddr, Direction: Ingress}].Packets, pings, wireCount(t, mA, Egress, ClassESP))
}

// TestLabWireGateway: TCP forwarded by gateway A into a tunnel is segmented
// after xfrm_output (GSO); every ESP packet on the wire is counted, exactly
// as many as the tunnel SA carried, on A's egress and B's ingress. The
// plaintext from the client arrives on A's other interface and is not
// traffic to a peer.
func TestLabWireGateway(t *testing.T) {
	scenario.RequireVM(t)
	g := scenario.NewGateway(t, scenario.ESPOptions{})
	nsA, nsB := g.A.Handle(), g.B.Handle()
	mA, err := Start(Config{Netns: &nsA})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mA.Close() })
	mB, err := Start(Config{Netns: &nsB})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mB.Close() })
	if n := len(mA.Interfaces()); n != 2 {
		t.Fatalf("gateway: %d interfaces attached, want 2 (to B and to the client)", n)
	}

	const size = 2 << 20
	scenario.BulkTCP(t, g.C.Netns, g.B.Netns, g.Server, size)
	var sentAB, sentBA uint64
	perIf := func(m *Monitor, name string, d Direction, c Class) uint64 {
		var idx int
		for _, i := range m.Interfaces() {
			if i.Name == name {
				idx = i.Ifindex
			}
		}
		got, err := m.WireCounters()
		if err != nil {
			t.Fatal(err)
		}
		return got[WireKey{Ifindex: idx, Direction: d, Class: c}].Packets
	}
	// The connection's last segments (FIN, ACK) may still be in flight:
	// read until the SAs and the wire agree or three seconds pass.
	// The SA counters must stand still around the reading of the wire.
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		sentAB = g.A.SACounters(t, g.ESP.AB)["packets"]
		sentBA = g.B.SACounters(t, g.ESP.BA)["packets"]
		agree := perIf(mA, "eth0", Egress, ClassESP) == sentAB && perIf(mB, "eth0", Ingress, ClassESP) == sentAB &&
			perIf(mB, "eth0", Egress, ClassESP) == sentBA && perIf(mA, "eth0", Ingress, ClassESP) == sentBA
		still := g.A.SACounters(t, g.ESP.AB)["packets"] == sentAB && g.B.SACounters(t, g.ESP.BA)["packets"] == sentBA
		if agree && still || time.Now().After(deadline) {
			break
		}
	}
	for _, c := range []struct {
		where string
		got   uint64
		want  uint64
	}{
		{"A eth0 egress esp", perIf(mA, "eth0", Egress, ClassESP), sentAB},
		{"B eth0 ingress esp", perIf(mB, "eth0", Ingress, ClassESP), sentAB},
		{"B eth0 egress esp", perIf(mB, "eth0", Egress, ClassESP), sentBA},
		{"A eth0 ingress esp", perIf(mA, "eth0", Ingress, ClassESP), sentBA},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d packets, want %d (the SA's count)", c.where, c.got, c.want)
		}
	}
	checkUnprotected(t, "A", mA, Egress, nil)
	checkUnprotected(t, "B", mB, Ingress, nil)
	// The decrypted inner packets re-enter A's eth0 ingress; they are not
	// on the wire and must not count (as plaintext). What plaintext there
	// is on eth0 is IPv6's own (MLD), a handful.
	if got := perIf(mA, "eth0", Ingress, ClassPlaintext); got >= sentBA/10 {
		t.Errorf("A eth0 ingress plaintext: %d packets for %d ESP packets in: decrypted packets counted again", got, sentBA)
	}
	t.Logf("kernel %s: %d MiB client->server through gateway A: SA A->B %d ESP packets, wire A eth0 egress %d, B ingress %d; "+
		"client plaintext into A eth1 %d packets; SA B->A %d, wire %d; A eth0 ingress plaintext %d",
		scenario.Kernel(), size>>20, sentAB, perIf(mA, "eth0", Egress, ClassESP), perIf(mB, "eth0", Ingress, ClassESP),
		perIf(mA, "eth1", Ingress, ClassPlaintext), sentBA, perIf(mA, "eth0", Ingress, ClassESP), perIf(mA, "eth0", Ingress, ClassPlaintext))
}

// TestLabWireSkipsIPsecDevices: by default an xfrm interface (the inner
// side of the tunnels) is not attached, even when up; a regexp can still
// select it.
func TestLabWireSkipsIPsecDevices(t *testing.T) {
	scenario.RequireVM(t)
	p := scenario.NewPair(t)
	x := &netlink.Xfrmi{LinkAttrs: netlink.LinkAttrs{Name: "ipsec0"}, Ifid: 7}
	if err := p.A.NL.LinkAdd(x); err != nil {
		t.Fatalf("xfrm interface: %v", err)
	}
	if err := p.A.NL.LinkSetUp(x); err != nil {
		t.Fatal(err)
	}
	startLab(t, p.A) // fails unless eth0 is the only interface attached
	ns := p.A.Handle()
	m, err := Start(Config{Netns: &ns, Interfaces: regexp.MustCompile(`^ipsec0$`)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Close() }()
	if got := m.Interfaces(); len(got) != 1 || got[0].Name != "ipsec0" || !got[0].Attached {
		t.Errorf("with a regexp: %+v, want ipsec0 attached", got)
	}
}
