package collector

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/xfrmnl"
)

// The events collector: lifecycle events the kernel multicasts on the XFRM
// netlink groups (SA added, updated, deleted, soft and hard expiry, acquire,
// NAT-T mapping change, policy changes), counted by a listener per namespace
// that runs between scrapes (internal/xfrmnl.Listener, one per namespace for
// the whole exporter: collector/netns.go). Each rekey makes a new SPI, so
// these counters are what shows a rekey storm or a hard expiry over time.
//
// A listener starts the moment the namespace watcher sees its namespace, so
// a namespace's events count from when it appears, not from the first
// scrape. The counters are per namespace name: when a namespace goes, its
// listener's last counts are kept under its name (and a namespace created
// again under that name counts on from them) until the name has been gone
// for netnsRetention.

var eventsRcvBuf = kingpin.Flag("collector.events.socket-buffer",
	"Receive buffer of each namespace's event socket in bytes (0: system default). When it overflows, lost events are recovered from a state re-dump and counted in ipsec_xfrm_event_overruns_total.").
	Default("1048576").Int()

// netnsRetention is how long the counts of a namespace name that is gone
// are still reported.
const netnsRetention = 15 * time.Minute

var (
	eventsDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "xfrm", "events_total"),
		"XFRM lifecycle events the kernel announced, by event: sa_added, sa_updated, sa_deleted, sa_soft_expired (rekey due), sa_hard_expired (SA removed by its lifetime), sa_flushed, acquire (traffic needs an SA that does not exist: IKE asked to negotiate), mapping_changed (NAT-T peer address/port changed), policy_added/updated/deleted/soft_expired/hard_expired/flushed, replay_update, report, migrate. Adds and deletes lost in a socket overrun are recovered from a state re-dump.",
		[]string{"netns", "event"}, nil)
	eventOverrunsDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "xfrm", "event_overruns_total"),
		"Times the kernel dropped XFRM notifications because the exporter's socket buffer was full (ENOBUFS). Each is followed by a state re-dump; expiries in the gap are lost.",
		[]string{"netns"}, nil)
	eventLostDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "xfrm", "events_lost_total"),
		"XFRM notifications the kernel dropped because the exporter's socket buffer was full (the socket's drop count). The SA and policy adds and deletes among them are recovered from the state re-dump that follows, except an SA added and removed again within the gap; the other events (expiries, acquires, updates) are missing from ipsec_xfrm_events_total. 0 means the event counts are exact.",
		[]string{"netns"}, nil)
	eventResyncsDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "xfrm", "event_resyncs_total"),
		"State re-dumps the event listener made after an overrun.",
		[]string{"netns"}, nil)
)

// The event socket's buffer: below 64 KiB a burst of a few dozen SAs
// overruns it; above 1 GiB it is no buffer but a memory reservation.
const minEventsRcvBuf, maxEventsRcvBuf = 64 << 10, 1 << 30

func init() {
	RegisterFlagCheck("collector.events.socket-buffer", func() error {
		if v := *eventsRcvBuf; v != 0 && (v < minEventsRcvBuf || v > maxEventsRcvBuf) {
			return fmt.Errorf("must be 0 (the system default) or between %d and %d bytes, got %d", minEventsRcvBuf, maxEventsRcvBuf, v)
		}
		return nil
	})
	registerCollector("events", true, func(logger *slog.Logger) (Collector, error) {
		ls, err := eventListeners.acquire(logger)
		if err != nil {
			return nil, err
		}
		return &eventsCollector{logger: logger, namespaces: namespacesNow(ls.watcher), listeners: ls.Listeners,
			release: eventListeners.release}, nil
	})
}

type eventsCollector struct {
	logger     *slog.Logger
	namespaces func() []netnsx.Namespace
	listeners  *xfrmnl.Listeners
	release    func() error

	mu      sync.Mutex // scrapes may overlap
	retired map[string]*retiredCounts
	now     func() time.Time
}

// retiredCounts are the counts of the namespaces that had a name before.
type retiredCounts struct {
	counts   xfrmnl.Counts
	lastSeen time.Time
}

func (c *eventsCollector) Update(ch chan<- prometheus.Metric) error {
	byName := map[string]*xfrmnl.Counts{}
	var errs []error
	for _, ns := range c.namespaces() {
		l, err := c.listeners.Get(ns.ID)
		if err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("netns %q: %w", ns.Name, err))
		}
		if l == nil {
			continue // gone, or still starting
		}
		sum := &xfrmnl.Counts{Events: map[xfrmnl.Event]uint64{}}
		addCounts(sum, l.Counts())
		byName[ns.Name] = sum
	}
	c.addRetired(byName)
	for name, counts := range byName {
		for _, e := range xfrmnl.Events {
			ch <- newConstMetric(eventsDesc, prometheus.CounterValue, float64(counts.Events[e]), name, string(e))
		}
		ch <- newConstMetric(eventOverrunsDesc, prometheus.CounterValue, float64(counts.Overruns), name)
		ch <- newConstMetric(eventLostDesc, prometheus.CounterValue, float64(counts.Lost), name)
		ch <- newConstMetric(eventResyncsDesc, prometheus.CounterValue, float64(counts.Resyncs), name)
	}
	err := errors.Join(errs...)
	if err != nil && len(byName) == 0 && xfrmAbsent(err) {
		return fmt.Errorf("%w: %w", ErrNoData, err)
	}
	return err
}

// addRetired keeps the final counts of namespaces that went under their
// names and adds them to the live ones of the same name; a name gone for
// netnsRetention is dropped (its series end).
func (c *eventsCollector) addRetired(byName map[string]*xfrmnl.Counts) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.retired == nil {
		c.retired = map[string]*retiredCounts{}
	}
	now := time.Now()
	if c.now != nil {
		now = c.now()
	}
	for _, e := range c.listeners.TakeEnded() {
		r := c.retired[e.Namespace.Name]
		if r == nil {
			r = &retiredCounts{counts: xfrmnl.Counts{Events: map[xfrmnl.Event]uint64{}}}
			c.retired[e.Namespace.Name] = r
		}
		addCounts(&r.counts, e.Counts)
		r.lastSeen = now
	}
	for name, r := range c.retired {
		live := byName[name]
		switch {
		case live != nil:
			r.lastSeen = now
		case now.Sub(r.lastSeen) > netnsRetention:
			delete(c.retired, name)
			continue
		default:
			live = &xfrmnl.Counts{Events: map[xfrmnl.Event]uint64{}}
			byName[name] = live
		}
		addCounts(live, r.counts)
	}
}

func addCounts(to *xfrmnl.Counts, from xfrmnl.Counts) {
	for e, n := range from.Events {
		to.Events[e] += n
	}
	to.Overruns += from.Overruns
	to.Lost += from.Lost
	to.Resyncs += from.Resyncs
}

// Close lets go of the listeners and the watcher.
func (c *eventsCollector) Close() error {
	if c.release == nil {
		return nil
	}
	return c.release()
}
