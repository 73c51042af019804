package bench

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// wirePackets is what n's link has sent and received: every packet between
// the two nodes of a pair, both ways (the neighbours are static: nothing
// else is on the link).
func wirePackets(t *testing.T, n *scenario.Node) uint64 {
	t.Helper()
	l, err := n.NL.LinkByName(n.Link)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	s := l.Attrs().Statistics
	if s == nil {
		t.Fatalf("%s: %s has no statistics", n.Name, n.Link)
	}
	return s.TxPackets + s.RxPackets
}

// udpPort is where sendUDP's receiver listens.
const udpPort = 5002

// sendUDP sends count datagrams of size bytes from `from` to the dsts in
// turn and waits until `to` has received every one: a fixed number of
// packets, whatever the kernel's timing. The receive buffer is forced large
// enough for all of them, so none is dropped while the one vCPU is busy
// sending.
func sendUDP(t *testing.T, from, to *scenario.Netns, dsts []netip.Addr, count, size int) {
	t.Helper()
	network := "udp4"
	if dsts[0].Is6() {
		network = "udp6"
	}
	var rx *net.UDPConn
	err := to.Do(func() (err error) {
		rx, err = net.ListenUDP(network, &net.UDPAddr{Port: udpPort})
		if err != nil {
			return err
		}
		return forceRcvbuf(rx, (count+64)*(size+1024))
	})
	if err != nil {
		t.Fatalf("%s: udp receiver: %v", to.Name, err)
	}
	defer rx.Close()
	var got atomic.Int64
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for got.Load() < int64(count) {
			_ = rx.SetReadDeadline(time.Now().Add(time.Minute))
			if _, _, err := rx.ReadFromUDP(buf); err != nil {
				done <- err
				return
			}
			got.Add(1)
		}
		done <- nil
	}()
	var tx *net.UDPConn
	if err := from.Do(func() (err error) { tx, err = net.ListenUDP(network, nil); return err }); err != nil {
		t.Fatalf("%s: udp sender: %v", from.Name, err)
	}
	defer tx.Close()
	addrs := make([]*net.UDPAddr, len(dsts))
	for i, d := range dsts {
		addrs[i] = net.UDPAddrFromAddrPort(netip.AddrPortFrom(d, udpPort))
	}
	payload := bytes.Repeat([]byte{0x5a}, size)
	for i := range count {
		if _, err := tx.WriteToUDP(payload, addrs[i%len(addrs)]); err != nil {
			t.Fatalf("%s: send datagram %d to %s: %v", from.Name, i, addrs[i%len(addrs)], err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("%s: received %d of %d datagrams: %v", to.Name, got.Load(), count, err)
	}
}

func forceRcvbuf(c *net.UDPConn, n int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("SO_RCVBUFFORCE: %w", serr)
	}
	return nil
}

// manyPeers gives B n more addresses (10.79.x.y, routed from A through B's
// own address) and A one transport-mode SA and one outbound policy to each:
// n peers of A, each with its own SA, for round-robin traffic A -> B. B has
// the same SAs to decrypt with; traffic goes one way only, so no SAs back.
func manyPeers(t *testing.T, p *scenario.Pair, n int) []netip.Addr {
	t.Helper()
	bl, err := p.B.NL.LinkByName(p.B.Link)
	if err != nil {
		t.Fatal(err)
	}
	al, err := p.A.NL.LinkByName(p.A.Link)
	if err != nil {
		t.Fatal(err)
	}
	peers := make([]netip.Addr, n)
	for i := range n {
		peers[i] = netip.AddrFrom4([4]byte{10, 79, byte(i / 250), byte(i%250 + 1)})
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: peers[i].AsSlice(), Mask: net.CIDRMask(32, 32)}}
		if err := p.B.NL.AddrAdd(bl, addr); err != nil {
			t.Fatalf("%s: add %s: %v", p.B.Name, peers[i], err)
		}
	}
	route := &netlink.Route{LinkIndex: al.Attrs().Index, Gw: p.B.IPv4.AsSlice(),
		Dst: &net.IPNet{IP: net.IP{10, 79, 0, 0}, Mask: net.CIDRMask(16, 32)}}
	if err := p.A.NL.RouteAdd(route); err != nil {
		t.Fatalf("%s: route to the peers: %v", p.A.Name, err)
	}
	for i, peer := range peers {
		sa := &netlink.XfrmState{
			Src: p.A.IPv4.AsSlice(), Dst: peer.AsSlice(), Proto: netlink.XFRM_PROTO_ESP,
			Mode: netlink.XFRM_MODE_TRANSPORT, Spi: 0x70000 + i, Reqid: 0x700 + i, ReplayWindow: 32,
			Aead: &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: bytes.Repeat([]byte{byte(i) | 1}, 20), ICVLen: 128},
		}
		scenario.AddSA(t, p.A.Netns, sa)
		scenario.AddSA(t, p.B.Netns, sa)
		scenario.AddPolicy(t, p.A.Netns, &netlink.XfrmPolicy{
			Src: &net.IPNet{IP: p.A.IPv4.AsSlice(), Mask: net.CIDRMask(32, 32)},
			Dst: &net.IPNet{IP: peer.AsSlice(), Mask: net.CIDRMask(32, 32)},
			Dir: netlink.XFRM_DIR_OUT,
			Tmpls: []netlink.XfrmPolicyTmpl{{Src: p.A.IPv4.AsSlice(), Dst: peer.AsSlice(), Proto: netlink.XFRM_PROTO_ESP,
				Mode: netlink.XFRM_MODE_TRANSPORT, Reqid: 0x700 + i}},
		})
	}
	return peers
}
