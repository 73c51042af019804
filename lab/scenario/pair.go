package scenario

import (
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Node is one end of a veth link: a namespace, its interface and addresses.
type Node struct {
	*Netns
	Link string     // interface name in the namespace
	IPv4 netip.Addr // address on Link
	IPv6 netip.Addr // address on Link (no DAD)
	MAC  net.HardwareAddr
}

// Addr returns the node's IPv6 address if v6, else its IPv4 address.
func (n *Node) Addr(v6 bool) netip.Addr {
	if v6 {
		return n.IPv6
	}
	return n.IPv4
}

// Pair is two namespaces A and B joined by a veth pair ("eth0" on both
// sides), A = 10.77.0.1 / fd77::1, B = 10.77.0.2 / fd77::2 (NewPairNamed
// picks another subnet). Neighbour entries
// are static, so no ARP or neighbour discovery runs: every packet sent is one
// the test asked for.
type Pair struct {
	A, B *Node
}

// NewPair builds a Pair and waits until the link is up both ways.
func NewPair(t TB) *Pair {
	t.Helper()
	return NewPairNamed(t, "a", "b", 0)
}

// NewPairNamed is NewPair with chosen namespace name prefixes and subnet:
// A = 10.77.<subnet>.1 / fd77:<subnet>::1, B = ....2 / ...::2. Distinct
// subnets keep peers apart when one exporter watches several pairs.
func NewPairNamed(t TB, aPrefix, bPrefix string, subnet uint8) *Pair {
	t.Helper()
	a, b := NewNetns(t, aPrefix), NewNetns(t, bPrefix)
	v4 := func(host byte) netip.Addr { return netip.AddrFrom4([4]byte{10, 77, subnet, host}) }
	v6 := func(host byte) netip.Addr {
		return netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x77, 3: subnet, 15: host})
	}
	p := &Pair{
		A: &Node{Netns: a, Link: "eth0", IPv4: v4(1), IPv6: v6(1)},
		B: &Node{Netns: b, Link: "eth0", IPv4: v4(2), IPv6: v6(2)},
	}
	Connect(t, p.A, p.B, 24, 64)
	return p
}

// Connect joins x and y (whose Link, IPv4 and IPv6 are set) with a veth
// pair, configures the addresses with the given prefix lengths, sets static
// neighbours and waits for the link to be up on both sides.
func Connect(t TB, x, y *Node, prefix4, prefix6 int) {
	t.Helper()
	// Fresh namespaces number their first veth 2 on both sides. A veth whose
	// peer has its own ifindex is not an "urgent" linkwatch event on 6.1, so
	// the link came up a second late; a distinct index on x's side avoids it.
	links, err := x.NL.LinkList()
	if err != nil {
		t.Fatalf("%s: links: %v", x.Name, err)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: x.Link, Index: 100 + len(links)},
		PeerName:      y.Link,
		PeerNamespace: netlink.NsFd(int(y.handle)),
	}
	if err := x.NL.LinkAdd(veth); err != nil {
		t.Fatalf("veth %s/%s - %s/%s: %v", x.Name, x.Link, y.Name, y.Link, err)
	}
	for _, n := range []*Node{x, y} {
		l, err := n.NL.LinkByName(n.Link)
		if err != nil {
			t.Fatalf("%s: %s: %v", n.Name, n.Link, err)
		}
		n.MAC = l.Attrs().HardwareAddr
		for _, a := range []struct {
			ip    netip.Addr
			bits  int
			flags int
		}{{n.IPv4, prefix4, 0}, {n.IPv6, prefix6, unix.IFA_F_NODAD}} {
			if !a.ip.IsValid() {
				continue
			}
			addr := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(a.ip, a.bits)), Flags: a.flags}
			if err := n.NL.AddrAdd(l, addr); err != nil {
				t.Fatalf("%s: add %s: %v", n.Name, addr, err)
			}
		}
		if err := n.NL.LinkSetUp(l); err != nil {
			t.Fatalf("%s: %s up: %v", n.Name, n.Link, err)
		}
	}
	for _, pair := range [][2]*Node{{x, y}, {y, x}} {
		StaticNeighbour(t, pair[0], pair[1].IPv4, pair[1].MAC)
		StaticNeighbour(t, pair[0], pair[1].IPv6, pair[1].MAC)
	}
	waitUp(t, x)
	waitUp(t, y)
	WaitLocal(t, x.Netns, x.IPv6)
	WaitLocal(t, y.Netns, y.IPv6)
}

// WaitLocal waits until the kernel delivers packets for ip locally in n.
// IPv6 installs an address's local route from a work queue (even with
// NODAD), so packets arriving right after the address was added can be
// dropped as unroutable; on a busy machine this took long enough to lose
// whole ping runs. IPv4 installs the route synchronously.
func WaitLocal(t TB, n *Netns, ip netip.Addr) {
	t.Helper()
	if !ip.IsValid() || !ip.Is6() {
		return
	}
	filter := &netlink.Route{Table: unix.RT_TABLE_LOCAL, Dst: ipNet(netip.PrefixFrom(ip, 128))}
	deadline := time.Now().Add(5 * time.Second)
	for {
		routes, err := n.NL.RouteListFiltered(netlink.FAMILY_V6, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
		if err != nil {
			t.Fatalf("%s: local routes: %v", n.Name, err)
		}
		if len(routes) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no local route for %s after 5s", n.Name, ip)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// StaticNeighbour adds a permanent neighbour entry for ip on n's link.
func StaticNeighbour(t TB, n *Node, ip netip.Addr, mac net.HardwareAddr) {
	t.Helper()
	if !ip.IsValid() {
		return
	}
	l, err := n.NL.LinkByName(n.Link)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	family := unix.AF_INET
	if ip.Is6() {
		family = unix.AF_INET6
	}
	err = n.NL.NeighSet(&netlink.Neigh{
		LinkIndex: l.Attrs().Index, Family: family, State: netlink.NUD_PERMANENT,
		IP: ip.AsSlice(), HardwareAddr: mac,
	})
	if err != nil {
		t.Fatalf("%s: neighbour %s: %v", n.Name, ip, err)
	}
}

// waitUp waits until n's link reports carrier (operstate up).
func waitUp(t TB, n *Node) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := n.NL.LinkByName(n.Link)
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		if l.Attrs().OperState == netlink.OperUp {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not up after 5s (operstate %s)", n.Name, n.Link, l.Attrs().OperState)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
