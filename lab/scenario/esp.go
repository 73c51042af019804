package scenario

import (
	"bytes"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Cipher selects the ESP transform.
type Cipher int

const (
	// AEAD is rfc4106(gcm(aes)) with a 128-bit key and 128-bit ICV.
	AEAD Cipher = iota
	// CBCHMAC is cbc(aes) with hmac(sha256) truncated to 128 bits.
	CBCHMAC
)

func (c Cipher) String() string {
	if c == CBCHMAC {
		return "cbc(aes)+hmac(sha256)"
	}
	return "rfc4106(gcm(aes))"
}

// ESPOptions describe the SAs and policies ESP installs between A and B.
// The fault options apply to the A->B direction only; B->A stays healthy.
type ESPOptions struct {
	IPv6   bool   // outer (and, in tunnel mode, inner) addresses are IPv6
	Tunnel bool   // tunnel mode between inner addresses; default transport
	Cipher Cipher // default AEAD
	NATT   bool   // ESP in UDP 4500 (encap espinudp), with encap sockets on both sides
	// ASubnet widens A's traffic selector from AAddr to a subnet behind A
	// (tunnel mode, A as a gateway); A then also gets a fwd policy.
	ASubnet netip.Prefix

	WrongKey     bool   // B's inbound A->B SA has another key: integrity failures on B
	NoInboundSA  bool   // B has no A->B SA: XfrmInNoStates on B
	NoOutboundSA bool   // A has the A->B policy but no SA: XfrmOutNoStates on A
	HardPackets  uint64 // hard packet limit of the A->B SA on both sides (0: none)
	// Limits are the lifetimes of all four SAs (zero fields: unlimited);
	// HardPackets overrides PacketHard of A->B.
	Limits       netlink.XfrmStateLimits
	ReplayWindow int // default 32
}

// SA identifies one security association (as installed on both nodes).
type SA struct {
	Src, Dst netip.Addr // outer addresses
	SPI      uint32
}

// ESP is an installed pair of SAs (A->B and B->A) with policies both ways.
type ESP struct {
	Opts   ESPOptions
	AB, BA SA
	// Traffic endpoints: the veth addresses in transport mode, the inner
	// addresses in tunnel mode. Send from A to BAddr to use the SAs.
	AAddr, BAddr netip.Addr
}

var spiCounter atomic.Uint32

// Inner addresses for tunnel mode, on lo of each node.
var (
	innerA4 = netip.MustParseAddr("10.78.1.1")
	innerB4 = netip.MustParseAddr("10.78.2.1")
	innerA6 = netip.MustParseAddr("fd78:1::1")
	innerB6 = netip.MustParseAddr("fd78:2::1")
)

// ESP installs SAs and policies between A and B as o says.
func (p *Pair) ESP(t TB, o ESPOptions) *ESP {
	t.Helper()
	base := 0x1000 * (spiCounter.Add(1))
	e := &ESP{
		Opts: o,
		AB:   SA{Src: p.A.Addr(o.IPv6), Dst: p.B.Addr(o.IPv6), SPI: base + 0xab},
		BA:   SA{Src: p.B.Addr(o.IPv6), Dst: p.A.Addr(o.IPv6), SPI: base + 0xba},
	}
	e.AAddr, e.BAddr = e.AB.Src, e.AB.Dst
	if o.Tunnel {
		e.AAddr, e.BAddr = innerA4, innerB4
		if o.IPv6 {
			e.AAddr, e.BAddr = innerA6, innerB6
		}
		tunnelRoutes(t, p.A, e.AAddr, e.BAddr, e.AB.Dst)
		tunnelRoutes(t, p.B, e.BAddr, e.AAddr, e.BA.Dst)
	}
	if o.NATT {
		EncapSocket(t, p.A.Netns, o.IPv6)
		EncapSocket(t, p.B.Netns, o.IPv6)
	}
	keyAB, keyBA := key(o.Cipher, 0xab), key(o.Cipher, 0xba)
	wrong := keyAB
	if o.WrongKey {
		wrong = key(o.Cipher, 0xee)
	}
	if !o.NoOutboundSA {
		AddSA(t, p.A.Netns, e.state(e.AB, keyAB, o.HardPackets))
	}
	if !o.NoInboundSA {
		AddSA(t, p.B.Netns, e.state(e.AB, wrong, o.HardPackets))
	}
	AddSA(t, p.A.Netns, e.state(e.BA, keyBA, 0))
	AddSA(t, p.B.Netns, e.state(e.BA, keyBA, 0))
	aSel := netip.PrefixFrom(e.AAddr, e.AAddr.BitLen())
	if o.ASubnet.IsValid() {
		aSel = o.ASubnet
	}
	bSel := netip.PrefixFrom(e.BAddr, e.BAddr.BitLen())
	e.policies(t, p.A.Netns, aSel, bSel, e.AB, e.BA, o.ASubnet.IsValid())
	e.policies(t, p.B.Netns, bSel, aSel, e.BA, e.AB, false)
	return e
}

func (e *ESP) mode() netlink.Mode {
	if e.Opts.Tunnel {
		return netlink.XFRM_MODE_TUNNEL
	}
	return netlink.XFRM_MODE_TRANSPORT
}

// keys holds the secret material of one SA.
type keys struct{ aead, enc, auth []byte }

// key derives fixed test keys from a seed, so both sides agree.
func key(c Cipher, seed byte) keys {
	if c == CBCHMAC {
		return keys{enc: bytes.Repeat([]byte{seed}, 16), auth: bytes.Repeat([]byte{seed ^ 0x55}, 32)}
	}
	return keys{aead: bytes.Repeat([]byte{seed}, 20)} // 16 key + 4 salt
}

func (e *ESP) state(sa SA, k keys, hardPackets uint64) *netlink.XfrmState {
	s := &netlink.XfrmState{
		Src: sa.Src.AsSlice(), Dst: sa.Dst.AsSlice(),
		Proto: netlink.XFRM_PROTO_ESP, Mode: e.mode(),
		Spi: int(sa.SPI), Reqid: int(sa.SPI), ReplayWindow: 32,
	}
	if e.Opts.ReplayWindow > 0 {
		s.ReplayWindow = e.Opts.ReplayWindow
	}
	if k.aead != nil {
		s.Aead = &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: k.aead, ICVLen: 128}
	} else {
		s.Crypt = &netlink.XfrmStateAlgo{Name: "cbc(aes)", Key: k.enc}
		s.Auth = &netlink.XfrmStateAlgo{Name: "hmac(sha256)", Key: k.auth, TruncateLen: 128}
	}
	if e.Opts.NATT {
		s.Encap = &netlink.XfrmStateEncap{
			Type: netlink.XFRM_ENCAP_ESPINUDP, SrcPort: 4500, DstPort: 4500,
			OriginalAddress: net.IPv4zero,
		}
	}
	s.Limits = e.Opts.Limits
	if hardPackets > 0 {
		s.Limits.PacketHard = hardPackets
	}
	return s
}

