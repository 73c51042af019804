package collector

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx/netnsxtest"
	"github.com/ipsec-exporter/ipsec_exporter/internal/wire"
)

// stateCollectorNames are the collectors that read every watched namespace.
var stateCollectorNames = []string{"netns", "sa", "policy", "events", "xfrm_stat"}

// exporterOver builds the namespace-reading collectors as the exporter does
// (their factories, with the shared watcher and listeners) over the
// namespaces in dir, behind the exporter's fan-out.
func exporterOver(t testing.TB, dir string, logger *slog.Logger) *Exporter {
	t.Helper()
	savedDir, savedNames := *netnsDir, *netnsNames
	*netnsDir, *netnsNames = dir, nil
	t.Cleanup(func() { *netnsDir, *netnsNames = savedDir, savedNames })
	e := &Exporter{collectors: map[string]Collector{}, logger: logger}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Error(err)
		}
	})
	for _, name := range stateCollectorNames {
		c, err := registrations[name].factory(logger.With("collector", name))
		if err != nil {
			t.Fatalf("collector %s: %v", name, err)
		}
		e.collectors[name] = c
	}
	return e
}

// scrapeExporter gathers one scrape and returns it with the collectors that
// failed.
func scrapeExporter(t testing.TB, e *Exporter) ([]*dto.MetricFamily, []string) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	for _, mf := range mfs {
		if mf.GetName() != "ipsec_scrape_collector_success" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetGauge().GetValue() != 1 {
				failed = append(failed, m.GetLabel()[0].GetValue())
			}
		}
	}
	return mfs, failed
}

// sampleOf finds one sample of a family by a label's value.
func sampleOf(mfs []*dto.MetricFamily, name, label, value string) (float64, bool) {
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					if m.Gauge != nil {
						return m.GetGauge().GetValue(), true
					}
					return m.GetCounter().GetValue(), true
				}
			}
			if label == "" && len(m.GetLabel()) == 0 {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

// TestNetnsChurn: namespaces created and deleted while the exporter scrapes
// (pods coming and going) never fail a collector: one listed but not
// mounted yet, or gone before it is read, is no failure (issue 14: 12 of 50
// scrapes had a failed collector).
func TestNetnsChurn(t *testing.T) {
	dir := t.TempDir()
	netnsxtest.New(t, dir, "stays")
	var log syncBuffer
	e := exporterOver(t, dir, slog.New(slog.NewTextHandler(&log, nil)))
	const churned, scrapes = 200, 50
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var churnErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < churned; i++ {
			path := filepath.Join(dir, fmt.Sprintf("pod%03d", i))
			if err := netnsxtest.Add(path); err != nil {
				churnErr = err
				return
			}
			if i >= 5 { // a few alive at any time
				if err := netnsxtest.Delete(filepath.Join(dir, fmt.Sprintf("pod%03d", i-5))); err != nil {
					churnErr = err
					return
				}
			}
		}
		<-stop
	}()
	failedScrapes := 0
	for range scrapes {
		if _, failed := scrapeExporter(t, e); len(failed) > 0 {
			failedScrapes++
			t.Logf("failed collectors: %v", failed)
		}
	}
	close(stop)
	wg.Wait()
	for i := churned - 5; i < churned; i++ {
		_ = netnsxtest.Delete(filepath.Join(dir, fmt.Sprintf("pod%03d", i)))
	}
	if churnErr != nil {
		t.Fatal(churnErr)
	}
	if failedScrapes > 0 {
		t.Errorf("%d of %d scrapes had a failed collector while %d namespaces came and went; log:\n%s", failedScrapes, scrapes, churned, log.String())
	}
	// Some lived and died between two rescans and were never seen.
	mfs, _ := scrapeExporter(t, e)
	appeared, _ := sampleOf(mfs, "ipsec_netns_changes_total", "change", "appeared")
	vanished, _ := sampleOf(mfs, "ipsec_netns_changes_total", "change", "vanished")
	if appeared == 0 || appeared > churned || vanished != appeared {
		t.Errorf("ipsec_netns_changes_total appeared %v, vanished %v, with %d namespaces created and deleted", appeared, vanished, churned)
	}
	t.Logf("%d scrapes, %d namespaces created and deleted: %v seen to appear", scrapes, churned, appeared)
}

