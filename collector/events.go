package collector

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipsec-exporter/ipsec_exporter/internal/xfrmnl"
)

// The events collector: lifecycle events the kernel multicasts on the XFRM
// netlink groups (SA added, updated, deleted, soft and hard expiry, acquire,
// NAT-T mapping change, policy changes), counted by a listener per namespace
// that runs between scrapes (internal/xfrmnl.Listener). Each rekey makes a
// new SPI, so these counters are what shows a rekey storm or a hard expiry
// over time. Listeners start at start-up and, for namespaces created later,
// at the first scrape that sees them; a namespace that is gone has its
// listener closed (the socket would otherwise keep the namespace alive).

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
		c := &eventsCollector{logger: logger, targets: netnsTargets, rcvBuf: *eventsRcvBuf, listeners: map[string]*nsListener{}}
		if _, err := c.sync(); err != nil {
			logger.Warn("starting xfrm event listeners", "err", err)
		}
		return c, nil
	})
}

// nsListener is the listener of one namespace and the path it was opened
// with (a namespace file replaced by another of the same name is another
// namespace; we notice that only through a failing listener, which is rare
// enough).
type nsListener struct {
	path string
	l    *xfrmnl.Listener
}

type eventsCollector struct {
	logger  *slog.Logger
	targets func() ([]netnsTarget, error)
	rcvBuf  int

	mu        sync.Mutex
	listeners map[string]*nsListener // by netns label
}

// sync starts listeners for new namespaces and stops those of vanished
// ones. It returns the errors of listeners that could not start.
func (c *eventsCollector) sync() ([]error, error) {
	targets, err := c.targets()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	present := map[string]bool{}
	var errs []error
	for _, t := range targets {
		present[t.Name] = true
		if _, ok := c.listeners[t.Name]; ok {
			continue
		}
		l, err := xfrmnl.Listen(t.Path, c.rcvBuf, c.logger)
		if err != nil {
			errs = append(errs, fmt.Errorf("netns %q: %w", t.Name, err))
			continue
		}
		c.listeners[t.Name] = &nsListener{path: t.Path, l: l}
	}
	for name, nl := range c.listeners {
		if !present[name] {
			nl.l.Close()
			delete(c.listeners, name)
		}
	}
	return errs, nil
}

func (c *eventsCollector) Update(ch chan<- prometheus.Metric) error {
	errs, err := c.sync()
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, nl := range c.listeners {
		counts := nl.l.Counts()
		for _, e := range xfrmnl.Events {
			ch <- prometheus.MustNewConstMetric(eventsDesc, prometheus.CounterValue, float64(counts.Events[e]), name, string(e))
		}
		ch <- prometheus.MustNewConstMetric(eventOverrunsDesc, prometheus.CounterValue, float64(counts.Overruns), name)
		ch <- prometheus.MustNewConstMetric(eventResyncsDesc, prometheus.CounterValue, float64(counts.Resyncs), name)
	}
	if err := errors.Join(errs...); err != nil && xfrmAbsent(err) {
		return fmt.Errorf("%w: %w", ErrNoData, err)
	}
	return errors.Join(errs...)
}

// Close stops every listener.
func (c *eventsCollector) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, nl := range c.listeners {
		nl.l.Close()
		delete(c.listeners, name)
	}
	return nil
}
