package scenario

import (
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// EncapSocket opens the UDP 4500 socket that ESP-in-UDP needs on a receiver,
// the way IKE daemons do: UDP_ENCAP_ESPINUDP makes the kernel decapsulate
// datagrams arriving on it, and per-socket "allow" policies in both
// directions let them past the namespace's "require ESP" policies (without
// them the datagram is dropped before decapsulation). Closed at cleanup.
func EncapSocket(t TB, n *Netns, v6 bool) {
	t.Helper()
	var fd int
	err := n.Do(func() error {
		family, level, opt := unix.AF_INET, unix.IPPROTO_IP, unix.IP_XFRM_POLICY
		var sa unix.Sockaddr = &unix.SockaddrInet4{Port: 4500}
		if v6 {
			family, level, opt = unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_XFRM_POLICY
			sa = &unix.SockaddrInet6{Port: 4500}
		}
		var err error
		fd, err = unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, sa); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_ENCAP, unix.UDP_ENCAP_ESPINUDP); err != nil {
			return err
		}
		for _, dir := range []netlink.Dir{netlink.XFRM_DIR_IN, netlink.XFRM_DIR_OUT} {
			p := nl.XfrmUserpolicyInfo{Dir: uint8(dir), Action: uint8(netlink.XFRM_POLICY_ALLOW)}
			p.Sel.Family = uint16(family) // the kernel rejects a selector without one
			p.Lft.SoftByteLimit, p.Lft.HardByteLimit = nl.XFRM_INF, nl.XFRM_INF
			p.Lft.SoftPacketLimit, p.Lft.HardPacketLimit = nl.XFRM_INF, nl.XFRM_INF
			if err := unix.SetsockoptString(fd, level, opt, string(p.Serialize())); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if fd > 0 {
			unix.Close(fd)
		}
		t.Fatalf("%s: UDP 4500 encap socket: %v", n.Name, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
}
