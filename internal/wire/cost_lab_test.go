package wire

import (
	"flag"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// TestLabBenchWireCost measures what the wire program costs per packet on
// the lab's instruction-counted clock (scripts/bench.sh's qemu: one guest
// nanosecond per emulated instruction). Frames of each class go from A out
// of its eth0 (egress hook) into B's eth0 (ingress hook), in rounds with no
// TC program, with an empty one (return TC_ACT_UNSPEC) and with the wire
// program, attached the same way (auto: tcx on 6.12, clsact on 6.1). The
// extra time over "none" per frame and hook is the all-in cost, hook
// mechanism included; the body alone comes from BPF_PROG_TEST_RUN. A
// benchmark, not a test: it runs only when -run names it.
func TestLabBenchWireCost(t *testing.T) {
	scenario.RequireVM(t)
	if f := flag.Lookup("test.run"); f == nil || !strings.Contains(f.Value.String(), "Bench") {
		t.Skip("a benchmark: runs only when -run names TestLabBench (make bench)")
	}
	const frames, rounds = 4000, 3
	cs, _ := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource")
	av, _ := os.ReadFile("/sys/devices/system/clocksource/clocksource0/available_clocksource")
	var steps []time.Duration
	for last := time.Now(); len(steps) < 5; {
		if now := time.Now(); now != last {
			steps = append(steps, now.Sub(last))
			last = now
		}
	}
	t.Logf("clocksource %q of %q; time.Now steps %v", strings.TrimSpace(string(cs)), strings.TrimSpace(string(av)), steps)
	p := scenario.NewPair(t)
	e := p.ESP(t, scenario.ESPOptions{})
	nonPeer4 := netip.MustParseAddr("10.77.0.99")
	nonPeer6 := netip.MustParseAddr("fd77::99")
	spi := esp(0x777, 1000)
	kinds := []struct {
		name  string
		frame []byte
	}{
		// From and to addresses that are nobody's peer: B's ingress
		// looks at the source, A's egress at the destination.
		{"plaintext_v4", ether(0x0800, ipv4(protoTCP, netip.MustParseAddr("10.77.0.98"), nonPeer4, 0, false, make([]byte, 1000)))},
		{"plaintext_v6", ether(0x86dd, ipv6(protoTCP, p.A.IPv6, nonPeer6, make([]byte, 1000)))},
		{"plaintext_to_peer", ether(0x0800, ipv4(protoTCP, e.AAddr, e.BAddr, 0, false, make([]byte, 1000)))},
		{"esp_v4", ether(0x0800, ipv4(protoESP, e.AAddr, e.BAddr, 0, false, spi))},
		{"esp_in_udp", ether(0x0800, ipv4(protoUDP, e.AAddr, e.BAddr, 0, false, udp(4500, 4500, spi)))},
	}
	for i := range kinds {
		copy(kinds[i].frame[0:6], p.B.MAC)
		copy(kinds[i].frame[6:12], p.A.MAC)
	}
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = empty.Close() }()

	eth0 := regexp.MustCompile(`^eth0$`)
	variants := []struct {
		name   string
		attach func() func()
	}{
		{"none", func() func() { return func() {} }},
		{"empty", func() func() {
			a, b := attachProgram(t, p.A, empty), attachProgram(t, p.B, empty)
			return func() { a(); b() }
		}},
		{"wire", func() func() {
			var ms []*Monitor
			for _, n := range []*scenario.Node{p.A, p.B} {
				h := n.Handle()
				m, err := Start(Config{Netns: &h, Interfaces: eth0})
				if err != nil {
					t.Fatal(err)
				}
				ms = append(ms, m)
			}
			return func() {
				for _, m := range ms {
					_ = m.Close()
				}
			}
		}},
	}
	l, err := p.A.NL.LinkByName(p.A.Link)
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	if err := p.A.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(fd) }()
	to := &unix.SockaddrLinklayer{Ifindex: l.Attrs().Index, Halen: 6}
	copy(to.Addr[:], p.B.MAC)
	// send times each frame on its own and returns the median: the clock
	// jumps to the next timer whenever the guest idles, and timer ticks,
	// RCU and other work land inside some sends; the median frame is one
	// that carries none of that.
	send := func(frame []byte) float64 {
		ds := make([]float64, frames)
		for i := range ds {
			start := time.Now()
			if err := unix.Sendto(fd, frame, 0, to); err != nil {
				t.Fatal(err)
			}
			ds[i] = float64(time.Since(start).Nanoseconds())
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	perFrame := map[string]map[string][]float64{}
	for _, v := range variants {
		perFrame[v.name] = map[string][]float64{}
	}
	for range rounds {
		for _, v := range variants {
			detach := v.attach()
			time.Sleep(500 * time.Millisecond)
			for _, k := range kinds {
				send(k.frame) // warm up
				d := send(k.frame)
				perFrame[v.name][k.name] = append(perFrame[v.name][k.name], d)
			}
			detach()
		}
	}
	median := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	for _, k := range kinds {
		none := median(perFrame["none"][k.name])
		emptyCost := (median(perFrame["empty"][k.name]) - none) / 2
		wireCost := (median(perFrame["wire"][k.name]) - none) / 2
		t.Logf("kernel %s, %s: per frame and hook, all in: empty program %.0f, wire program %.0f (%.2fx empty); path without programs %.0f per frame (rounds: none %v, empty %v, wire %v)",
			scenario.Kernel(), k.name, emptyCost, wireCost, wireCost/emptyCost, none,
			perFrame["none"][k.name], perFrame["empty"][k.name], perFrame["wire"][k.name])
	}
	for _, k := range kinds {
		bodyCost(t, empty, k.frame, k.name)
	}
}

// bodyCost logs the egress program's own run time on frame through
// BPF_PROG_TEST_RUN, against an empty program's.
func bodyCost(t *testing.T, empty *ebpf.Program, frame []byte, name string) {
	t.Helper()
	o, err := Load(0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = o.Close() }()
	inst, err := o.instance(0, true, "")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = inst.Close() }()
	const runs = 200000
	_, perEmpty, err := empty.Benchmark(frame, runs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []Direction{Egress, Ingress} {
		_, per, err := inst.program(d).Benchmark(frame, runs, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kernel %s, %s: BPF_PROG_TEST_RUN per run: %s program %d, empty program %d, difference %d",
			scenario.Kernel(), name, d, per.Nanoseconds(), perEmpty.Nanoseconds(), per.Nanoseconds()-perEmpty.Nanoseconds())
	}
}

// attachProgram attaches prog at ingress and egress of n's link as the
// wire program would be on this kernel (tcx from 6.6, else clsact and
// cls_bpf) and returns its detach.
func attachProgram(t *testing.T, n *scenario.Node, prog *ebpf.Program) func() {
	t.Helper()
	l, err := n.NL.LinkByName(n.Link)
	if err != nil {
		t.Fatal(err)
	}
	idx := l.Attrs().Index
	if scenario.Kernel() != "6.1" {
		var links []link.Link
		err := n.Do(func() error {
			for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
				l, err := link.AttachTCX(link.TCXOptions{Interface: idx, Program: prog, Attach: at, Anchor: link.Head()})
				if err != nil {
					return err
				}
				links = append(links, l)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return func() {
			for _, l := range links {
				_ = l.Close()
			}
		}
	}
	q := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Parent: netlink.HANDLE_CLSACT, Handle: netlink.MakeHandle(0xffff, 0)}}
	if err := n.NL.QdiscAdd(q); err != nil {
		t.Fatal(err)
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		f := &netlink.BpfFilter{
			FilterAttrs:  netlink.FilterAttrs{LinkIndex: idx, Parent: parent, Handle: 1, Priority: 1, Protocol: unix.ETH_P_ALL},
			Fd:           prog.FD(),
			Name:         "empty",
			DirectAction: true,
		}
		if err := n.NL.FilterAdd(f); err != nil {
			t.Fatal(err)
		}
	}
	return func() { _ = n.NL.QdiscDel(q) }
}
