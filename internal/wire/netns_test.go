package wire

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// pair is two network namespaces joined by a veth pair, without addresses
// or IPv6, so that nothing but the test's own frames crosses the link.
type pair struct {
	nsA, nsB netns.NsHandle
	nameA    string // namespace names, for `ip netns exec`
	nameB    string
	ifA, ifB int // ifindexes, each in its namespace
	macB     net.HardwareAddr
}

var pairSeq atomic.Int32

// newPair creates the namespaces and veth; t.Cleanup removes them.
func newPair(t *testing.T) *pair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces and attach TC programs")
	}
	n := pairSeq.Add(1)
	p := &pair{
		nameA: fmt.Sprintf("wiretest%d-%da", os.Getpid(), n),
		nameB: fmt.Sprintf("wiretest%d-%db", os.Getpid(), n),
	}
	for _, n := range []struct {
		name string
		h    *netns.NsHandle
	}{{p.nameA, &p.nsA}, {p.nameB, &p.nsB}} {
		run(t, "ip", "netns", "add", n.name)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.name).Run() })
		h, err := netns.GetFromName(n.name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		*n.h = h
		// No IPv6 on the new link: no router solicitations, MLD or DAD.
		// (/proc/sys/net is the namespace of the thread that opens it.)
		err = inNetns(&h, func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1\n"), 0)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	run(t, "ip", "link", "add", "wa", "netns", p.nameA, "type", "veth", "peer", "name", "wb", "netns", p.nameB)
	run(t, "ip", "-n", p.nameA, "link", "set", "wa", "up")
	run(t, "ip", "-n", p.nameB, "link", "set", "wb", "up")
	p.ifA = ifindex(t, p.nsA, "wa")
	p.ifB = ifindex(t, p.nsB, "wb")
	err := inNetns(&p.nsB, func() error {
		i, err := net.InterfaceByName("wb")
		if err == nil {
			p.macB = i.HardwareAddr
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func ifindex(t *testing.T, ns netns.NsHandle, name string) int {
	t.Helper()
	var idx int
	err := inNetns(&ns, func() error {
		i, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		idx = i.Index
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// sender sends raw Ethernet frames out of wa in namespace A. A packet
// socket's frames pass the egress TC hook like any other.
type sender struct {
	fd      int
	ifindex int
	dst     net.HardwareAddr
}

func (p *pair) sender(t *testing.T) *sender {
	t.Helper()
	s := &sender{ifindex: p.ifA, dst: p.macB}
	err := inNetns(&p.nsA, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		s.fd = fd
		return err
	})
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	t.Cleanup(func() { _ = unix.Close(s.fd) })
	return s
}

// send sends frame n times; the frame's Ethernet header is rewritten to
// reach wb.
func (s *sender) send(t *testing.T, frame []byte, n int) {
	t.Helper()
	f := append([]byte(nil), frame...)
	copy(f[0:6], s.dst)
	addr := &unix.SockaddrLinklayer{
		Ifindex:  s.ifindex,
		Protocol: htons(binary.BigEndian.Uint16(f[12:14])),
	}
	for range n {
		if err := unix.Sendto(s.fd, f, 0, addr); err != nil {
			t.Fatalf("sendto: %v", err)
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
