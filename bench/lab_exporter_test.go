package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

const (
	kstateObjects = 10000
	kstateScrapes = 5
	rssScrapes    = 20
)

var allCollectors = []string{"verdict", "wire", "sa", "policy", "events", "xfrm_stat"}

// exporter is the exporter binary running in the lab VM.
type exporter struct {
	addr string
	cmd  *exec.Cmd
}

// startExporter runs the exporter with only the given collectors (all of
// them for nil) and waits until it serves.
func startExporter(t *testing.T, port int, collectors []string, args ...string) *exporter {
	t.Helper()
	bin := scenario.ExporterBin()
	if bin == "" {
		t.Fatal("IPSEC_EXPORTER_BIN not set in the lab VM")
	}
	x := &exporter{addr: fmt.Sprintf("127.0.0.1:%d", port)}
	args = append(args, "--web.listen-address="+x.addr, "--collector.netns.dir=/run/netns")
	if collectors != nil {
		for _, c := range allCollectors {
			on := false
			for _, w := range collectors {
				on = on || w == c
			}
			if !on {
				args = append(args, "--no-collector."+c)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var logs bytes.Buffer
	x.cmd = exec.CommandContext(ctx, bin, args...)
	x.cmd.Stdout, x.cmd.Stderr = &logs, &logs
	if err := x.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = x.cmd.Wait()
		if t.Failed() {
			t.Logf("exporter log:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(90 * time.Second) // attaching fentry programs takes seconds under emulation
	for {
		if c, err := net.Dial("tcp", x.addr); err == nil {
			c.Close()
			return x
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporter not serving after 90s:\n%s", logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// scrapeResult is one /metrics scrape: its wall time and the samples.
type scrapeResult struct {
	wall    time.Duration
	samples map[string]float64 // "name{labels}" -> value, as exposed
	series  int
}

func (x *exporter) scrape(t *testing.T) scrapeResult {
	t.Helper()
	start := time.Now()
	resp, err := http.Get("http://" + x.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r := scrapeResult{wall: time.Since(start), samples: map[string]float64{}}
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %v %s", err, resp.Status)
	}
	s := bufio.NewScanner(bytes.NewReader(body))
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		r.samples[line[:i]] = v
		r.series++
	}
	return r
}

// status reads a "VmRSS:   1234 kB" field of /proc/PID/status in bytes.
func (x *exporter) status(t *testing.T, field string) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", x.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field+":" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/PID/status", field)
	return 0
}

// TestLabBenchKernelState fills a namespace with kstateObjects SAs and as
// many policies, then scrapes an exporter running only the sa collector
// (with its default per-SA cap, and without a cap) or only the policy
// collector, and prints per scrape the collector's own duration
// (ipsec_scrape_collector_duration_seconds), the whole scrape's wall time,
// and what the Go runtime allocated between two scrapes (the scrape plus
// the encoding of the previous one's runtime metrics).
func TestLabBenchKernelState(t *testing.T) {
	requireBench(t)
	ns := scenario.NewNetns(t, "k")
	start := time.Now()
	for i := range kstateObjects {
		src := []byte{10, 80, byte(i >> 8), byte(i)}
		dst := []byte{10, 81, byte(i >> 8), byte(i)}
		s := &netlink.XfrmState{
			Src: src, Dst: dst, Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL,
			Spi: 0x10000 + i, Reqid: i + 1, ReplayWindow: 32,
			Aead: &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: bytes.Repeat([]byte{1}, 20), ICVLen: 128},
		}
		if err := ns.NL.XfrmStateAdd(s); err != nil {
			t.Fatalf("SA %d: %v", i, err)
		}
		pol := &netlink.XfrmPolicy{
			Src: &net.IPNet{IP: []byte{10, 90, byte(i >> 8), byte(i)}, Mask: net.CIDRMask(32, 32)},
			Dst: &net.IPNet{IP: []byte{10, 91, byte(i >> 8), byte(i)}, Mask: net.CIDRMask(32, 32)},
			Dir: netlink.XFRM_DIR_OUT,
			Tmpls: []netlink.XfrmPolicyTmpl{{Src: src, Dst: dst, Proto: netlink.XFRM_PROTO_ESP,
				Mode: netlink.XFRM_MODE_TUNNEL, Reqid: i + 1}},
		}
		if err := ns.NL.XfrmPolicyAdd(pol); err != nil {
			t.Fatalf("policy %d: %v", i, err)
		}
	}
	t.Cleanup(func() {
		_ = ns.NL.XfrmStateFlush(0)
		_ = ns.NL.XfrmPolicyFlush()
	})
	t.Logf("%d SAs and %d policies added in %.1fs", kstateObjects, kstateObjects, time.Since(start).Seconds())

	configs := []struct {
		name      string
		collector string
		args      []string
	}{
		{"sa", "sa", nil},
		{"sa_uncapped", "sa", []string{"--collector.sa.max-series=0"}},
		{"policy", "policy", nil},
		{"policy_uncapped", "policy", []string{"--collector.policy.max-series=0"}},
	}
	for i, c := range configs {
		x := startExporter(t, 10880+i, []string{c.collector},
			append([]string{"--collector.netns.name=" + ns.Name}, c.args...)...)
		prev := x.scrape(t)
		for round := 1; round <= kstateScrapes; round++ {
			r := x.scrape(t)
			Emit(Record{Kind: "kstate", Kernel: scenario.Kernel(), Collector: c.name, Objects: kstateObjects,
				Round: round, Series: r.series,
				Seconds:     r.samples[`ipsec_scrape_collector_duration_seconds{collector="`+c.collector+`"}`],
				WallSeconds: r.wall.Seconds(),
				Mallocs:     uint64(r.samples["go_memstats_mallocs_total"] - prev.samples["go_memstats_mallocs_total"]),
				AllocBytes:  uint64(r.samples["go_memstats_alloc_bytes_total"] - prev.samples["go_memstats_alloc_bytes_total"]),
			})
			prev = r
		}
		Emit(Record{Kind: "rss", Kernel: scenario.Kernel(), Variant: c.name, Series: prev.series,
			RSSBytes: x.status(t, "VmRSS"), HWMBytes: x.status(t, "VmHWM")})
		t.Logf("%s: %d series, collector %.3fs, scrape %.3fs, RSS %d MiB", c.name, prev.series,
			prev.samples[`ipsec_scrape_collector_duration_seconds{collector="`+c.collector+`"}`],
			prev.wall.Seconds(), x.status(t, "VmRSS")>>20)
	}
}

// TestLabBenchRSS runs the exporter with every default collector next to a
// pair of namespaces carrying ESP traffic, scrapes it rssScrapes times and
// prints its resident memory (VmRSS) and peak (VmHWM) afterwards.
func TestLabBenchRSS(t *testing.T) {
	requireBench(t)
	p := scenario.NewPair(t)
	e := p.ESP(t, scenario.ESPOptions{})
	x := startExporter(t, 10879, nil)
	var last scrapeResult
	for range rssScrapes {
		scenario.BulkTCP(t, p.A.Netns, p.B.Netns, e.BAddr, 64<<10)
		last = x.scrape(t)
	}
	time.Sleep(2 * time.Second) // idle
	rss, hwm := x.status(t, "VmRSS"), x.status(t, "VmHWM")
	Emit(Record{Kind: "rss", Kernel: scenario.Kernel(), Variant: "default_collectors", Series: last.series,
		RSSBytes: rss, HWMBytes: hwm})
	t.Logf("after %d scrapes (%d series): VmRSS %.1f MiB, VmHWM %.1f MiB", rssScrapes, last.series,
		float64(rss)/(1<<20), float64(hwm)/(1<<20))
}
