package collector

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

var repairTestDesc = prometheus.NewDesc("ipsec_test_repair", "Test metric.", []string{"interface", "netns"}, nil)

// metricLabels writes m and returns its label values by name.
func metricLabels(t *testing.T, m prometheus.Metric) map[string]string {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatalf("Write: %v", err)
	}
	labels := map[string]string{}
	for _, l := range out.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	return labels
}

func TestNewConstMetricRepairsInvalidUTF8(t *testing.T) {
	cases := []struct{ in, want string }{
		{"ve\xff", `ve\xff`},
		{"bad\xffname", `bad\xffname`},
		{"\xc3", `\xc3`},                 // a truncated two-byte sequence
		{"caf\xc3\xa9\xe9", `café\xe9`},  // valid é kept, a Latin-1 é escaped
		{"\xed\xa0\x80", `\xed\xa0\x80`}, // a UTF-16 surrogate is not UTF-8
		{"eth0", "eth0"},
		{"", ""},
		{"ünïcode ✓", "ünïcode ✓"},
	}
	for _, c := range cases {
		before := labelRepairs.Load()
		labels := []string{c.in, "ns"}
		m := newConstMetric(repairTestDesc, prometheus.GaugeValue, 1, labels...)
		got := metricLabels(t, m)
		if got["interface"] != c.want || got["netns"] != "ns" {
			t.Errorf("%q: labels %q, want interface=%q netns=ns", c.in, got, c.want)
		}
		wantRepairs := uint64(0)
		if c.in != c.want {
			wantRepairs = 1
		}
		if n := labelRepairs.Load() - before; n != wantRepairs {
			t.Errorf("%q: %d repairs counted, want %d", c.in, n, wantRepairs)
		}
		if labels[0] != c.in {
			t.Errorf("%q: the caller's label slice was changed to %q", c.in, labels[0])
		}
	}
	// Two values that differ only in their invalid bytes stay two series.
	a := metricLabels(t, newConstMetric(repairTestDesc, prometheus.GaugeValue, 1, "ve\xff", ""))
	b := metricLabels(t, newConstMetric(repairTestDesc, prometheus.GaugeValue, 1, "ve\xfe", ""))
	if a["interface"] == b["interface"] {
		t.Errorf("ve\\xff and ve\\xfe both became %q", a["interface"])
	}
}

// The wrong number of label values is a caller's bug: it fails that series
// in the registry's gather, never the process.
func TestNewConstMetricWrongLabelCount(t *testing.T) {
	m := newConstMetric(repairTestDesc, prometheus.GaugeValue, 1, "only-one")
	if err := m.Write(&dto.Metric{}); err == nil {
		t.Fatal("a metric with one of two label values wrote without error")
	}
}

// Each distinct repaired value is logged once, and the number logged is
// bounded whatever a hostile neighbour names its interfaces.
func TestRepairLogBounded(t *testing.T) {
	var buf bytes.Buffer
	setRepairLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	t.Cleanup(func() { setRepairLogger(slog.New(slog.DiscardHandler)) })
	repairLog.Lock()
	repairLog.seen = map[string]struct{}{}
	repairLog.Unlock()
	for range 3 {
		newConstMetric(repairTestDesc, prometheus.GaugeValue, 1, "once\xff", "")
	}
	if n := strings.Count(buf.String(), `value=once\xff`); n != 1 {
		t.Errorf("the same repaired value was logged %d times, want 1:\n%s", n, buf.String())
	}
	for i := range 3 * maxLoggedRepairs {
		newConstMetric(repairTestDesc, prometheus.GaugeValue, 1, strings.Repeat("x", i)+"\xff", "")
	}
	if n := strings.Count(buf.String(), "not valid UTF-8"); n != maxLoggedRepairs {
		t.Errorf("%d repair lines logged, want the bound %d", n, maxLoggedRepairs)
	}
}

// Through a registry, as a scrape sees it: the exposition is valid and
// carries the repaired value and the repair count.
func TestExporterExportsRepairs(t *testing.T) {
	e := &Exporter{logger: slog.New(slog.DiscardHandler), collectors: map[string]Collector{
		"names": updateFunc(func(ch chan<- prometheus.Metric) error {
			ch <- newConstMetric(repairTestDesc, prometheus.GaugeValue, 1, "ve\xff", "bad\xffname")
			return nil
		}),
	}}
	before := labelRepairs.Load()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e)
	if n, err := testutil.GatherAndCount(reg, "ipsec_test_repair"); err != nil || n != 1 {
		t.Fatalf("gather: %d series, %v", n, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "ipsec_test_repair":
			l := mf.GetMetric()[0].GetLabel()
			if l[0].GetValue() != `ve\xff` || l[1].GetValue() != `bad\xffname` {
				t.Errorf("labels %v", l)
			}
		case "ipsec_scrape_label_values_repaired_total":
			// Two scrapes (count, then gather) of two values each.
			if got, want := mf.GetMetric()[0].GetCounter().GetValue(), float64(before+4); got != want {
				t.Errorf("ipsec_scrape_label_values_repaired_total %v, want %v", got, want)
			}
		}
	}
}

// updateFunc makes a Collector of a function.
type updateFunc func(ch chan<- prometheus.Metric) error

func (f updateFunc) Update(ch chan<- prometheus.Metric) error { return f(ch) }
