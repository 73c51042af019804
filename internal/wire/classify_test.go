package wire

import (
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
)

var (
	local4 = netip.MustParseAddr("192.0.2.1")
	peer4  = netip.MustParseAddr("192.0.2.2")
	other4 = netip.MustParseAddr("198.51.100.7")
	local6 = netip.MustParseAddr("2001:db8::1")
	peer6  = netip.MustParseAddr("2001:db8::2")
)

// loadInstance loads the programs and one interface's instance of them
// (namespace slot, Ethernet frames or not), or skips when this host cannot:
// BPF needs root (CAP_BPF) here.
func loadInstance(t *testing.T, peerMapSize, slot uint32, ethernet bool) (*Programs, *instance) {
	t.Helper()
	p := loadPrograms(t, peerMapSize)
	return p, newInstance(t, p, slot, ethernet)
}

func loadPrograms(t *testing.T, peerMapSize uint32) *Programs {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading the wire program needs root (CAP_BPF, CAP_NET_ADMIN)")
	}
	p, err := Load(peerMapSize)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newInstance(t *testing.T, p *Programs, slot uint32, ethernet bool) *instance {
	t.Helper()
	i, err := p.instance(slot, ethernet, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = i.Close() })
	return i
}

// TestClassify runs the programs on crafted frames (BPF_PROG_TEST_RUN) and
// checks the class each one is counted as, the unprotected-peer counting, and
// that the verdict is always TC_ACT_UNSPEC: once reading the headers in
// place (an Ethernet interface), once through bpf_skb_load_bytes_relative
// (the path of other link types and of headers outside the linear data);
// and once more in place as on a kernel without bpf_cast_to_kern_ctx (6.1),
// whose ingress program asks bpf_skb_get_xfrm_state about every packet.
func TestClassify(t *testing.T) {
	for _, c := range []struct {
		name                string
		ethernet, kernelCtx bool
	}{
		{"in place", true, true},
		{"helper", false, true},
		{"in place without kernel ctx", true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := loadPrograms(t, 0)
			if c.kernelCtx && o.secPathExt == 0 {
				t.Skip("the kernel has no bpf_cast_to_kern_ctx (6.2+)")
			}
			if !c.kernelCtx {
				o.secPathExt = 0
			}
			inst := newInstance(t, o, 3, c.ethernet)
			if _, err := o.SetPeers(map[uint32][]netip.Addr{3: {peer4, peer6}, 4: {other4}}); err != nil {
				t.Fatal(err)
			}
			testClassify(t, o, inst)
		})
	}
}

