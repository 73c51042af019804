package scenario

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netlink"
)

// Gateway is three namespaces: a client C behind gateway A, and B, with an
// IPv4 ESP tunnel between A and B. Traffic from C to B's inner address Server
// is forwarded by A into the tunnel. This is the path where the kernel
// segments GSO packets after xfrm_output (locally generated TCP over
// transport mode is segmented before it, one xfrm_output per ESP packet).
type Gateway struct {
	C, A, B *Node
	AtoC    *Node      // A's side of the C link (same namespace as A)
	ESP     *ESP       // hand-made SAs (NewGateway), or
	IKE     *IKE       // negotiated by daemons (NewIKEGateway)
	Client  netip.Addr // C's address
	Server  netip.Addr // B's inner address
}

// NewGateway builds the three namespaces and the tunnel; o.Tunnel and
// o.ASubnet are set for you, IPv6 is not supported.
func NewGateway(t TB, o ESPOptions) *Gateway {
	t.Helper()
	return newGateway(t, func(p *Pair, subnet netip.Prefix) (*ESP, *IKE, netip.Addr) {
		o.Tunnel, o.IPv6 = true, false
		o.ASubnet = subnet
		e := p.ESP(t, o)
		return e, nil, e.BAddr
	})
}

// NewIKEGateway is NewGateway with the tunnel negotiated by real daemons
// (a on the gateway A, b on B); o.Tunnel and o.ASubnet are set for you.
func NewIKEGateway(t TB, a, b DaemonKind, o IKEOptions) *Gateway {
	t.Helper()
	return newGateway(t, func(p *Pair, subnet netip.Prefix) (*ESP, *IKE, netip.Addr) {
		o.Tunnel, o.IPv6 = true, false
		o.ASubnet = subnet
		e := p.IKE(t, a, b, o)
		return nil, e, e.BAddr
	})
}

func newGateway(t TB, tunnel func(p *Pair, subnet netip.Prefix) (*ESP, *IKE, netip.Addr)) *Gateway {
	t.Helper()
	p := NewPair(t)
	c := &Node{Netns: NewNetns(t, "c"), Link: "eth0", IPv4: netip.MustParseAddr("10.79.0.2")}
	ac := &Node{Netns: p.A.Netns, Link: "eth1", IPv4: netip.MustParseAddr("10.79.0.1")}
	Connect(t, ac, c, 24, 0)
	subnet := netip.MustParsePrefix("10.79.0.0/24")
	esp, ike, server := tunnel(p, subnet)
	g := &Gateway{C: c, A: p.A, B: p.B, AtoC: ac, ESP: esp, IKE: ike, Client: c.IPv4, Server: server}

	SetSysctl(t, p.A.Netns, "net/ipv4/ip_forward", "1")
	l, err := c.NL.LinkByName(c.Link)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.NL.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: ac.IPv4.AsSlice()}); err != nil {
		t.Fatalf("%s: default route: %v", c.Name, err)
	}
	lb, err := p.B.NL.LinkByName(p.B.Link)
	if err != nil {
		t.Fatal(err)
	}
	r := &netlink.Route{LinkIndex: lb.Attrs().Index, Dst: ipNet(subnet), Gw: p.A.IPv4.AsSlice(), Src: server.AsSlice()}
	if err := p.B.NL.RouteAdd(r); err != nil {
		t.Fatalf("%s: route %s: %v", p.B.Name, subnet, err)
	}
	return g
}

// SetSysctl writes a sysctl below /proc/sys inside n (net.* sysctls are
// per namespace).
func SetSysctl(t TB, n *Netns, name, value string) {
	t.Helper()
	err := n.Do(func() error {
		return os.WriteFile("/proc/sys/"+name, []byte(value+"\n"), 0)
	})
	if err != nil {
		t.Fatalf("%s: sysctl %s=%s: %v", n.Name, name, value, err)
	}
}

// BulkTCP sends size bytes over one TCP connection from a socket in from to
// a listener on dst:5001 in to, and returns once all bytes were received.
func BulkTCP(t TB, from, to *Netns, dst netip.Addr, size int) {
	t.Helper()
	addr := netip.AddrPortFrom(dst, 5001).String()
	var ln net.Listener
	if err := to.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("%s: listen %s: %v", to.Name, addr, err)
	}
	defer ln.Close()
	received := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			received <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
		n, err := io.Copy(io.Discard, c)
		if err == nil && n != int64(size) {
			err = fmt.Errorf("received %d of %d bytes", n, size)
		}
		received <- err
	}()
	var c net.Conn
	err := from.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 10*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("%s: dial %s: %v", from.Name, addr, err)
	}
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	buf := make([]byte, 64<<10)
	for sent := 0; sent < size; {
		n := min(len(buf), size-sent)
		if _, err := c.Write(buf[:n]); err != nil {
			c.Close()
			t.Fatalf("%s: send to %s: %v", from.Name, addr, err)
		}
		sent += n
	}
	if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("close: %v", err)
	}
	if err := <-received; err != nil {
		t.Fatalf("%s: receive on %s: %v", to.Name, addr, err)
	}
}
