package wire

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var (
	peer6a  = netip.MustParseAddr("2001:db8::1")
	peer6b  = netip.MustParseAddr("2001:db8::2")
	nonPeer = netip.MustParseAddr("198.51.100.7")
)

// burst is one kind of crafted frame and how many of it are sent.
type burst struct {
	frame []byte
	n     int
	class Class
	// peerA is the peer that namespace A counts it as unprotected
	// traffic to (egress: the destination); peerB, from (ingress: the
	// source), in B.
	peerA, peerB netip.Addr
}

func bursts() []burst {
	spi := esp(0x2000, 64)
	v4 := func(dst netip.Addr, proto byte, payload []byte) []byte {
		return ether(0x0800, ipv4(proto, local4, dst, 0, false, payload))
	}
	v6 := func(nexthdr byte, payload []byte) []byte {
		return ether(0x86dd, ipv6(nexthdr, peer6a, peer6b, payload))
	}
	return []burst{
		{frame: v4(peer4, protoESP, spi), n: 3, class: ClassESP},
		{frame: v4(peer4, protoUDP, udp(4500, 4500, spi)), n: 4, class: ClassESPInUDP},
		{frame: v4(peer4, protoUDP, udp(500, 500, make([]byte, 100))), n: 5, class: ClassIKE},
		{frame: v4(peer4, protoUDP, udp(4500, 4500, make([]byte, 100))), n: 6, class: ClassIKE},
		{frame: v4(peer4, protoUDP, udp(4500, 4500, []byte{0xff})), n: 7, class: ClassIKE},
		{frame: v4(peer4, protoUDP, udp(40000, 53, make([]byte, 30))), n: 8, class: ClassPlaintext, peerA: peer4, peerB: local4},
		{frame: v4(nonPeer, protoTCP, make([]byte, 40)), n: 9, class: ClassPlaintext, peerB: local4},
		{frame: v6(protoESP, spi), n: 10, class: ClassESP},
		{frame: v6(protoTCP, make([]byte, 40)), n: 11, class: ClassPlaintext, peerA: peer6b, peerB: peer6a},
		{frame: v6(protoUDP, udp(500, 500, make([]byte, 60))), n: 2, class: ClassIKE},
		{frame: ether(0x0806, make([]byte, 28)), n: 1, class: ClassNonIP},
		{frame: ether(0x0800, ipv4(protoUDP, local4, peer4, 185, false, make([]byte, 80))), n: 2, class: ClassUDPFragment},
	}
}

// addPolicies gives namespace A the IPv4 address local4 and policies whose
// peers are peer4 (transport, host selector) and the tunnel endpoints
// peer6a and peer6b; namespace B gets the mirror image. No SAs: this
// kernel has no ESP, the lab tests SAs.
func addPolicies(t *testing.T, p *pair) {
	t.Helper()
	run(t, "ip", "-n", p.nameA, "addr", "add", local4.String()+"/24", "dev", "wa")
	run(t, "ip", "-n", p.nameA, "xfrm", "policy", "add", "dir", "out", "src", local4.String()+"/32", "dst", peer4.String()+"/32",
		"proto", "tcp", "dport", "9", "tmpl", "proto", "esp", "mode", "transport")
	run(t, "ip", "-n", p.nameA, "xfrm", "policy", "add", "dir", "out", "src", "fd00::/64", "dst", "fd01::/64",
		"tmpl", "src", peer6a.String(), "dst", peer6b.String(), "proto", "esp", "mode", "tunnel")
	run(t, "ip", "-n", p.nameB, "xfrm", "policy", "add", "dir", "in", "src", local4.String()+"/32", "dst", peer4.String()+"/32",
		"proto", "tcp", "dport", "9", "tmpl", "proto", "esp", "mode", "transport")
	run(t, "ip", "-n", p.nameB, "xfrm", "policy", "add", "dir", "in", "src", "fd01::/64", "dst", "fd00::/64",
		"tmpl", "src", peer6a.String(), "dst", peer6b.String(), "proto", "esp", "mode", "tunnel")
}

// witness is another TC program that counts what it sees, standing for a
// filter that was on the interface before the exporter came.
type witness struct {
	prog  *ebpf.Program
	count *ebpf.Map
}

