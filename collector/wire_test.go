package collector

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx/netnsxtest"
	"github.com/ipsec-exporter/ipsec_exporter/internal/peers"
	"github.com/ipsec-exporter/ipsec_exporter/internal/wire"
)

// TestWireCollectorDegraded: a program that cannot load (no CAP_BPF, say)
// leaves a collector that says so and does not fail the scrape.
func TestWireCollectorDegraded(t *testing.T) {
	c := newWireCollector(slog.New(slog.DiscardHandler), wire.Config{}, func() (*wire.Programs, error) {
		return nil, errors.New("operation not permitted")
	}, nil)
	c.watch([]netnsx.Namespace{{}})
	err := testutil.CollectAndCompare(adapt(t, c), strings.NewReader(`
# HELP ipsec_bpf_wire_program_loaded Whether the wire BPF programs could be loaded (1) or not (0: see the log; usually missing CAP_BPF or CAP_NET_ADMIN).
# TYPE ipsec_bpf_wire_program_loaded gauge
ipsec_bpf_wire_program_loaded 0
`))
	if err != nil {
		t.Error(err)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
}

// wireFixture is a namespace (dir/name, dir "" for a new one) with a veth
// pair (w0, w1, or the given names) and an IPsec policy whose tunnel
// endpoints 192.0.2.1 and 192.0.2.9 are its peers.
func wireFixture(t *testing.T, dir, name string, links ...string) (*netlink.Handle, netnsx.Namespace) {
	t.Helper()
	ns := netnsxtest.New(t, dir, name)
	h := netnsxtest.Handle(t, ns)
	if len(links) == 0 {
		links = []string{"w0", "w1"}
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: links[0]}, PeerName: links[1]}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	for _, name := range links {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.XfrmPolicyAdd(wirePolicy("192.0.2.1", "192.0.2.9")); err != nil {
		t.Fatal(err)
	}
	return h, ns
}

func wirePolicy(src, dst string) *netlink.XfrmPolicy {
	return &netlink.XfrmPolicy{
		Src: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)},
		Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)},
		Dir: netlink.XFRM_DIR_OUT,
		Tmpls: []netlink.XfrmPolicyTmpl{{
			Src: net.ParseIP(src), Dst: net.ParseIP(dst), Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL,
		}},
	}
}

