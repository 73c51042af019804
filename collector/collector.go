// Package collector turns what the kernel readers return into Prometheus
// metrics. Each collector lives in its own file and registers itself with a
// name and a default; the name becomes the --[no-]collector.NAME flag.
package collector

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Every metric name is written out in full where its descriptor is built
// (not assembled with prometheus.BuildFQName), so a search for the name a
// user sees finds the code that sends it. docs/metrics.md lists every family
// with its file and kernel source, and says why the middle of a name is the
// kernel subsystem it describes rather than the collector.

var (
	scrapeDurationDesc = prometheus.NewDesc(
		"ipsec_scrape_collector_duration_seconds",
		"Duration of a collector scrape.",
		[]string{"collector"}, nil,
	)
	scrapeSuccessDesc = prometheus.NewDesc(
		"ipsec_scrape_collector_success",
		"Whether a collector succeeded (1) or failed (0) in this scrape.",
		[]string{"collector"}, nil,
	)
)

// ErrNoData tells the fan-out that a collector's source is absent on this
// system. That is not a failure: it is logged at debug level and the
// collector still reports success.
var ErrNoData = errors.New("collector returned no data")

// Collector is what each collector file implements.
type Collector interface {
	// Update sends the collector's metrics, read from the kernel now.
	Update(ch chan<- prometheus.Metric) error
}

// Factory builds a collector. It runs once at start-up; a collector that
// keeps kernel resources (BPF links, netlink sockets) also implements
// io.Closer and is closed on shutdown.
type Factory func(logger *slog.Logger) (Collector, error)

type registration struct {
	factory Factory
	enabled *bool
}

var (
	registryMu    sync.Mutex
	registrations = map[string]registration{}
)

// registerCollector is called from each collector file's init. It adds the
// --[no-]collector.NAME flag with the given default.
func registerCollector(name string, enabledByDefault bool, factory Factory) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registrations[name]; dup {
		panic(fmt.Sprintf("collector %q registered twice", name))
	}
	state := "disabled"
	if enabledByDefault {
		state = "enabled"
	}
	flag := kingpin.Flag("collector."+name, fmt.Sprintf("Enable the %s collector (default: %s).", name, state)).
		Default(fmt.Sprint(enabledByDefault)).Bool()
	registrations[name] = registration{factory: factory, enabled: flag}
}

// Exporter fans a scrape out to the enabled collectors concurrently and
// reports how each one did.
type Exporter struct {
	collectors map[string]Collector
	logger     *slog.Logger

	// panicked holds the names of collectors whose panic was logged with
	// its stack: once is enough to file a bug, a stack per scrape is noise.
	panicked sync.Map
}

// NewExporter builds every collector enabled by its flag, once per process:
// collectors attach BPF programs and open netlink sockets, so they must not
// be built per request. A collector whose factory fails is a start-up error:
// the caller decides whether that is fatal.
func NewExporter(logger *slog.Logger) (*Exporter, error) {
	registryMu.Lock()
	defer registryMu.Unlock()
	e := &Exporter{collectors: map[string]Collector{}, logger: logger}
	setRepairLogger(logger)
	for name, r := range registrations {
		if !*r.enabled {
			continue
		}
		c, err := r.factory(logger.With("collector", name))
		if err != nil {
			_ = e.Close()
			return nil, fmt.Errorf("collector %s: %w", name, err)
		}
		e.collectors[name] = c
	}
	return e, nil
}

// Enabled lists the collectors this exporter runs, sorted.
func (e *Exporter) Enabled() []string {
	names := make([]string, 0, len(e.collectors))
	for name := range e.collectors {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Describe is empty on purpose: the exporter is an unchecked collector, as
// collectors decide their series at scrape time from what the kernel has.
func (e *Exporter) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	var wg sync.WaitGroup
	for name, c := range e.collectors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.run(name, c, ch)
		}()
	}
	wg.Wait()
	ch <- newConstMetric(labelValuesRepairedDesc, prometheus.CounterValue, float64(labelRepairs.Load()))
}

func (e *Exporter) run(name string, c Collector, ch chan<- prometheus.Metric) {
	start := time.Now()
	err := e.update(name, c, ch)
	duration := time.Since(start)
	success := 1.0
	switch {
	case err == nil:
		e.logger.Debug("collector succeeded", "collector", name, "duration_seconds", duration.Seconds())
	case errors.Is(err, ErrNoData):
		e.logger.Debug("collector returned no data", "collector", name, "err", err)
	default:
		success = 0
		e.logger.Error("collector failed", "collector", name, "duration_seconds", duration.Seconds(), "err", err)
	}
	ch <- newConstMetric(scrapeDurationDesc, prometheus.GaugeValue, duration.Seconds(), name)
	ch <- newConstMetric(scrapeSuccessDesc, prometheus.GaugeValue, success, name)
}

// update runs one collector's Update. A panic in it is that collector's
// failure in this scrape (ipsec_scrape_collector_success 0), never the end of
// the process: the other collectors' metrics are still served, and the next
// scrape tries again. Its stack is logged the first time.
func (e *Exporter) update(name string, c Collector, ch chan<- prometheus.Metric) (err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		err = fmt.Errorf("panic: %v", r)
		if _, logged := e.panicked.LoadOrStore(name, true); !logged {
			e.logger.Error("collector panicked; reported as failed in every scrape it panics in (stack logged once)",
				"collector", name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	return c.Update(ch)
}

// Close releases what the collectors hold (BPF links, netlink sockets) and
// returns the first error.
func (e *Exporter) Close() error {
	var first error
	for name, c := range e.collectors {
		if closer, ok := c.(io.Closer); ok {
			if err := closer.Close(); err != nil && first == nil {
				first = fmt.Errorf("closing collector %s: %w", name, err)
			}
		}
	}
	return first
}