// syncBuffer is a log that goroutines may write at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestNetnsNotNamespaces: what CNI plugins, containerd and accidents leave in
// the namespace directory (empty and plain files, a FIFO, a directory, a
// link to nothing) is skipped and counted, never opened: a FIFO there does
// not block start-up or a scrape, and no collector fails (issue 13).
func TestNetnsNotNamespaces(t *testing.T) {
	dir := t.TempDir()
	ns := netnsxtest.New(t, dir, "real")
	_, sel, _ := net.ParseCIDR("10.7.0.0/16")
	if err := netnsxtest.Handle(t, ns).XfrmPolicyAdd(&netlink.XfrmPolicy{Src: sel, Dst: sel, Dir: netlink.XFRM_DIR_IN}); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"empty": "", "cni-state": `{"cniVersion":"1.0.0"}`} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "nothing"), filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var e *Exporter
	go func() {
		defer close(done)
		e = exporterOver(t, dir, slog.New(slog.DiscardHandler))
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("start-up blocks on the namespace directory")
	}
	// One more FIFO at run time.
	if err := unix.Mkfifo(filepath.Join(dir, "fifo2"), 0o644); err != nil {
		t.Fatal(err)
	}
	scraped := make(chan struct{})
	var mfs []*dto.MetricFamily
	var failed []string
	go func() {
		defer close(scraped)
		mfs, failed = scrapeExporter(t, e)
	}()
	select {
	case <-scraped:
	case <-time.After(10 * time.Second):
		t.Fatal("a scrape blocks on a FIFO in the namespace directory")
	}
	if len(failed) > 0 {
		t.Errorf("collectors failed: %v", failed)
	}
	if v, _ := sampleOf(mfs, "ipsec_netns_skipped", "reason", "not_namespace"); v != 6 {
		t.Errorf("ipsec_netns_skipped{reason=not_namespace} %v, want 6", v)
	}
	if v, ok := sampleOf(mfs, "ipsec_policies", "netns", "real"); !ok {
		t.Errorf("the real namespace is not read (%v)", v)
	}
}

// TestNetnsNoFDLeak scrapes the namespace-reading collectors many times over
// our namespace and a named one, and checks that the number of open file
// descriptors stays put (each scrape opens netlink sockets and namespace
// files; the events listeners keep one socket per namespace).
func TestNetnsNoFDLeak(t *testing.T) {
	dir := t.TempDir()
	ns := netnsxtest.New(t, dir, "fd")
	_, sel, _ := net.ParseCIDR("10.7.0.0/16")
	if err := netnsxtest.Handle(t, ns).XfrmPolicyAdd(&netlink.XfrmPolicy{Src: sel, Dst: sel, Dir: netlink.XFRM_DIR_IN}); err != nil {
		t.Fatal(err)
	}
	e := exporterOver(t, dir, slog.New(slog.DiscardHandler))
	scrapeExporter(t, e)
	before := countFDs(t)
	for range 200 {
		scrapeExporter(t, e)
	}
	// A leak grows with the scrapes (200 or more fds); other tests of the
	// package running in parallel open and close a few of their own, so the
	// count may move a little either way without a leak.
	const slack = 10
	if after := countFDs(t); after > before+slack {
		t.Errorf("open fds %d before 200 scrapes, %d after: a leak", before, after)
	}
}

// TestNetnsWithoutSysAdmin runs the namespace-reading collectors in a child
// process with the documented capabilities (CAP_BPF, CAP_PERFMON,
// CAP_NET_ADMIN as uid 65534): a named namespace it may not enter is logged
// once, counted in ipsec_netns_skipped{reason="permission"} and skipped,
// and no collector fails, so the default --collector.netns.dir works under
// them (issue 17).
func TestNetnsWithoutSysAdmin(t *testing.T) {
	if dir := os.Getenv("IPSEC_NETNS_CHILD_DIR"); dir != "" {
		netnsChild(t, dir)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create namespaces and drop capabilities")
	}
	// A directory the child (uid 65534) can list.
	dir, err := os.MkdirTemp("", "netns-caps")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	netnsxtest.New(t, dir, "a1")
	netnsxtest.New(t, dir, "a2")
	// The test binary, where the child may run it.
	bin := filepath.Join(dir, "collector.test")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestNetnsWithoutSysAdmin$", "-test.v")
	cmd.Env = append(os.Environ(), "IPSEC_NETNS_CHILD_DIR="+dir)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: 65534, Gid: 65534},
		AmbientCaps: []uintptr{unix.CAP_BPF, unix.CAP_PERFMON, unix.CAP_NET_ADMIN},
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
}