// startWireCollector runs the collector with its own tracker on the given
// namespaces, as the exporter runs it on --collector.netns.*.
func startWireCollector(t *testing.T, forget time.Duration, targets ...netnsx.Namespace) (*wireCollector, *peers.Tracker) {
	t.Helper()
	tracker, err := peers.New(peers.Config{ForgetAfter: forget, Coalesce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tracker.Close)
	tracker.Watch(targets)
	c := newWireCollector(slog.New(slog.DiscardHandler), wire.Config{Mode: wire.ModeTCX},
		func() (*wire.Programs, error) { return wire.Load(0) }, tracker)
	if c.progs == nil {
		t.Fatal("program not loaded")
	}
	t.Cleanup(func() { _ = c.Close() })
	c.watch(targets)
	return c, tracker
}

// waitSample polls the collector until the sample has the value.
func waitSample(t *testing.T, c Collector, name string, want map[string]string, value float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, ok := gatherSamples(t, c).find(t, name, want)
		if ok && got == value {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v (present %v), want %v", name, want, got, ok, value)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWireCollector runs the real program in a namespace with a veth pair
// and an IPsec policy, and checks the attach and peer series, that the
// exposition passes the linter, and that scrapes leak no descriptor. Exact
// packet counts are internal/wire's and the lab's tests.
func TestWireCollector(t *testing.T) {
	_, target := wireFixture(t, "", "wirecoll")
	c, _ := startWireCollector(t, time.Hour, target)
	waitSample(t, c, "ipsec_wire_peers", labels("netns", target.Name), 2)
	ns := target.Name
	err := testutil.CollectAndCompare(adapt(t, c), strings.NewReader(fmt.Sprintf(`
# HELP ipsec_bpf_wire_interface_attached Whether the wire programs are attached to a selected interface (1) or attaching failed (0: see the log), and how (mode tcx or tc).
# TYPE ipsec_bpf_wire_interface_attached gauge
ipsec_bpf_wire_interface_attached{interface="w0",mode="tcx",netns="%[1]s"} 1
ipsec_bpf_wire_interface_attached{interface="w1",mode="tcx",netns="%[1]s"} 1
# HELP ipsec_bpf_wire_netns_watched Whether the wire program follows the interfaces of a watched namespace (1) or cannot (0: see the log; entering another namespace needs CAP_SYS_ADMIN).
# TYPE ipsec_bpf_wire_netns_watched gauge
ipsec_bpf_wire_netns_watched{netns="%[1]s"} 1
# HELP ipsec_wire_peers Known IPsec peers of the namespace the wire program watches for plaintext.
# TYPE ipsec_wire_peers gauge
ipsec_wire_peers{netns="%[1]s"} 2
# HELP ipsec_wire_peers_remembered Known peers of the namespace whose SAs and policies are gone, still watched for plaintext for --peers.forget-after.
# TYPE ipsec_wire_peers_remembered gauge
ipsec_wire_peers_remembered{netns="%[1]s"} 0
# HELP ipsec_wire_peers_unwatched Known peers the wire program does not watch because its peer map is full (--bpf.wire-peer-map-size): plaintext to them is not counted.
# TYPE ipsec_wire_peers_unwatched gauge
ipsec_wire_peers_unwatched 0
# HELP ipsec_bpf_wire_program_loaded Whether the wire BPF programs could be loaded (1) or not (0: see the log; usually missing CAP_BPF or CAP_NET_ADMIN).
# TYPE ipsec_bpf_wire_program_loaded gauge
ipsec_bpf_wire_program_loaded 1
`, ns)), "ipsec_bpf_wire_interface_attached", "ipsec_bpf_wire_netns_watched", "ipsec_wire_peers", "ipsec_wire_peers_remembered",
		"ipsec_wire_peers_unwatched", "ipsec_bpf_wire_program_loaded")
	if err != nil {
		t.Error(err)
	}
	// Run time and count only with kernel.bpf_stats_enabled.
	if n := testutil.CollectAndCount(adapt(t, c), "ipsec_bpf_wire_program_runs_total"); n != 0 && readSysctl("/proc/sys/kernel/bpf_stats_enabled") != "1" {
		t.Errorf("%d run counters without bpf_stats_enabled, want none", n)
	}
	enabled := t.TempDir() + "/bpf_stats_enabled"
	if err := os.WriteFile(enabled, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.statsSysctl = enabled
	if n := testutil.CollectAndCount(adapt(t, c), "ipsec_bpf_wire_program_runs_total", "ipsec_bpf_wire_program_run_seconds_total"); n != 4 {
		t.Errorf("%d run time and count series with bpf_stats_enabled, want 4 (two programs)", n)
	}

	problems, err := testutil.CollectAndLint(adapt(t, c))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	// Scrapes read maps only (the peers follow the kernel's events, not
	// the scrapes): none may leak a file descriptor.
	fds := countFDs(t)
	for range 50 {
		testutil.CollectAndCount(adapt(t, c))
	}
	if after := countFDs(t); after > fds {
		t.Errorf("%d open file descriptors after 50 scrapes, %d before", after, fds)
	}
}

// TestWireCollectorNamespaces: the program follows namespaces as the
// watched list changes: one added later is attached with its own netns
// label, one recreated under its name is attached anew, one that goes is
// detached and let go (nothing keeps it alive).
func TestWireCollectorNamespaces(t *testing.T) {
	dir := t.TempDir()
	_, a := wireFixture(t, dir, "a")
	c, tracker := startWireCollector(t, time.Hour, a)
	attached := labels("netns", "a", "interface", "w0", "mode", "tcx")
	waitSample(t, c, "ipsec_bpf_wire_interface_attached", attached, 1)

	_, b := wireFixture(t, dir, "b")
	heldBefore := fdsOnInode(t, b.ID.Ino) // none: the fixture keeps no descriptor
	both := []netnsx.Namespace{a, b}
	tracker.Watch(both)
	c.watch(both)
	waitSample(t, c, "ipsec_bpf_wire_interface_attached", labels("netns", "b", "interface", "w1", "mode", "tcx"), 1)
	waitSample(t, c, "ipsec_wire_peers", labels("netns", "b"), 2)

	// ip netns del a; ip netns add a, with interfaces of other names.
	if err := netnsxtest.Delete(a.Path); err != nil {
		t.Fatal(err)
	}
	_, recreated := wireFixture(t, dir, "a", "x0", "x1")
	tracker.Watch([]netnsx.Namespace{recreated, b})
	c.watch([]netnsx.Namespace{recreated, b})
	waitSample(t, c, "ipsec_bpf_wire_interface_attached", labels("netns", "a", "interface", "x0", "mode", "tcx"), 1)
	if _, ok := gatherSamples(t, c).find(t, "ipsec_bpf_wire_interface_attached", attached); ok {
		t.Error("the old namespace's interface is still reported")
	}

	// b goes from the list: its series go, and the collector holds it no
	// more.
	tracker.Watch([]netnsx.Namespace{recreated})
	c.watch([]netnsx.Namespace{recreated})
	if _, ok := gatherSamples(t, c).find(t, "ipsec_bpf_wire_netns_watched", labels("netns", "b")); ok {
		t.Error("a namespace no longer watched is still reported")
	}
	if held := fdsOnInode(t, b.ID.Ino); held != heldBefore {
		t.Errorf("%d descriptors hold namespace b after the collector let it go, %d before it watched it", held, heldBefore)
	}
}

// fdsOnInode counts this process's descriptors open on a namespace's nsfs
// inode: the handles that keep it alive.
func fdsOnInode(t *testing.T, ino uint64) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		var st unix.Stat_t
		if unix.Stat("/proc/self/fd/"+e.Name(), &st) == nil && st.Ino == ino {
			n++
		}
	}
	return n
}

// TestWireCollectorRemembersPeers: after a tunnel's policy is removed (as a
// daemon does after dead peer detection) the peer stays known: plaintext to
// it is counted as unprotected, in its namespace's series, and the peer is
// reported as remembered; once forgotten, its series end.
func TestWireCollectorRemembersPeers(t *testing.T) {
	n, target := wireFixture(t, "", "wiredpd")
	const forget = 2 * time.Second
	c, _ := startWireCollector(t, forget, target)
	waitSample(t, c, "ipsec_wire_peers", labels("netns", target.Name), 2)
	if err := n.XfrmPolicyDel(wirePolicy("192.0.2.1", "192.0.2.9")); err != nil {
		t.Fatal(err)
	}
	gone := time.Now()
	waitSample(t, c, "ipsec_wire_peers_remembered", labels("netns", target.Name), 2)

	// Plaintext out of w0 to the peer whose policy is gone.
	const frames = 5
	sendPlaintext(t, n, target, "w0", netip.MustParseAddr("192.0.2.9"), frames)
	unprotected := labels("netns", target.Name, "peer", "192.0.2.9", "direction", "egress")
	waitSample(t, c, "ipsec_wire_unprotected_packets_total", unprotected, frames)
	if time.Since(gone) > forget {
		t.Fatal("too slow to tell remembering from forgetting")
	}

	waitSample(t, c, "ipsec_wire_peers", labels("netns", target.Name), 0)
	if _, ok := gatherSamples(t, c).find(t, "ipsec_wire_unprotected_packets_total", unprotected); ok {
		t.Error("a forgotten peer's unprotected series remains")
	}
}

// sendPlaintext sends n UDP frames to dst out of the named interface of ns
// through a packet socket (no route, no neighbour needed).
func sendPlaintext(t *testing.T, h *netlink.Handle, ns netnsx.Namespace, ifname string, dst netip.Addr, n int) {
	t.Helper()
	l, err := h.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	ip := make([]byte, 28)
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
	ip[2], ip[3] = 0, 28
	copy(ip[12:16], []byte{192, 0, 2, 1})
	d := dst.As4()
	copy(ip[16:20], d[:])
	frame := append(append(append([]byte{0x02, 0, 0, 0, 0, 9}, l.Attrs().HardwareAddr...), 0x08, 0x00), ip...)
	var fd int
	if err := ns.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(fd) }()
	to := &unix.SockaddrLinklayer{Ifindex: l.Attrs().Index, Protocol: 0x0008, Halen: 6}
	for range n {
		if err := unix.Sendto(fd, frame, 0, to); err != nil {
			t.Fatal(err)
		}
	}
}

func readSysctl(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}
