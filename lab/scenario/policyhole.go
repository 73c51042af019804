package scenario

import (
	"fmt"
	"net"
	"sync"

	"github.com/vishvananda/netlink"
)

// PolicyHole is a hole in a node's IPsec policies: an "allow" policy for UDP
// to one port of the peer that wins over the ESP policy, as a too narrow or
// mis-prioritised IKE configuration would make. With the hole open,
// datagrams from AAddr to BAddr:Port leave in clear; other traffic still goes
// through the SAs.
type PolicyHole struct {
	Port int
	mu   sync.Mutex
	node *Node
	hole netlink.XfrmPolicy
	on   bool
}

// NewPolicyHole prepares a hole on n (node A of e) for UDP to e.BAddr:port,
// closed. n's own out policies are moved behind it (priority 10) once, here;
// SetOpen opens and closes the hole. The hole is closed again at cleanup.
func NewPolicyHole(t TB, n *Node, e *ESP, port int) *PolicyHole {
	t.Helper()
	pols, err := n.NL.XfrmPolicyList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("%s: list policies: %v", n.Name, err)
	}
	for _, pol := range pols {
		if pol.Dir == netlink.XFRM_DIR_OUT {
			pol.Priority = 10
			if err := n.NL.XfrmPolicyUpdate(&pol); err != nil {
				t.Fatalf("%s: policy priority: %v", n.Name, err)
			}
		}
	}
	h := &PolicyHole{Port: port, node: n, hole: netlink.XfrmPolicy{
		Src:      &net.IPNet{IP: e.AAddr.AsSlice(), Mask: net.CIDRMask(e.AAddr.BitLen(), e.AAddr.BitLen())},
		Dst:      &net.IPNet{IP: e.BAddr.AsSlice(), Mask: net.CIDRMask(e.BAddr.BitLen(), e.BAddr.BitLen())},
		Proto:    netlink.Proto(17),
		DstPort:  port,
		Dir:      netlink.XFRM_DIR_OUT,
		Priority: 1,
		Action:   netlink.XFRM_POLICY_ALLOW,
	}}
	t.Cleanup(func() { _ = h.SetOpen(false) })
	return h
}

// SetOpen opens (true) or closes the hole; setting the current state again
// does nothing.
func (h *PolicyHole) SetOpen(open bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if open == h.on {
		return nil
	}
	hole := h.hole
	var err error
	if open {
		err = h.node.NL.XfrmPolicyAdd(&hole)
	} else {
		err = h.node.NL.XfrmPolicyDel(&hole)
	}
	if err != nil {
		return fmt.Errorf("%s: policy hole to port %d: %w", h.node.Name, h.Port, err)
	}
	h.on = open
	return nil
}

// UDPSender is an unconnected UDP socket in n, closed at cleanup.
// Unconnected, so every datagram gets a fresh route and policy lookup: a
// connected socket would keep the route it cached before a PolicyHole
// opened or closed.
func UDPSender(t TB, n *Netns, network string) net.PacketConn {
	t.Helper()
	var c net.PacketConn
	if err := n.Do(func() (err error) {
		c, err = net.ListenPacket(network, ":0")
		return err
	}); err != nil {
		t.Fatalf("%s: udp socket: %v", n.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
