package bench

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// The kernel's books at the scale of a remote-access gateway: 50,000 SAs
// and 50,000 policies in one namespace, the shape of TestLabBenchKernelState
// (tunnel SAs between address pairs, host-sized policies) five times over.
//
// Why not the gateway's own shape (one local address, 25,000 clients)? The
// kernel inserts SAs that share an address in time that grows with their
// number (measured in the lab, 6.12: 8,000 SAs in 10 s between distinct
// pairs, 55-71 s with the gateway's address on one end), so filling it
// would take most of make bench; the dump and the scrape read the same
// structures either way. (Such a gateway also has two ipsec_peer_* series
// sets per client: 250,000 series at 25,000 clients.)
const (
	// XFRM_MSG_GETSA and XFRM_MSG_GETPOLICY (include/uapi/linux/xfrm.h).
	xfrmMsgGetSA, xfrmMsgGetPolicy = 0x12, 0x15

	scaleObjects = 50000
	scaleScrapes = 5
	scaleBurst   = 1000 // SAs added and deleted again while the exporter idles
)

// TestLabBenchKernelStateScale fills a namespace as a remote-access gateway
// would, then measures in one run:
//   - the bare dumps (XFRM_MSG_GETSA, GETPOLICY: a socket, the request, the
//     replies read and dropped), the floor any reader of that state pays;
//   - an exporter with only the sa collector: its own duration per scrape
//     against the bare SA dump (target: within 1.5 times);
//   - an exporter with every default collector: the whole scrape against
//     both bare dumps, its resident memory (target: 80 MiB) and the CPU it
//     spends while 2,000 SA events go by between scrapes (a full re-dump
//     per event would cost about 2,000 bare dumps).
func TestLabBenchKernelStateScale(t *testing.T) {
	requireBench(t)
	ns := scenario.NewNetns(t, "g")
	start := time.Now()
	for i := range scaleObjects {
		if err := ns.NL.XfrmStateAdd(scaleSA(0x10000, i)); err != nil {
			t.Fatalf("SA %d: %v", i, err)
		}
		if err := ns.NL.XfrmPolicyAdd(scalePolicy(i)); err != nil {
			t.Fatalf("policy %d: %v", i, err)
		}
	}
	t.Cleanup(func() {
		_ = ns.NL.XfrmStateFlush(0)
		_ = ns.NL.XfrmPolicyFlush()
	})
	t.Logf("%d SAs and %d policies added in %.1fs", scaleObjects, scaleObjects, time.Since(start).Seconds())

	saDumps, saMsgs, saBytes := bareDump(t, ns, xfrmMsgGetSA)
	polDumps, polMsgs, polBytes := bareDump(t, ns, xfrmMsgGetPolicy)
	if saMsgs != scaleObjects || polMsgs != scaleObjects {
		t.Fatalf("bare dumps read %d SAs and %d policies, want %d each", saMsgs, polMsgs, scaleObjects)
	}
	for i := range saDumps {
		Emit(Record{Kind: "kstate_scale", Kernel: scenario.Kernel(), Variant: "getsa_dump", Collector: "sa", Objects: scaleObjects,
			Round: i + 1, Seconds: saDumps[i].Seconds()})
		Emit(Record{Kind: "kstate_scale", Kernel: scenario.Kernel(), Variant: "getpolicy_dump", Collector: "policy", Objects: scaleObjects,
			Round: i + 1, Seconds: polDumps[i].Seconds()})
	}
	bareSA, barePol := median(saDumps), median(polDumps)
	t.Logf("bare dumps (median of %d): SAs %v (%d bytes), policies %v (%d bytes)", len(saDumps), bareSA, saBytes, barePol, polBytes)

	// Only the sa collector: its duration against the bare SA dump.
	x := startExporter(t, 10890, []string{"sa"}, "--collector.netns.name="+ns.Name)
	durs, walls, last := scaleScrapeRounds(t, x, "sa")
	t.Logf("sa collector alone, %d SAs: collector median %v = %.2f x the bare SA dump, whole scrape median %v = %.2f x (target <= 1.5); %d series; RSS %d MiB, peak %d MiB",
		scaleObjects, median(durs), median(durs).Seconds()/bareSA.Seconds(), median(walls), median(walls).Seconds()/bareSA.Seconds(),
		last.series, x.status(t, "VmRSS")>>20, x.status(t, "VmHWM")>>20)
	x.stop(t)

	// Every default collector: the whole scrape, memory, and the CPU of a
	// burst of events between scrapes.
	x = startExporter(t, 10891, nil, "--collector.netns.name="+ns.Name)
	_, walls, last = scaleScrapeRounds(t, x, "default")
	var per []string
	for k, v := range last.samples {
		if strings.HasPrefix(k, "ipsec_scrape_collector_duration_seconds{") {
			per = append(per, fmt.Sprintf("%s %.3fs", strings.TrimSuffix(strings.TrimPrefix(k, `ipsec_scrape_collector_duration_seconds{collector="`), `"}`), v))
		}
	}
	slices.Sort(per)
	rss, hwm := x.status(t, "VmRSS"), x.status(t, "VmHWM")
	t.Logf("every default collector: scrape median %v = %.2f x both bare dumps (SA and policy); %d series; collectors %s; RSS %d MiB, peak %d MiB (target <= 80)",
		median(walls), median(walls).Seconds()/(bareSA+barePol).Seconds(), last.series, strings.Join(per, ", "), rss>>20, hwm>>20)

	cpu0 := x.cpu(t)
	for i := range scaleBurst {
		if err := ns.NL.XfrmStateAdd(scaleSA(0x100000, i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range scaleBurst {
		if err := ns.NL.XfrmStateDel(scaleSA(0x100000, i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * time.Second) // what the events set off, done
	burst := x.cpu(t) - cpu0
	Emit(Record{Kind: "kstate_scale", Kernel: scenario.Kernel(), Variant: "event_burst_cpu", Collector: "default", Objects: 2 * scaleBurst,
		Seconds: burst.Seconds()})
	after := x.scrape(t)
	added := after.samples[`ipsec_xfrm_events_total{event="sa_added",netns="`+ns.Name+`"}`] - last.samples[`ipsec_xfrm_events_total{event="sa_added",netns="`+ns.Name+`"}`]
	t.Logf("%d SA events between two scrapes (%v sa_added counted): exporter CPU %v = %.1f bare SA dumps' time (a re-dump per event: ~%d)",
		2*scaleBurst, added, burst, burst.Seconds()/bareSA.Seconds(), 2*scaleBurst)
}

// scaleScrapeRounds scrapes x scaleScrapes times and prints a record per
// scrape (its wall time; the exporter's resident memory after it), and
// returns the collector's own durations (for a single collector), the
// scrapes' wall times and the last scrape.
func scaleScrapeRounds(t *testing.T, x *exporter, config string) (durs, walls []time.Duration, last scrapeResult) {
	t.Helper()
	for round := 1; round <= scaleScrapes; round++ {
		last = x.scrape(t)
		walls = append(walls, last.wall)
		durs = append(durs, seconds(last.samples[`ipsec_scrape_collector_duration_seconds{collector="`+config+`"}`]))
		Emit(Record{Kind: "kstate_scale", Kernel: scenario.Kernel(), Variant: "scrape", Collector: config, Objects: scaleObjects,
			Round: round, Seconds: last.wall.Seconds(), Series: last.series, RSSBytes: x.status(t, "VmRSS"), HWMBytes: x.status(t, "VmHWM")})
	}
	return durs, walls, last
}

// scaleSA is SA i: 10.80.x.y to 10.81.x.y (x.y = i), tunnel mode, SPI
// spiBase+i.
func scaleSA(spiBase, i int) *netlink.XfrmState {
	return &netlink.XfrmState{
		Src: net.IPv4(10, 80, byte(i>>8), byte(i)), Dst: net.IPv4(10, 81, byte(i>>8), byte(i)),
		Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL,
		Spi: spiBase + i, Reqid: i + 1, ReplayWindow: 32,
		Aead: &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: bytes.Repeat([]byte{1}, 20), ICVLen: 128},
	}
}

// scalePolicy is policy i: 10.90.x.y to a server, 10.100.0.1, through SA
// i's tunnel. Host-sized selectors keep the policies in the kernel's exact
// hash (a 0.0.0.0/0 side would make them inexact, whose insertion is
// quadratic), and one end fixed spreads them over its buckets in the lab.
func scalePolicy(i int) *netlink.XfrmPolicy {
	return &netlink.XfrmPolicy{
		Src: &net.IPNet{IP: net.IPv4(10, 90, byte(i>>8), byte(i)), Mask: net.CIDRMask(32, 32)},
		Dst: &net.IPNet{IP: net.IPv4(10, 100, 0, 1), Mask: net.CIDRMask(32, 32)},
		Dir: netlink.XFRM_DIR_OUT,
		Tmpls: []netlink.XfrmPolicyTmpl{{Src: net.IPv4(10, 80, byte(i>>8), byte(i)), Dst: net.IPv4(10, 81, byte(i>>8), byte(i)),
			Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL, Reqid: i + 1}},
	}
}

// bareDump times 5 dumps of the namespace's SAs or policies with nothing
// done to the replies, with the receive buffer the exporter uses (the
// kernel fills each reply datagram up to it), and counts what one read.
func bareDump(t *testing.T, ns *scenario.Netns, typ uint16) ([]time.Duration, int, int) {
	t.Helper()
	var fd int
	if err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_XFRM)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	var times []time.Duration
	var msgs, size int
	for round := range 5 {
		req := make([]byte, unix.NLMSG_HDRLEN)
		binary.NativeEndian.PutUint32(req[0:], unix.NLMSG_HDRLEN)
		binary.NativeEndian.PutUint16(req[4:], typ)
		binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
		binary.NativeEndian.PutUint32(req[8:], uint32(round+1))
		start := time.Now()
		if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			t.Fatal(err)
		}
		msgs, size = 0, 0
		for done := false; !done; {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				t.Fatal(err)
			}
			size += n
			for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
				l := int(binary.NativeEndian.Uint32(b[0:]))
				switch binary.NativeEndian.Uint16(b[4:]) {
				case unix.NLMSG_DONE:
					done = true
				case unix.NLMSG_ERROR:
					t.Fatalf("dump %#x: error reply", typ)
				default:
					msgs++
				}
				if l < unix.NLMSG_HDRLEN || l > len(b) {
					break
				}
				b = b[(l+3)&^3:]
			}
		}
		times = append(times, time.Since(start))
	}
	return times, msgs, size
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func seconds(v float64) time.Duration { return time.Duration(v * float64(time.Second)) }

// cpu is the exporter's user and system time so far (/proc/PID/stat).
func (x *exporter) cpu(t *testing.T) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", x.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name (which may hold spaces): state is
	// field 3, utime 14, stime 15, in clock ticks of 1/100 s.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	utime, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// stop ends the exporter now, so the next one has the VM to itself (its
// cleanup reaps it).
func (x *exporter) stop(t *testing.T) {
	t.Helper()
	if err := x.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", x.cmd.Process.Pid)); err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
	}
}