// policyDir is one policy to install.
type policyDir struct {
	dir      netlink.Dir
	src, dst netip.Prefix
	sa       SA
}

// policies installs the out policy local->remote and the in policy
// remote->local on node, with templates for the SAs out and in; fwd adds the
// same selector as in for forwarded traffic (a gateway).
func (e *ESP) policies(t TB, n *Netns, local, remote netip.Prefix, out, in SA, fwd bool) {
	t.Helper()
	dirs := []policyDir{
		{netlink.XFRM_DIR_OUT, local, remote, out},
		{netlink.XFRM_DIR_IN, remote, local, in},
	}
	if fwd {
		dirs = append(dirs, policyDir{netlink.XFRM_DIR_FWD, remote, local, in})
	}
	for _, pol := range dirs {
		AddPolicy(t, n, &netlink.XfrmPolicy{
			Src: ipNet(pol.src), Dst: ipNet(pol.dst),
			Dir: pol.dir,
			Tmpls: []netlink.XfrmPolicyTmpl{{
				Src: pol.sa.Src.AsSlice(), Dst: pol.sa.Dst.AsSlice(),
				Proto: netlink.XFRM_PROTO_ESP, Mode: e.mode(), Reqid: int(pol.sa.SPI),
			}},
		})
	}
}

// AddSA installs s in n (removed again at cleanup, unless already gone).
func AddSA(t TB, n *Netns, s *netlink.XfrmState) {
	t.Helper()
	if err := n.NL.XfrmStateAdd(s); err != nil {
		t.Fatalf("%s: add SA spi 0x%x %s->%s: %v", n.Name, s.Spi, s.Src, s.Dst, err)
	}
	t.Cleanup(func() { _ = n.NL.XfrmStateDel(s) })
}

// AddPolicy installs p in n (removed again at cleanup).
func AddPolicy(t TB, n *Netns, p *netlink.XfrmPolicy) {
	t.Helper()
	if err := n.NL.XfrmPolicyAdd(p); err != nil {
		t.Fatalf("%s: add policy %s %s->%s: %v", n.Name, p.Dir, p.Src, p.Dst, err)
	}
	t.Cleanup(func() { _ = n.NL.XfrmPolicyDel(p) })
}

// tunnelRoutes puts local on lo of n and routes remote through the peer's
// outer address gw, with local as source.
func tunnelRoutes(t TB, n *Node, local, remote, gw netip.Addr) {
	t.Helper()
	lo, err := n.NL.LinkByName("lo")
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	// NODAD: an IPv6 address stays tentative for a moment even on lo, and a
	// route with a tentative source is refused (EINVAL).
	addr := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(local, local.BitLen())), Flags: unix.IFA_F_NODAD}
	if err := n.NL.AddrAdd(lo, addr); err != nil {
		t.Fatalf("%s: add %s: %v", n.Name, local, err)
	}
	WaitLocal(t, n.Netns, local)
	l, err := n.NL.LinkByName(n.Link)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	r := &netlink.Route{
		LinkIndex: l.Attrs().Index, Dst: ipNet(netip.PrefixFrom(remote, remote.BitLen())),
		Gw: gw.AsSlice(), Src: local.AsSlice(),
	}
	if err := n.NL.RouteAdd(r); err != nil {
		t.Fatalf("%s: route %s via %s: %v", n.Name, remote, gw, err)
	}
}
