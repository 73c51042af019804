package collector

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var fanoutTestDesc = prometheus.NewDesc("ipsec_test_fanout", "Test metric.", nil, nil)

// A collector that panics is that collector's failure in the scrape: the
// others' metrics are served, the process lives on, and the stack is
// logged once however many scrapes it panics in.
func TestCollectorPanicIsItsFailure(t *testing.T) {
	var buf bytes.Buffer
	e := &Exporter{logger: slog.New(slog.NewTextHandler(&buf, nil)), collectors: map[string]Collector{
		"good": updateFunc(func(ch chan<- prometheus.Metric) error {
			ch <- newConstMetric(fanoutTestDesc, prometheus.GaugeValue, 1)
			return nil
		}),
		"bad": updateFunc(func(ch chan<- prometheus.Metric) error {
			var names []string
			_ = names[len(ch)] // a runtime error (index out of range), as a real bug would be
			return nil
		}),
		"worse": updateFunc(func(ch chan<- prometheus.Metric) error {
			panic("explicit")
		}),
	}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e)
	want := `
# HELP ipsec_scrape_collector_success Whether a collector succeeded (1) or failed (0) in this scrape.
# TYPE ipsec_scrape_collector_success gauge
ipsec_scrape_collector_success{collector="bad"} 0
ipsec_scrape_collector_success{collector="good"} 1
ipsec_scrape_collector_success{collector="worse"} 0
# HELP ipsec_test_fanout Test metric.
# TYPE ipsec_test_fanout gauge
ipsec_test_fanout 1
`
	for range 3 {
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
			"ipsec_scrape_collector_success", "ipsec_test_fanout"); err != nil {
			t.Fatal(err)
		}
	}
	log := buf.String()
	for _, name := range []string{"bad", "worse"} {
		if n := strings.Count(log, `(stack logged once)" collector=`+name+" "); n != 1 {
			t.Errorf("the panic of %s was logged with its stack %d times, want once:\n%s", name, n, log)
		}
	}
	if n := strings.Count(log, `stack="goroutine `); n != 2 {
		t.Errorf("%d stacks logged over three scrapes of two panicking collectors, want 2:\n%s", n, log)
	}
	if !strings.Contains(log, "index out of range") || !strings.Contains(log, "explicit") {
		t.Errorf("the panic values are not logged:\n%s", log)
	}
	if n := strings.Count(log, `msg="collector failed"`); n != 6 {
		t.Errorf("%d failures logged, want 6 (two collectors, three scrapes):\n%s", n, log)
	}
}
