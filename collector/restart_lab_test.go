package collector

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/internal/pin/pintest"
	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// TestLabRestartCounts: 100 pings, scrape, 100 pings, SIGKILL, 100 pings
// while no exporter runs, restart, 100 pings, scrape (issue 14 finding 5).
// Without --bpf.pin-path the restarted exporter's counters start at 0 (a
// reset Prometheus sees): 100. With it they continue, and the pinned
// programs counted while the exporter was down: 400 of 400, in verdicts
// (both hook modes) and on the wire.
func TestLabRestartCounts(t *testing.T) {
	scenario.RequireVM(t)
	for _, c := range []struct {
		name   string
		pinned bool
		mode   string
		want   float64
	}{
		{"unpinned", false, "fentry", 100},
		{"pinned-fentry", true, "fentry", 400},
		{"pinned-kprobe", true, "kprobe", 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := scenario.NewPair(t)
			e := p.ESP(t, scenario.ESPOptions{})
			args := []string{"--bpf.strict", "--bpf.hook-mode=" + c.mode, "--no-collector.sa", "--no-collector.policy",
				"--no-collector.events", "--no-collector.xfrm_stat", "--collector.netns.dir=/run/netns",
				"--collector.netns.name=" + p.A.Name}
			var pins string
			if c.pinned {
				pins = filepath.Join(string(pintest.Dir(t)), "ipsec_exporter")
				args = append(args, "--bpf.pin-path="+pins)
			}
			encrypt := labels("direction", "encrypt", "peer", e.BAddr.String(), "result", "ok")
			wire := labels("netns", p.A.Name, "interface", "eth0", "direction", "egress", "class", "esp")
			ping := func() {
				t.Helper()
				if got := p.A.Ping(t, e.BAddr, 100); got != 100 {
					t.Fatalf("%d of 100 pings answered", got)
				}
			}

			first := startExporter(t, nil, args...)
			first.waitFor(t, "ipsec_bpf_wire_interface_attached", labels("netns", p.A.Name, "interface", "eth0"), 1)
			ping()
			first.waitFor(t, "ipsec_xfrm_packets_total", encrypt, 100)
			first.waitFor(t, "ipsec_wire_packets_total", wire, 100)
			ping()
			first.stop(t, syscall.SIGKILL)
			ping() // no exporter runs

			second := startExporter(t, nil, args...)
			second.waitFor(t, "ipsec_bpf_wire_interface_attached", labels("netns", p.A.Name, "interface", "eth0"), 1)
			ping()
			if sa := p.A.SACounters(t, e.AB)["packets"]; sa != 400 {
				t.Fatalf("the SA carried %d packets, want 400", sa)
			}
			s := second.waitFor(t, "ipsec_xfrm_packets_total", encrypt, c.want)
			second.waitFor(t, "ipsec_wire_packets_total", wire, c.want)
			mode, _ := s.find(t, "ipsec_bpf_verdict_hook_mode", labels("mode", c.mode))
			second.stop(t, syscall.SIGTERM)
			if mode != 1 {
				t.Errorf("hook mode %s not in use", c.mode)
			}
			if c.pinned {
				// SIGTERM keeps what is pinned: that is the point.
				for _, f := range []string{"verdict/verdict_counts", "verdict/verdict_keys", "verdict/links", "wire/netns-" + p.A.Name + "/eth0/wire_counters"} {
					if _, err := os.Stat(filepath.Join(pins, f)); err != nil {
						t.Errorf("after SIGTERM: %v", err)
					}
				}
			}
			if c.pinned && c.mode == "fentry" {
				unpinsWhatIsNoLongerWatched(t, p, args, pins)
			}
			t.Logf("kernel %s, %s: 400 ESP packets sent, verdict ok and wire esp counted %v after the restart", scenario.Kernel(), c.name, c.want)
		})
	}
}

// unpinsWhatIsNoLongerWatched: an interface deleted while the exporter runs
// takes its pinned counters with it, and an exporter started with a
// narrower --collector.wire.interfaces unpins those of the interfaces it
// no longer watches (their links would go on counting).
func unpinsWhatIsNoLongerWatched(t *testing.T, p *scenario.Pair, args []string, pins string) {
	t.Helper()
	dir := func(name string) string { return filepath.Join(pins, "wire", "netns-"+p.A.Name, name) }
	spare := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "spare0"}, PeerName: "spare1"}
	if err := p.A.NL.LinkAdd(spare); err != nil {
		t.Fatal(err)
	}
	l, err := p.A.NL.LinkByName("spare0")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.A.NL.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	x := startExporter(t, nil, args...)
	x.waitFor(t, "ipsec_bpf_wire_interface_attached", labels("netns", p.A.Name, "interface", "spare0"), 1)
	if _, err := os.Stat(dir("spare0")); err != nil {
		t.Fatalf("spare0 attached, its pins: %v", err)
	}
	if err := p.A.NL.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, err := os.Stat(dir("spare0")); err == nil; _, err = os.Stat(dir("spare0")) {
		if time.Now().After(deadline) {
			t.Fatal("spare0 deleted, its pins still there after 10s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	x.stop(t, syscall.SIGTERM)

	x = startExporter(t, nil, append(args, "--collector.wire.interfaces=none")...)
	x.samples(t) // serving: the wire collector has started
	x.stop(t, syscall.SIGTERM)
	if _, err := os.Stat(dir("eth0")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("eth0 no longer selected, its pins: %v, want gone", err)
	}
}
