package scenario

import (
	"encoding/binary"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Capture records the ESP frames (plain ESP or ESP in UDP 4500) a node
// receives on its link, as whole Ethernet frames, on an AF_PACKET socket.
type Capture struct {
	fd      int
	mu      sync.Mutex
	frames  [][]byte
	done    chan struct{}
	stopped chan struct{}
}

// CaptureESP starts capturing on n's link; stop it with Stop.
func (n *Node) CaptureESP(t TB) *Capture {
	t.Helper()
	l, err := n.NL.LinkByName(n.Link)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	c := &Capture{done: make(chan struct{})}
	err = n.Do(func() error {
		var err error
		c.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		return unix.Bind(c.fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.Attrs().Index})
	})
	if err != nil {
		t.Fatalf("%s: AF_PACKET socket: %v", n.Name, err)
	}
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatalf("SO_RCVTIMEO: %v", err)
	}
	c.stopped = make(chan struct{})
	go c.loop()
	t.Cleanup(func() {
		c.Stop()
		unix.Close(c.fd)
	})
	return c
}

// loop reads frames until Stop, then drains what the socket still holds:
// a frame the kernel delivered before Stop is never missed.
func (c *Capture) loop() {
	defer close(c.stopped)
	buf := make([]byte, 65536)
	stopping := false
	for {
		if !stopping {
			select {
			case <-c.done:
				stopping = true
			default:
			}
		}
		flags := 0
		if stopping {
			flags = unix.MSG_DONTWAIT
		}
		l, from, err := unix.Recvfrom(c.fd, buf, flags)
		if err != nil {
			if stopping {
				return
			}
			continue // SO_RCVTIMEO: look at done again
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Pkttype != unix.PACKET_HOST || !isESP(buf[:l]) {
			continue
		}
		c.mu.Lock()
		c.frames = append(c.frames, append([]byte(nil), buf[:l]...))
		c.mu.Unlock()
	}
}

// Stop ends the capture and returns the frames seen so far.
func (c *Capture) Stop() [][]byte {
	select {
	case <-c.done:
	default:
		close(c.done)
	}
	<-c.stopped
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.frames...)
}

// isESP reports whether an Ethernet frame carries ESP (IP protocol 50) or
// ESP in UDP (port 4500, non-zero first word: not a keepalive or IKE).
func isESP(f []byte) bool {
	if len(f) < 14 {
		return false
	}
	var proto byte
	var l4 []byte
	switch binary.BigEndian.Uint16(f[12:14]) {
	case unix.ETH_P_IP:
		if len(f) < 34 {
			return false
		}
		ihl := int(f[14]&0x0f) * 4
		proto, l4 = f[23], f[14+ihl:]
	case unix.ETH_P_IPV6:
		if len(f) < 54 {
			return false
		}
		proto, l4 = f[20], f[54:]
	default:
		return false
	}
	switch proto {
	case unix.IPPROTO_ESP:
		return true
	case unix.IPPROTO_UDP:
		return len(l4) >= 12 && binary.BigEndian.Uint16(l4[2:4]) == 4500 && binary.BigEndian.Uint32(l4[8:12]) != 0
	}
	return false
}

// SendFrames sends whole Ethernet frames out of n's link, e.g. captured
// ESP frames again to provoke replay errors at the receiver.
func (n *Node) SendFrames(t TB, frames [][]byte) {
	t.Helper()
	l, err := n.NL.LinkByName(n.Link)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	var fd int
	err = n.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatalf("%s: AF_PACKET socket: %v", n.Name, err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Ifindex: l.Attrs().Index, Halen: 6}
	for _, f := range frames {
		copy(to.Addr[:], f[0:6])
		if err := unix.Sendto(fd, f, 0, to); err != nil {
			t.Fatalf("%s: send frame: %v", n.Name, err)
		}
	}
}

// Replay sends count pings from A to B over e while capturing the ESP
// frames B receives, then sends those frames again from A: B's xfrm_input
// sees them as replays. It returns the number of frames replayed.
func (p *Pair) Replay(t TB, e *ESP, count int) int {
	t.Helper()
	c := p.B.CaptureESP(t)
	if got := p.A.Ping(t, e.BAddr, count); got != count {
		t.Fatalf("replay: ping %s: %d of %d replies", e.BAddr, got, count)
	}
	frames := c.Stop()
	p.A.SendFrames(t, frames)
	return len(frames)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
