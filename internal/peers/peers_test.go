package peers

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx/netnsxtest"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// newNetns is a named namespace for the host tests (root: they add XFRM
// policies; this kernel has no ESP, so SAs are the lab's), with a netlink
// handle in it.
func newNetns(t *testing.T) (*netlink.Handle, netnsx.Namespace) {
	t.Helper()
	ns := netnsxtest.New(t, "", "peers")
	return netnsxtest.Handle(t, ns), ns
}

func tunnelPolicy(src, dst string, index int) *netlink.XfrmPolicy {
	return &netlink.XfrmPolicy{
		Src:   &net.IPNet{IP: net.IPv4(192, 168, byte(index>>8), byte(index)), Mask: net.CIDRMask(32, 32)},
		Dst:   &net.IPNet{IP: net.IPv4(192, 169, byte(index>>8), byte(index)), Mask: net.CIDRMask(32, 32)},
		Dir:   netlink.XFRM_DIR_OUT,
		Index: 8*index + 1, // out policies have indexes 8k+1
		Tmpls: []netlink.XfrmPolicyTmpl{{
			Src: net.ParseIP(src), Dst: net.ParseIP(dst), Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL,
		}},
	}
}

// recorder keeps what a subscriber was handed.
type recorder struct {
	mu   sync.Mutex
	sets []Set
}

func (r *recorder) add(s Set) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sets = append(r.sets, s)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sets)
}

func (r *recorder) last() Set {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sets[len(r.sets)-1]
}

func peerAddrs(ps []Peer) []netip.Addr {
	var out []netip.Addr
	for _, p := range ps {
		out = append(out, p.Addr)
	}
	return out
}

// waitFor polls cond for up to five seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newTracker(t *testing.T, cfg Config) *Tracker {
	t.Helper()
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	return tr
}

// TestTrackerRemembersPeers: policies added after the start are followed
// from the kernel's notifications; a peer whose policies are gone stays
// known (remembered) for ForgetAfter and is then forgotten; an address of
// the namespace's own is never a peer; subscribers hear every change.
func TestTrackerRemembersPeers(t *testing.T) {
	n, target := newNetns(t)
	if err := n.XfrmPolicyAdd(tunnelPolicy("198.51.100.1", "198.51.100.2", 1)); err != nil {
		t.Fatal(err)
	}
	const forget = 700 * time.Millisecond
	tr := newTracker(t, Config{ForgetAfter: forget, Coalesce: 20 * time.Millisecond})
	tr.Watch([]netnsx.Namespace{target})
	r := &recorder{}
	defer tr.Subscribe(r.add)()
	peers := func() []netip.Addr { return peerAddrs(r.last().Netns[target.Name]) }
	waitFor(t, "the policy's peers", func() bool { return slices.Equal(peers(), addrs("198.51.100.1", "198.51.100.2")) })

	second := tunnelPolicy("198.51.100.1", "203.0.113.9", 2)
	if err := n.XfrmPolicyAdd(second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new policy's peer", func() bool {
		return slices.Equal(peers(), addrs("198.51.100.1", "198.51.100.2", "203.0.113.9"))
	})

	// Our own address is not a peer.
	lo, err := n.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("198.51.100.1"), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the local address to leave the peers", func() bool {
		return slices.Equal(peers(), addrs("198.51.100.2", "203.0.113.9"))
	})

	// The second policy goes (as after DPD): its peer is remembered...
	if err := n.XfrmPolicyDel(second); err != nil {
		t.Fatal(err)
	}
	gone := time.Now()
	waitFor(t, "the peer to be remembered", func() bool {
		for _, p := range r.last().Netns[target.Name] {
			if p.Addr == netip.MustParseAddr("203.0.113.9") {
				return p.Remembered()
			}
		}
		return false
	})
	if got := peers(); !slices.Equal(got, addrs("198.51.100.2", "203.0.113.9")) {
		t.Errorf("peers right after the policy went: %v", got)
	}
	// ... and forgotten after ForgetAfter, not before.
	waitFor(t, "the remembered peer to be forgotten", func() bool { return slices.Equal(peers(), addrs("198.51.100.2")) })
	if after := time.Since(gone); after < forget-50*time.Millisecond {
		t.Errorf("forgotten %v after its policy went, want %v", after, forget)
	}
	for _, p := range r.last().Netns[target.Name] {
		if p.Remembered() || p.Configured {
			t.Errorf("%v: want a current peer", p)
		}
	}
}

