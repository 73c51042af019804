package scenario

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Ping sends exactly count ICMP echo requests from n to dst, back to back,
// and returns how many replies came back (waiting up to 2s after the last).
func (n *Netns) Ping(t TB, dst netip.Addr, count int) int {
	t.Helper()
	return n.PingTimeout(t, dst, count, 2*time.Second)
}

// PingTimeout is Ping with a chosen wait for replies; use a short one when
// no reply is expected (fault scenarios).
func (n *Netns) PingTimeout(t TB, dst netip.Addr, count int, timeout time.Duration) int {
	t.Helper()
	network, listen, proto := "ip4:icmp", "0.0.0.0", 1
	var reqType, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() {
		network, listen, proto = "ip6:ipv6-icmp", "::", 58
		reqType, replyType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	var c *icmp.PacketConn
	err := n.Do(func() error {
		var err error
		c, err = icmp.ListenPacket(network, listen)
		return err
	})
	if err != nil {
		t.Fatalf("%s: icmp socket: %v", n.Name, err)
	}
	defer c.Close()
	id := rand.IntN(0xffff) + 1
	for seq := range count {
		msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("ipsec-lab ping")}}
		b, err := msg.Marshal(nil)
		if err != nil {
			t.Fatalf("icmp marshal: %v", err)
		}
		if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			t.Logf("%s: ping %s seq %d: %v", n.Name, dst, seq, err)
		}
	}
	got := map[int]bool{}
	buf := make([]byte, 1500)
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	for len(got) < count {
		l, _, err := c.ReadFrom(buf)
		if err != nil {
			break // deadline
		}
		m, err := icmp.ParseMessage(proto, buf[:l])
		if err != nil || m.Type != replyType {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && e.Seq < count {
			got[e.Seq] = true
		}
	}
	return len(got)
}
