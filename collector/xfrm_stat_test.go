package collector

import (
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx/netnsxtest"
	"github.com/ipsec-exporter/ipsec_exporter/internal/xfrmstat"
)

func fakeStatReader(files map[string]string) func(netnsx.Namespace) ([]xfrmstat.Counter, error) {
	return func(ns netnsx.Namespace) ([]xfrmstat.Counter, error) {
		data, err := os.ReadFile(files[ns.Name])
		if err != nil {
			return nil, err
		}
		return xfrmstat.Parse(data)
	}
}

// TestXfrmStatCollector: every counter of the file, in two namespaces, as
// counters with the kernel's names; a counter this version does not know
// (a newer kernel's) comes through like the others.
func TestXfrmStatCollector(t *testing.T) {
	dir := t.TempDir()
	future := dir + "/future"
	if err := os.WriteFile(future, []byte("XfrmInError 3\nXfrmInNoStates 18446744073709551615\nXfrmInShinyNewError 5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &xfrmStatCollector{logger: slog.New(slog.DiscardHandler), namespaces: fakeNamespaces("", "vpn"),
		read: fakeStatReader(map[string]string{"": "../internal/xfrmstat/testdata/xfrm_stat-6.18", "vpn": future})}
	want := "# HELP ipsec_xfrm_stat_errors_total Packets the kernel's IPsec (XFRM) layer dropped, by /proc/net/xfrm_stat counter (the kernel's names; counters of newer kernels appear as they come). What each counts: docs/xfrm_stat.md.\n" +
		"# TYPE ipsec_xfrm_stat_errors_total counter\n"
	for _, name := range xfrmstat.Known() {
		want += `ipsec_xfrm_stat_errors_total{counter="` + name + `",netns=""} 0` + "\n"
	}
	want += `ipsec_xfrm_stat_errors_total{counter="XfrmInError",netns="vpn"} 3
ipsec_xfrm_stat_errors_total{counter="XfrmInNoStates",netns="vpn"} 1.8446744073709552e+19
ipsec_xfrm_stat_errors_total{counter="XfrmInShinyNewError",netns="vpn"} 5
`
	if err := testutil.CollectAndCompare(adapt(t, c), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// TestXfrmStatCollectorMalformed: a broken file fails the scrape with the
// parser's error; it never yields numbers.
func TestXfrmStatCollectorMalformed(t *testing.T) {
	bad := t.TempDir() + "/bad"
	if err := os.WriteFile(bad, []byte("XfrmInError 1\nXfrmInNoStates -4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &xfrmStatCollector{logger: slog.New(slog.DiscardHandler), namespaces: fakeNamespaces(""), read: fakeStatReader(map[string]string{"": bad})}
	ch := make(chan prometheus.Metric, 100)
	err := c.Update(ch)
	if !errors.Is(err, xfrmstat.ErrMalformed) {
		t.Fatalf("got %v, want ErrMalformed", err)
	}
	if len(ch) != 0 {
		t.Errorf("%d metrics from a malformed file", len(ch))
	}
}

// TestXfrmStatCollectorAbsent: no file anywhere is "no data".
func TestXfrmStatCollectorAbsent(t *testing.T) {
	c := &xfrmStatCollector{logger: slog.New(slog.DiscardHandler), namespaces: fakeNamespaces(""), read: fakeStatReader(map[string]string{"": "/nonexistent"})}
	if err := c.Update(make(chan prometheus.Metric, 1)); !errors.Is(err, ErrNoData) {
		t.Fatalf("got %v, want ErrNoData", err)
	}
}

// TestXfrmStatCollectorNamespaces reads the real file of our namespace and
// of a fresh named one (where every counter is 0) through /proc/thread-self.
func TestXfrmStatCollectorNamespaces(t *testing.T) {
	ns := netnsxtest.New(t, "", "stat")
	if _, err := os.Stat(xfrmstat.Path); err != nil {
		t.Skipf("kernel without %s: %v", xfrmstat.Path, err)
	}
	c := &xfrmStatCollector{logger: slog.New(slog.DiscardHandler), namespaces: func() []netnsx.Namespace { return []netnsx.Namespace{{}, ns} }, read: readXfrmStat}
	ch := make(chan prometheus.Metric, 200)
	if err := c.Update(ch); err != nil {
		t.Fatal(err)
	}
	close(ch)
	perNS := map[string]int{}
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		for _, l := range d.GetLabel() {
			if l.GetName() == "netns" {
				perNS[l.GetValue()]++
			}
		}
	}
	if perNS[""] == 0 || perNS[""] != perNS["stat"] {
		t.Errorf("counters per namespace %v", perNS)
	}
}
