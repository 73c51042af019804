package scenario

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// PingResult is what a continuous ping saw.
type PingResult struct {
	Sent    int // echo requests handed to the kernel (sendto succeeded)
	Failed  int // sendto errors (e.g. an SA that just expired)
	Replies int // distinct echo replies received
}

// PingFor sends one echo request from n to dst every interval for d, then
// waits up to 2s for the last replies: continuous traffic across rekeys.
func (n *Netns) PingFor(t TB, dst netip.Addr, interval, d time.Duration) PingResult {
	t.Helper()
	network, listen, proto := "ip4:icmp", "0.0.0.0", 1
	var reqType, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() {
		network, listen, proto = "ip6:ipv6-icmp", "::", 58
		reqType, replyType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	var c *icmp.PacketConn
	if err := n.Do(func() (err error) { c, err = icmp.ListenPacket(network, listen); return err }); err != nil {
		t.Fatalf("%s: icmp socket: %v", n.Name, err)
	}
	defer c.Close()
	id := rand.IntN(0xffff) + 1
	var (
		mu   sync.Mutex
		got  = map[int]bool{}
		res  PingResult
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			l, _, err := c.ReadFrom(buf)
			if err != nil {
				return // deadline set after the last request
			}
			m, err := icmp.ParseMessage(proto, buf[:l])
			if err != nil || m.Type != replyType {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id {
				mu.Lock()
				got[e.Seq] = true
				mu.Unlock()
			}
		}
	}()
	end := time.Now().Add(d)
	for seq := 0; time.Now().Before(end); seq++ {
		msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq & 0xffff, Data: []byte("ipsec-lab ping")}}
		b, err := msg.Marshal(nil)
		if err != nil {
			t.Fatalf("icmp marshal: %v", err)
		}
		if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			res.Failed++
		} else {
			res.Sent++
		}
		time.Sleep(interval)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	<-done
	res.Replies = len(got)
	return res
}
