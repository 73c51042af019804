package collector

import (
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// adapter makes a Collector a prometheus.Collector, for testutil and test
// registries; an Update error fails the test.
type adapter struct {
	t testing.TB
	c Collector
}

func adapt(t testing.TB, c Collector) prometheus.Collector { return adapter{t, c} }

func (a adapter) Describe(chan<- *prometheus.Desc) {}
func (a adapter) Collect(ch chan<- prometheus.Metric) {
	if err := a.c.Update(ch); err != nil {
		a.t.Errorf("Update: %v", err)
	}
}

// registryOf is a pedantic registry holding c alone.
func registryOf(t testing.TB, c Collector) *prometheus.Registry {
	r := prometheus.NewPedanticRegistry()
	r.MustRegister(adapt(t, c))
	return r
}

// countFDs counts this process's open file descriptors.
func countFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