// netnsChild is the child side of TestNetnsWithoutSysAdmin.
func netnsChild(t *testing.T, dir string) {
	var log bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e := exporterOver(t, dir, logger)
	var mfs []*dto.MetricFamily
	for range 3 {
		var failed []string
		mfs, failed = scrapeExporter(t, e)
		if len(failed) > 0 {
			t.Errorf("collectors failed without CAP_SYS_ADMIN: %v\nlog:\n%s", failed, log.String())
		}
	}
	if v, _ := sampleOf(mfs, "ipsec_netns_skipped", "reason", "permission"); v != 2 {
		t.Errorf("ipsec_netns_skipped{reason=permission} %v, want 2", v)
	}
	if v, _ := sampleOf(mfs, "ipsec_netns_watched", "", ""); v != 1 {
		t.Errorf("ipsec_netns_watched %v, want 1 (the own namespace)", v)
	}
	if _, ok := sampleOf(mfs, "ipsec_policies", "netns", ""); !ok {
		t.Error("the own namespace is not read")
	}
	if n := strings.Count(log.String(), "CAP_SYS_ADMIN"); n != 1 {
		t.Errorf("%d log lines about CAP_SYS_ADMIN over 3 scrapes, want 1:\n%s", n, log.String())
	}
	t.Logf("log:\n%s", log.String())
}

// TestStateCollectorFlags: the kernel-state collectors' flags are checked
// before any collector starts, with a message naming the flag and the bound
// (issue 13: --collector.sa.max-series=-5 silently meant no limit).
func TestStateCollectorFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Flags are not parsed here: give the other collectors' flags whose
	// zero value is out of bounds their defaults.
	savedPeerMap := *wirePeerMapSize
	*wirePeerMapSize = wire.DefaultPeerMapSize
	defer func() { *wirePeerMapSize = savedPeerMap }()
	for _, c := range []struct {
		set  func()
		want string // "" for no error
	}{
		{func() {}, ""},
		{func() { *saMaxSeries = -5 }, "--collector.sa.max-series: must be 0 (no limit) or between 1 and 1000000, got -5"},
		{func() { *saMaxSeries = 2_000_000 }, "--collector.sa.max-series: must be 0 (no limit) or between 1 and 1000000, got 2000000"},
		{func() { *saMaxSeries = 0 }, ""},
		{func() { *policyMaxSeries = -1 }, "--collector.policy.max-series: must be 0 (no limit) or between 1 and 1000000, got -1"},
		{func() { *eventsRcvBuf = 100 }, "--collector.events.socket-buffer: must be 0 (the system default) or between 65536 and 1073741824 bytes, got 100"},
		{func() { *eventsRcvBuf = 0 }, ""},
		{func() { *netnsDir = "run/netns" }, `--collector.netns.dir: must be an absolute directory, or empty for the exporter's own namespace only, got "run/netns"`},
		{func() { *netnsDir = file }, "--collector.netns.dir: " + fmt.Sprintf("%q", file) + " is not a directory"},
		{func() { *netnsDir = "/nonexistent/yet" }, ""},
		{func() { *netnsNames = []string{"a/b"} }, `--collector.netns.name: must be a file name in --collector.netns.dir, got "a/b"`},
		{func() { *netnsDir, *netnsNames = "", []string{"vpn"} }, "--collector.netns.name: needs --collector.netns.dir"},
	} {
		saved := []any{*saMaxSeries, *policyMaxSeries, *eventsRcvBuf, *netnsDir, *netnsNames}
		c.set()
		err := CheckFlags()
		*saMaxSeries, *policyMaxSeries, *eventsRcvBuf, *netnsDir, *netnsNames = saved[0].(int), saved[1].(int), saved[2].(int), saved[3].(string), saved[4].([]string)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("unexpected error: %v", err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("error %v, want one containing %q", err, c.want)
		}
	}
}