func testClassify(t *testing.T, o *Programs, inst *instance) {
	spi := esp(0x1000, 32)
	v4 := func(proto byte, payload []byte) []byte {
		return ether(0x0800, ipv4(proto, local4, peer4, 0, false, payload))
	}
	v6 := func(nexthdr byte, payload []byte) []byte {
		return ether(0x86dd, ipv6(nexthdr, local6, peer6, payload))
	}
	for _, tc := range []struct {
		name      string
		frame     []byte
		ingress   bool
		class     Class
		gsoSegs   uint32
		gsoSize   uint32
		wantPeer  netip.Addr // counted as unprotected traffic to this peer
		wantCount uint64     // packets; 1 unless GSO
	}{
		{name: "v4 esp", frame: v4(protoESP, spi), class: ClassESP},
		{name: "v4 ah", frame: v4(protoAH, spi), class: ClassAH},
		{name: "v4 esp-in-udp dport 4500", frame: v4(protoUDP, udp(4500, 4500, spi)), class: ClassESPInUDP},
		{name: "v4 esp-in-udp sport 4500", frame: v4(protoUDP, udp(4500, 33000, spi)), class: ClassESPInUDP},
		{name: "v4 ike 500", frame: v4(protoUDP, udp(500, 500, make([]byte, 40))), class: ClassIKE},
		{name: "v4 ike 4500 non-esp marker", frame: v4(protoUDP, udp(4500, 4500, make([]byte, 40))), class: ClassIKE},
		{name: "v4 nat keepalive", frame: v4(protoUDP, udp(4500, 4500, []byte{0xff})), class: ClassIKE},
		// The kernel takes a payload of an ESP header or less as IKE too.
		{name: "v4 4500 short payload", frame: v4(protoUDP, udp(4500, 4500, esp(7, 0))), class: ClassIKE},
		{name: "v4 udp 53 plaintext", frame: v4(protoUDP, udp(40000, 53, make([]byte, 20))), class: ClassPlaintext, wantPeer: peer4},
		{name: "v4 icmp plaintext", frame: v4(protoICMP, make([]byte, 16)), class: ClassPlaintext, wantPeer: peer4},
		{name: "v4 ingress from peer", frame: ether(0x0800, ipv4(protoTCP, peer4, local4, 0, false, make([]byte, 20))),
			ingress: true, class: ClassPlaintext, wantPeer: peer4},
		{name: "v4 egress to a non-peer", frame: ether(0x0800, ipv4(protoTCP, local4, other4, 0, false, make([]byte, 20))),
			class: ClassPlaintext},
		// Ingress looks at the source: a packet from us to the peer seen
		// at ingress (forwarded) is not "from the peer".
		{name: "v4 ingress to peer is not from peer", frame: v4(protoTCP, make([]byte, 20)), ingress: true, class: ClassPlaintext},
		{name: "v4 first udp fragment", frame: ether(0x0800, ipv4(protoUDP, local4, peer4, 0, true, udp(500, 500, make([]byte, 40)))), class: ClassIKE},
		{name: "v4 later udp fragment", frame: ether(0x0800, ipv4(protoUDP, local4, peer4, 100, false, make([]byte, 40))), class: ClassUDPFragment},
		{name: "v4 later esp fragment", frame: ether(0x0800, ipv4(protoESP, local4, peer4, 100, false, make([]byte, 40))), class: ClassESP},
		{name: "v4 later tcp fragment", frame: ether(0x0800, ipv4(protoTCP, local4, peer4, 100, false, make([]byte, 40))), class: ClassPlaintext, wantPeer: peer4},
		{name: "v4 truncated udp header", frame: v4(protoUDP, []byte{0x11, 0x94}), class: ClassPlaintext, wantPeer: peer4},
		// BPF_PROG_TEST_RUN refuses frames shorter than their IP header,
		// so a version mismatch stands in for a header that cannot be read.
		{name: "v4 ethertype, v6 header", frame: ether(0x0800, ipv6(protoESP, local6, peer6, spi)), class: ClassPlaintext},
		{name: "v4 bad ihl", frame: func() []byte { f := v4(protoESP, spi); f[14] = 0x43; return f }(), class: ClassPlaintext},
		{name: "v4 gso", frame: v4(protoTCP, make([]byte, 100)), gsoSegs: 5, gsoSize: 20, class: ClassPlaintext, wantPeer: peer4, wantCount: 5},
		// A stale gso_segs on a non-GSO skb (gso_size 0) is one packet:
		// the kernel leaves gso_segs behind when it clears gso_size.
		{name: "v4 stale gso_segs", frame: v4(protoESP, spi), gsoSegs: 5, class: ClassESP},
		// A GSO skb not yet validated (SKB_GSO_DODGY) may have gso_segs 0.
		{name: "v4 gso without segs", frame: v4(protoTCP, make([]byte, 100)), gsoSize: 20, class: ClassPlaintext, wantPeer: peer4},
		{name: "arp", frame: ether(0x0806, make([]byte, 28)), class: ClassNonIP},

		{name: "v6 esp", frame: v6(protoESP, spi), class: ClassESP},
		{name: "v6 esp-in-udp", frame: v6(protoUDP, udp(4500, 4500, spi)), class: ClassESPInUDP},
		{name: "v6 ike", frame: v6(protoUDP, udp(500, 500, make([]byte, 40))), class: ClassIKE},
		{name: "v6 tcp plaintext", frame: v6(protoTCP, make([]byte, 20)), class: ClassPlaintext, wantPeer: peer6},
		{name: "v6 esp after hop-by-hop and dstopts", frame: v6(0, ext6(60, ext6(protoESP, spi))), class: ClassESP},
		{name: "v6 udp after routing header", frame: v6(43, ext6(protoUDP, udp(4500, 4500, spi))), class: ClassESPInUDP},
		{name: "v6 first fragment ike", frame: v6(44, frag6(protoUDP, 0, true, udp(500, 500, make([]byte, 40)))), class: ClassIKE},
		{name: "v6 later udp fragment", frame: v6(44, frag6(protoUDP, 100, false, make([]byte, 40))), class: ClassUDPFragment},
		{name: "v6 later esp fragment", frame: v6(44, frag6(protoESP, 100, false, make([]byte, 40))), class: ClassESP},
		{name: "v6 ah", frame: v6(protoAH, spi), class: ClassAH},
		{name: "v6 neighbour solicitation", frame: v6(protoICMPv6, append([]byte{135, 0, 0, 0}, make([]byte, 20)...)), class: ClassPlaintext},
		{name: "v6 echo request", frame: v6(protoICMPv6, append([]byte{128, 0, 0, 0}, make([]byte, 20)...)), class: ClassPlaintext, wantPeer: peer6},
		{name: "v6 truncated extension header", frame: v6(0, []byte{protoESP, 0}), class: ClassPlaintext, wantPeer: peer6},
		{name: "v6 too many extension headers", frame: v6(60, ext6(60, ext6(60, ext6(60, ext6(60, ext6(60, ext6(60, ext6(protoESP, spi)))))))),
			class: ClassPlaintext, wantPeer: peer6},
		{name: "v6 ethertype, v4 header", frame: ether(0x86dd, ipv4(protoESP, local4, peer4, 0, false, make([]byte, 40))), class: ClassPlaintext},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := Egress
			if tc.ingress {
				dir = Ingress
			}
			want := tc.wantCount
			if want == 0 {
				want = 1
			}
			wireBefore, peerBefore := snapshot(t, o, inst)
			ctx := skbContext{GSOSegs: tc.gsoSegs, GSOSize: tc.gsoSize}
			ret, err := inst.program(dir).Run(&ebpf.RunOptions{Data: tc.frame, Context: ctx})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if int32(ret) != -1 {
				t.Errorf("verdict %d, want TC_ACT_UNSPEC (-1)", int32(ret))
			}
			wireAfter, peerAfter := snapshot(t, o, inst)
			for d := range numDirections {
				for c := range numClasses {
					k := WireKey{Direction: Direction(d), Class: Class(c)}
					got := wireAfter[d][c].Packets - wireBefore[d][c].Packets
					if k.Class == tc.class && k.Direction == dir {
						if got != want {
							t.Errorf("%s %s: %d packets, want %d", k.Direction, k.Class, got, want)
						}
						if b := wireAfter[d][c].Bytes - wireBefore[d][c].Bytes; b != uint64(len(tc.frame)) {
							t.Errorf("%s %s: %d bytes, want %d", k.Direction, k.Class, b, len(tc.frame))
						}
					} else if got != 0 {
						t.Errorf("counted as %s %s (%d packets), want %s %s", k.Direction, k.Class, got, dir, tc.class)
					}
				}
			}
			for k, after := range peerAfter {
				got := after.Packets - peerBefore[k].Packets
				wantPeer := uint64(0)
				if tc.wantPeer.IsValid() && k.Peer == tc.wantPeer && k.Direction == dir {
					wantPeer = want
				}
				if got != wantPeer {
					t.Errorf("unprotected %s %s: %d packets, want %d", k.Peer, k.Direction, got, wantPeer)
				}
			}
			if tc.wantPeer.IsValid() {
				if _, ok := peerAfter[PeerKey{Peer: tc.wantPeer, Direction: dir}]; !ok {
					t.Errorf("no unprotected counter for %s %s", tc.wantPeer, dir)
				}
			}
		})
	}
}