func newWitness(t *testing.T) *witness {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, -1).WithSymbol("out"), // TC_ACT_UNSPEC
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prog.Close() })
	return &witness{prog: prog, count: m}
}

func (w *witness) seen(t *testing.T) uint64 {
	t.Helper()
	var v uint64
	if err := w.count.Lookup(uint32(0), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// attachWitness puts the witness at ingress of wb the way the mode under
// test would find another tool's program: a tcx link, or a clsact qdisc
// with a cls_bpf filter at tc's usual priority 1, handle 1.
func (w *witness) attach(t *testing.T, p *pair, mode Mode) {
	t.Helper()
	if mode == ModeTCX {
		var l link.Link
		err := inNetns(&p.nsB, func() (err error) {
			l, err = link.AttachTCX(link.TCXOptions{Interface: p.ifB, Program: w.prog, Attach: ebpf.AttachTCXIngress})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return
	}
	h := handle(t, p.nsB)
	if err := h.QdiscAdd(&netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: p.ifB, Parent: netlink.HANDLE_CLSACT, Handle: netlink.MakeHandle(0xffff, 0),
	}}); err != nil {
		t.Fatal(err)
	}
	if err := h.FilterAdd(&netlink.BpfFilter{
		FilterAttrs:  netlink.FilterAttrs{LinkIndex: p.ifB, Parent: netlink.HANDLE_MIN_INGRESS, Handle: 1, Priority: 1, Protocol: unix.ETH_P_ALL},
		Fd:           w.prog.FD(),
		Name:         "witness",
		DirectAction: true,
	}); err != nil {
		t.Fatal(err)
	}
}

func handle(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// tcState describes everything TC holds on an interface: qdiscs, filters
// and tcx programs.
func tcState(t *testing.T, ns netns.NsHandle, ifindex int) []string {
	t.Helper()
	h := handle(t, ns)
	dev := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}
	var out []string
	qdiscs, err := h.QdiscList(dev)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qdiscs {
		a := q.Attrs()
		out = append(out, fmt.Sprintf("qdisc %s %x parent %x", q.Type(), a.Handle, a.Parent))
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := h.FilterList(dev, parent)
		if err != nil && !errors.Is(err, unix.EINVAL) {
			t.Fatal(err)
		}
		for _, f := range fs {
			a := f.Attrs()
			name := ""
			if b, ok := f.(*netlink.BpfFilter); ok {
				name = b.Name
			}
			out = append(out, fmt.Sprintf("filter %x %s prio %d handle %x %s", parent, f.Type(), a.Priority, a.Handle, name))
		}
	}
	err = inNetns(&ns, func() error {
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			r, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
			if err != nil {
				return err
			}
			for _, prog := range r.Programs {
				out = append(out, fmt.Sprintf("tcx %s prog %d", at, prog.ID))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func start(t *testing.T, ns netns.NsHandle, mode Mode) *Monitor {
	t.Helper()
	m, err := Start(Config{Netns: &ns, Mode: mode})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// waitFor polls cond for up to five seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWireVeth sends known numbers of crafted frames of every class from
// namespace A to B and checks the exact counts at A's egress and B's
// ingress, the unprotected-peer counts, that a program already on the hook
// keeps seeing every frame, and that detaching leaves both interfaces as
// they were. Once with tcx, once with clsact and cls_bpf.
func TestWireVeth(t *testing.T) {
	for _, mode := range []Mode{ModeTCX, ModeTC} {
		t.Run(string(mode), func(t *testing.T) {
			p := newPair(t)
			addPolicies(t, p)
			w := newWitness(t)
			w.attach(t, p, mode)
			beforeA, beforeB := tcState(t, p.nsA, p.ifA), tcState(t, p.nsB, p.ifB)

			mA, mB := start(t, p.nsA, mode), start(t, p.nsB, mode)
			for _, m := range []*Monitor{mA, mB} {
				got := m.Interfaces()
				if len(got) != 1 || !got[0].Attached || got[0].Mode != mode {
					t.Fatalf("interfaces %+v, want one attached with %s", got, mode)
				}
			}
			if slices.Equal(tcState(t, p.nsA, p.ifA), beforeA) {
				t.Fatal("attaching changed nothing on wa: the state comparison below would prove nothing")
			}
			checkPeers(t, mA, peer4, peer6a, peer6b)
			checkPeers(t, mB, local4, peer4, peer6a, peer6b)

			s := p.sender(t)
			wantWire := map[Class]Counter{}
			wantA, wantB := map[netip.Addr]Counter{}, map[netip.Addr]Counter{}
			total := 0
			for _, b := range bursts() {
				s.send(t, b.frame, b.n)
				c := Counter{Packets: uint64(b.n), Bytes: uint64(b.n * len(b.frame))}
				wantWire[b.class] = wantWire[b.class].add(c)
				if b.peerA.IsValid() {
					wantA[b.peerA] = wantA[b.peerA].add(c)
				}
				if b.peerB.IsValid() {
					wantB[b.peerB] = wantB[b.peerB].add(c)
				}
				total += b.n
			}
			waitFor(t, "B to count every frame", func() bool { return w.seen(t) >= uint64(total) })
			waitFor(t, "B's counters", func() bool {
				c, _ := mB.WireCounters()
				var n uint64
				for _, v := range c {
					n += v.Packets
				}
				return n >= uint64(total)
			})

			checkWire(t, "A", mA, p.ifA, Egress, wantWire)
			checkWire(t, "B", mB, p.ifB, Ingress, wantWire)
			checkUnprotected(t, "A", mA, Egress, wantA)
			checkUnprotected(t, "B", mB, Ingress, wantB)
			if got := w.seen(t); got != uint64(total) {
				t.Errorf("the program that was there first saw %d frames, want %d", got, total)
			}

			for _, m := range []*Monitor{mA, mB} {
				if err := m.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
			if got := tcState(t, p.nsA, p.ifA); !slices.Equal(got, beforeA) {
				t.Errorf("wa after detach:\n%v\nbefore:\n%v", got, beforeA)
			}
			if got := tcState(t, p.nsB, p.ifB); !slices.Equal(got, beforeB) {
				t.Errorf("wb after detach:\n%v\nbefore:\n%v", got, beforeB)
			}
		})
	}
}

func checkPeers(t *testing.T, m *Monitor, want ...netip.Addr) {
	t.Helper()
	got, err := m.Peers()
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(got, func(i, j int) bool { return got[i].Less(got[j]) })
	sort.Slice(want, func(i, j int) bool { return want[i].Less(want[j]) })
	if !slices.Equal(got, want) {
		t.Errorf("peers %v, want %v", got, want)
	}
}

func checkWire(t *testing.T, side string, m *Monitor, ifindex int, dir Direction, want map[Class]Counter) {
	t.Helper()
	got, err := m.WireCounters()
	if err != nil {
		t.Fatal(err)
	}
	for k, c := range got {
		t.Logf("%s %s %s: %d packets, %d bytes", side, k.Direction, k.Class, c.Packets, c.Bytes)
		if k.Ifindex != ifindex || k.Direction != dir {
			t.Errorf("%s: unexpected traffic: %s %s %+v", side, k.Direction, k.Class, c)
			continue
		}
		if c != want[k.Class] {
			t.Errorf("%s %s %s: %+v, want %+v", side, dir, k.Class, c, want[k.Class])
		}
	}
	for class, c := range want {
		if _, ok := got[WireKey{Ifindex: ifindex, Direction: dir, Class: class}]; !ok {
			t.Errorf("%s %s %s: nothing counted, want %+v", side, dir, class, c)
		}
	}
}

func checkUnprotected(t *testing.T, side string, m *Monitor, dir Direction, want map[netip.Addr]Counter) {
	t.Helper()
	got, err := m.UnprotectedCounters()
	if err != nil {
		t.Fatal(err)
	}
	gotByPeer := map[netip.Addr]Counter{}
	for k, c := range got {
		t.Logf("%s unprotected %s %s: %d packets, %d bytes", side, k.Direction, k.Peer, c.Packets, c.Bytes)
		if k.Direction != dir {
			t.Errorf("%s: unprotected %s %s: %+v, want nothing", side, k.Peer, k.Direction, c)
		}
		gotByPeer[k.Peer] = c
	}
	if len(gotByPeer) != len(want) {
		t.Errorf("%s: unprotected %v, want %v", side, gotByPeer, want)
	}
	for peer, c := range want {
		if gotByPeer[peer] != c {
			t.Errorf("%s: unprotected %s %s: %+v, want %+v", side, peer, dir, gotByPeer[peer], c)
		}
	}
}
