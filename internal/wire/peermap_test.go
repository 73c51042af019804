package wire

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
)

// peerRange is n addresses 10.<first>.x.y.
func peerRange(first byte, n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{10, first, byte(i >> 8), byte(i)})
	}
	return out
}

func mapPeers(t *testing.T, p *Programs, slot uint32) []netip.Addr {
	t.Helper()
	u, err := p.Unprotected()
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for k := range u[slot] {
		if k.Direction == Egress {
			out = append(out, k.Peer)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// TestSetPeersNeverStale: the peer map follows the known peers exactly even
// when it is full. A re-addressing that replaces every peer of a full map
// leaves only the new ones; more peers than the map holds fill it with
// current ones and report the rest as unwatched; a peer that stays keeps
// its counters, one that goes loses them; every watched peer passes the
// filter, in its own namespace only.
func TestSetPeersNeverStale(t *testing.T) {
	const size = 64
	p, inst := loadInstance(t, size, 1, true)

	old, renumbered := peerRange(1, size), peerRange(2, size)
	status, err := p.SetPeers(map[uint32][]netip.Addr{1: old})
	if err != nil || status != (PeerMapStatus{Watched: size}) {
		t.Fatalf("first set: %+v, %v", status, err)
	}
	// Some plaintext to a peer that stays, and to one that goes.
	keep := old[0]
	send := func(dst netip.Addr) {
		t.Helper()
		frame := ether(0x0800, ipv4(protoTCP, local4, dst, 0, false, make([]byte, 20)))
		if _, err := inst.program(Egress).Run(&ebpf.RunOptions{Data: frame}); err != nil {
			t.Fatal(err)
		}
	}
	send(keep)
	send(old[1])

	status, err = p.SetPeers(map[uint32][]netip.Addr{1: append(renumbered[:size-1], keep)})
	if err != nil || status != (PeerMapStatus{Watched: size}) {
		t.Errorf("after renumbering: %+v, %v", status, err)
	}
	want := append(slices.Clone(renumbered[:size-1]), keep)
	slices.SortFunc(want, netip.Addr.Compare)
	if got := mapPeers(t, p, 1); !slices.Equal(got, want) {
		t.Errorf("after renumbering the map holds %d peers, %d of them stale", len(got), countIn(got, old[1:]))
	}
	u, err := p.Unprotected()
	if err != nil {
		t.Fatal(err)
	}
	if c := u[1][PeerKey{Peer: keep, Direction: Egress}]; c.Packets != 1 {
		t.Errorf("the peer that stayed: %+v, want its 1 packet kept", c)
	}

	// More peers than room: the map is full of current ones.
	more := peerRange(3, size+10)
	status, err = p.SetPeers(map[uint32][]netip.Addr{1: more})
	if err != nil || status != (PeerMapStatus{Watched: size, Unwatched: 10}) {
		t.Errorf("with %d peers for %d places: %+v, %v", len(more), size, status, err)
	}
	got := mapPeers(t, p, 1)
	if n := countIn(got, more); n != size {
		t.Errorf("map holds %d current peers of %d, want %d", n, len(got), size)
	}
	// Every watched peer is counted: the filter hides none.
	for _, a := range got {
		send(a)
	}
	u, err = p.Unprotected()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range got {
		if c := u[1][PeerKey{Peer: a, Direction: Egress}]; c.Packets != 1 {
			t.Errorf("%s: %d packets counted, want 1", a, c.Packets)
		}
	}

	// The same address in another namespace is another peer.
	status, err = p.SetPeers(map[uint32][]netip.Addr{1: more[:1], 2: more[1:2]})
	if err != nil || status != (PeerMapStatus{Watched: 2}) {
		t.Errorf("two namespaces: %+v, %v", status, err)
	}
	send(more[1]) // a peer of namespace 2 only
	u, err = p.Unprotected()
	if err != nil {
		t.Fatal(err)
	}
	if c := u[2][PeerKey{Peer: more[1], Direction: Egress}]; c.Packets != 0 {
		t.Errorf("namespace 1's program counted %d packets to a peer of namespace 2", c.Packets)
	}
}

func countIn(got, set []netip.Addr) int {
	n := 0
	for _, a := range got {
		if slices.Contains(set, a) {
			n++
		}
	}
	return n
}
