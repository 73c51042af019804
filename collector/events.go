package collector

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipsec-exporter/ipsec_exporter/internal/xfrmnl"
)

// The events collector: lifecycle events the kernel multicasts on the XFRM
// netlink groups (SA added, updated, deleted, soft and hard expiry, acquire,
// NAT-T mapping change, policy changes), counted by a listener per namespace
// that runs between scrapes (internal/xfrmnl.Listener). Each rekey makes a
// new SPI, so these counters are what shows a rekey storm or a hard expiry
// over time. Listeners (collector/listeners.go) start at start-up and, for
// namespaces created later, at the first scrape that sees them.

var eventsRcvBuf = kingpin.Flag("collector.events.socket-buffer",
	"Receive buffer of each namespace's event socket in bytes (0: system default). When it overflows, lost events are recovered from a state re-dump and counted in ipsec_xfrm_event_overruns_total.").
	Default("1048576").Int()

var (
	eventsDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "xfrm", "events_total"),
		"XFRM lifecycle events the kernel announced, by event: sa_added, sa_updated, sa_deleted, sa_soft_expired (rekey due), sa_hard_expired (SA removed by its lifetime), sa_flushed, acquire (traffic needs an SA that does not exist: IKE asked to negotiate), mapping_changed (NAT-T peer address/port changed), policy_added/updated/deleted/soft_expired/hard_expired/flushed, replay_update, report, migrate. Adds and deletes lost in a socket overrun are recovered from a state re-dump.",
		[]string{"netns", "event"}, nil)
	eventOverrunsDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "xfrm", "event_overruns_total"),
		"Times the kernel dropped XFRM notifications because the exporter's socket buffer was full (ENOBUFS). Each is followed by a state re-dump; expiries in the gap are lost.",
		[]string{"netns"}, nil)
	eventResyncsDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "xfrm", "event_resyncs_total"),
		"State re-dumps the event listener made after an overrun or a flush.",
		[]string{"netns"}, nil)
)

func init() {
	registerCollector("events", true, func(logger *slog.Logger) (Collector, error) {
		c := &eventsCollector{logger: logger, targets: netnsTargets, registry: listeners}
		// Listen from start-up, not from the first scrape.
		if _, err := c.sync(); err != nil {
			logger.Warn("starting xfrm event listeners", "err", err)
		}
		return c, nil
	})
}

type eventsCollector struct {
	logger   *slog.Logger
	targets  func() ([]netnsTarget, error)
	registry *listenerRegistry
}

// sync holds a listener for each namespace listed now. It returns the
// listeners and the errors of those that could not start.
func (c *eventsCollector) sync() (map[string]*xfrmnl.Listener, error) {
	targets, err := c.targets()
	if err != nil {
		return nil, err
	}
	held, errs := c.registry.sync("events", targets, c.logger)
	return held, errors.Join(errs...)
}

func (c *eventsCollector) Update(ch chan<- prometheus.Metric) error {
	held, err := c.sync()
	for name, l := range held {
		counts := l.Counts()
		for _, e := range xfrmnl.Events {
			ch <- newConstMetric(eventsDesc, prometheus.CounterValue, float64(counts.Events[e]), name, string(e))
		}
		ch <- newConstMetric(eventOverrunsDesc, prometheus.CounterValue, float64(counts.Overruns), name)
		ch <- newConstMetric(eventResyncsDesc, prometheus.CounterValue, float64(counts.Resyncs), name)
	}
	if err != nil && len(held) == 0 && xfrmAbsent(err) {
		return fmt.Errorf("%w: %w", ErrNoData, err)
	}
	return err
}

// Close lets go of the listeners (each stops when no collector holds it).
func (c *eventsCollector) Close() error {
	c.registry.releaseAll("events")
	return nil
}
