package collector

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netns"

	"github.com/ipsec-exporter/ipsec_exporter/internal/wire"
)

// TestWireCollectorDegraded: a program that cannot load (no CAP_BPF, say)
// leaves a collector that says so and does not fail the scrape.
func TestWireCollectorDegraded(t *testing.T) {
	c := newWireCollector(slog.New(slog.DiscardHandler), wire.Config{}, func(wire.Config) (*wire.Monitor, error) {
		return nil, errors.New("operation not permitted")
	})
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

// TestWireCollector runs the real program in a namespace with a veth pair
// and an IPsec policy, and checks the attach and peer series and that the
// exposition passes the linter. Exact packet counts are internal/wire's and
// the lab's tests.
func TestWireCollector(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace and attach TC programs")
	}
	name := fmt.Sprintf("wirecoll%d", os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ip("-n", name, "link", "add", "w0", "type", "veth", "peer", "name", "w1")
	ip("-n", name, "link", "set", "w0", "up")
	ip("-n", name, "link", "set", "w1", "up")
	ip("-n", name, "xfrm", "policy", "add", "dir", "out", "src", "0.0.0.0/0", "dst", "0.0.0.0/0",
		"tmpl", "src", "192.0.2.1", "dst", "192.0.2.9", "proto", "esp", "mode", "tunnel")
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ns.Close() }()

	c := newWireCollector(slog.New(slog.DiscardHandler), wire.Config{Netns: &ns, Mode: wire.ModeTCX}, wire.Start)
	if c.monitor == nil {
		t.Fatal("program not loaded")
	}
	defer func() { _ = c.Close() }()
	err = testutil.CollectAndCompare(adapt(t, c), strings.NewReader(`
# HELP ipsec_bpf_wire_interface_attached Whether the wire programs are attached to a selected interface (1) or attaching failed (0: see the log), and how (mode tcx or tc).
# TYPE ipsec_bpf_wire_interface_attached gauge
ipsec_bpf_wire_interface_attached{interface="w0",mode="tcx"} 1
ipsec_bpf_wire_interface_attached{interface="w1",mode="tcx"} 1
# HELP ipsec_wire_peers IPsec peer addresses the wire program watches for plaintext, learnt from SAs and policies.
# TYPE ipsec_wire_peers gauge
ipsec_wire_peers 2
# HELP ipsec_bpf_wire_program_loaded Whether the wire BPF programs could be loaded (1) or not (0: see the log; usually missing CAP_BPF or CAP_NET_ADMIN).
# TYPE ipsec_bpf_wire_program_loaded gauge
ipsec_bpf_wire_program_loaded 1
# HELP ipsec_bpf_wire_map_overflow_total Packets not counted because their key was new and its BPF map (wire_counters, unprotected_counters) was full.
# TYPE ipsec_bpf_wire_map_overflow_total counter
ipsec_bpf_wire_map_overflow_total{map="unprotected_counters"} 0
ipsec_bpf_wire_map_overflow_total{map="wire_counters"} 0
`), "ipsec_bpf_wire_interface_attached", "ipsec_wire_peers", "ipsec_bpf_wire_program_loaded", "ipsec_bpf_wire_map_overflow_total")
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

	// Scrapes read maps and dump XFRM over netlink: none may leak a
	// file descriptor.
	fds := countFDs(t)
	for range 50 {
		testutil.CollectAndCount(adapt(t, c))
	}
	if after := countFDs(t); after > fds {
		t.Errorf("%d open file descriptors after 50 scrapes, %d before", after, fds)
	}
}

func readSysctl(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}