// TestTrackerCoalesces: a burst of a thousand policy changes is applied
// from the notifications, not by dumping the tables again per event, and
// reaches subscribers in a few updates with the final set.
func TestTrackerCoalesces(t *testing.T) {
	n, target := newNetns(t)
	tr := newTracker(t, Config{ForgetAfter: time.Hour, Coalesce: 50 * time.Millisecond})
	tr.Watch([]netnsx.Namespace{target})
	r := &recorder{}
	defer tr.Subscribe(r.add)()
	f := tr.namespaces[target.Name].follower
	const policies = 1000
	var want []netip.Addr
	for i := range policies {
		dst := netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)})
		want = append(want, dst)
		if err := n.XfrmPolicyAdd(tunnelPolicy("0.0.0.0", dst.String(), i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every peer", func() bool { return slices.Equal(peerAddrs(r.last().Netns[target.Name]), want) })
	if got := f.dumps.Load(); got != 1 {
		t.Errorf("%d dumps of the tables for %d policy notifications, want only the one at start", got, policies)
	}
	if got := r.count(); got > 1+policies/10 {
		t.Errorf("%d updates to the subscriber for %d changes: not coalesced", got, policies)
	}
	t.Logf("%d policies added: %d dump(s), %d subscriber updates", policies, f.dumps.Load(), r.count())
}

// TestTrackerNamespaceRecreated: a namespace deleted and created again
// under the same name (another ID) is followed anew (the old one's peers
// are remembered); the new one's policies are seen.
func TestTrackerNamespaceRecreated(t *testing.T) {
	dir := t.TempDir()
	first := netnsxtest.New(t, dir, "zz")
	if err := netnsxtest.Handle(t, first).XfrmPolicyAdd(tunnelPolicy("0.0.0.0", "198.51.100.10", 1)); err != nil {
		t.Fatal(err)
	}
	tr := newTracker(t, Config{ForgetAfter: time.Hour, Coalesce: 10 * time.Millisecond})
	tr.Watch([]netnsx.Namespace{first})
	peers := func() []netip.Addr { return peerAddrs(tr.Current().Netns["zz"]) }
	waitFor(t, "the first namespace's peer", func() bool { return slices.Equal(peers(), addrs("198.51.100.10")) })

	// ip netns del zz; ip netns add zz
	second := netnsxtest.Recreate(t, first)
	if second.ID == first.ID {
		t.Fatal("the recreated namespace has the old one's ID")
	}
	h := netnsxtest.Handle(t, second)
	if err := h.XfrmPolicyAdd(tunnelPolicy("0.0.0.0", "198.51.100.20", 1)); err != nil {
		t.Fatal(err)
	}
	tr.Watch([]netnsx.Namespace{second})
	waitFor(t, "the new namespace's peer", func() bool { return slices.Equal(peers(), addrs("198.51.100.10", "198.51.100.20")) })
	for _, p := range tr.Current().Netns["zz"] {
		if p.Addr == netip.MustParseAddr("198.51.100.10") && !p.Remembered() {
			t.Errorf("the old namespace's peer %v is not remembered", p)
		}
	}
	// Changes in the new one are followed.
	if err := h.XfrmPolicyAdd(tunnelPolicy("0.0.0.0", "198.51.100.21", 2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a policy added to the new namespace", func() bool { return slices.Contains(peers(), netip.MustParseAddr("198.51.100.21")) })
}

func own(t *testing.T) netnsx.Namespace {
	t.Helper()
	ns, err := netnsx.Own()
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// TestTrackerConfigured: configured addresses and the peer-names file's
// are known in every watched namespace, without any SA or policy, except
// where the address is the namespace's own; a source set to nothing goes.
func TestTrackerConfigured(t *testing.T) {
	n, target := newNetns(t)
	names := filepath.Join(t.TempDir(), "peers")
	if err := os.WriteFile(names, []byte("192.0.2.7 gw-a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lo, err := n.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("192.0.2.99"), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	tr := newTracker(t, Config{NamesFile: names, Coalesce: 10 * time.Millisecond})
	tr.Watch([]netnsx.Namespace{own(t), target})
	tr.SetConfigured("ike", addrs("192.0.2.8", "192.0.2.99"))
	waitFor(t, "configured peers in both namespaces", func() bool {
		s := tr.Current()
		return slices.Equal(peerAddrs(s.Netns[target.Name]), addrs("192.0.2.7", "192.0.2.8")) &&
			slices.Contains(peerAddrs(s.Netns[""]), netip.MustParseAddr("192.0.2.99"))
	})
	for _, p := range tr.Current().Netns[target.Name] {
		if !p.Configured || p.Remembered() {
			t.Errorf("%+v: want configured, not remembered", p)
		}
	}
	if got := tr.Names()[netip.MustParseAddr("192.0.2.7")]; got != "gw-a" {
		t.Errorf("name of 192.0.2.7: %q, want gw-a", got)
	}
	tr.SetConfigured("ike", nil)
	waitFor(t, "the source's peers to go", func() bool {
		return slices.Equal(peerAddrs(tr.Current().Netns[target.Name]), addrs("192.0.2.7"))
	})
}