// skbContext is the prefix of struct __sk_buff up to gso_size that
// BPF_PROG_TEST_RUN accepts as context: the kernel copies gso_segs and
// gso_size into the test skb's shared info (convert___skb_to_skb, 5.7+).
type skbContext struct {
	Len            uint32
	PktType        uint32
	Mark           uint32
	QueueMapping   uint32
	Protocol       uint32
	VlanPresent    uint32
	VlanTCI        uint32
	VlanProto      uint32
	Priority       uint32
	IngressIfindex uint32
	Ifindex        uint32
	TCIndex        uint32
	CB             [5]uint32
	Hash           uint32
	TCClassid      uint32
	Data           uint32
	DataEnd        uint32
	NapiID         uint32
	Family         uint32
	RemoteIP4      uint32
	LocalIP4       uint32
	RemoteIP6      [4]uint32
	LocalIP6       [4]uint32
	RemotePort     uint32
	LocalPort      uint32
	DataMeta       uint32
	FlowKeys       uint64
	Tstamp         uint64
	WireLen        uint32
	GSOSegs        uint32
	Sk             uint64 // a pointer in the kernel; must be zero
	GSOSize        uint32
}

func snapshot(t *testing.T, o *Programs, i *instance) ([numDirections][numClasses]Counter, map[PeerKey]Counter) {
	t.Helper()
	w, err := i.counters()
	if err != nil {
		t.Fatal(err)
	}
	p, err := o.Unprotected()
	if err != nil {
		t.Fatal(err)
	}
	return w, p[3]
}
