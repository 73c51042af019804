package collector

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/xfrmstat"
)

// The xfrm_stat collector: the kernel's XFRM MIB, /proc/net/xfrm_stat, per
// network namespace.
//
// One family with the kernel's counter name as a label, rather than one
// family per counter (node_exporter's node_xfrm_*_packets_total):
//   - a single alert, rate(ipsec_xfrm_stat_errors_total[5m]) > 0, covers every
//     drop reason and names it in its labels; a dashboard stacks them with
//     one query `sum by (counter)`;
//   - every counter is a drop count of the same unit, so summing over the
//     label is meaningful ("XFRM drops of any kind");
//   - counters a newer kernel adds appear as new label values under a name
//     users already query, with no metric name made up from the kernel's;
//   - the label values are the kernel's own names (XfrmInNoStates), which is
//     what `cat /proc/net/xfrm_stat`, the kernel docs and runbooks use.
// What each counter means is in docs/xfrm_stat.md (generated from
// internal/xfrmstat, which knows them), not in a 3 kB help text.

func init() {
	registerCollector("xfrm_stat", true, func(logger *slog.Logger) (Collector, error) {
		w, err := watchedNamespaces.acquire(logger)
		if err != nil {
			return nil, err
		}
		return &xfrmStatCollector{logger: logger, namespaces: namespacesNow(w), read: readXfrmStat,
			release: watchedNamespaces.release}, nil
	})
}

var xfrmStatDesc = prometheus.NewDesc(
	prometheus.BuildFQName(namespace, "xfrm_stat", "errors_total"),
	"Packets the kernel's IPsec (XFRM) layer dropped, by /proc/net/xfrm_stat counter (the kernel's names; counters of newer kernels appear as they come). What each counts: docs/xfrm_stat.md.",
	[]string{"netns", "counter"}, nil,
)

type xfrmStatCollector struct {
	logger     *slog.Logger
	namespaces func() []netnsx.Namespace
	read       func(netnsx.Namespace) ([]xfrmstat.Counter, error)
	release    func() error
}

// Close lets go of the namespace watcher.
func (c *xfrmStatCollector) Close() error {
	if c.release == nil {
		return nil
	}
	return c.release()
}

func readXfrmStat(ns netnsx.Namespace) ([]xfrmstat.Counter, error) {
	data, err := ns.ReadFile(xfrmstat.Path)
	if err != nil {
		return nil, err
	}
	return xfrmstat.Parse(data)
}

// Update reads every namespace's file. A namespace without the file (a
// kernel without CONFIG_XFRM_STATISTICS) is skipped; if no namespace has
// it, the collector has no data. A malformed file fails the scrape.
func (c *xfrmStatCollector) Update(ch chan<- prometheus.Metric) error {
	found := false
	var errs []error
	for _, t := range c.namespaces() {
		counters, err := c.read(t)
		switch {
		case gone(err):
			c.logger.Debug("namespace gone before it was read", "netns", t.Name, "err", err)
			continue
		case errors.Is(err, os.ErrNotExist):
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("netns %q: %w", t.Name, err))
			continue
		}
		found = true
		for _, ctr := range counters {
			ch <- newConstMetric(xfrmStatDesc, prometheus.CounterValue, float64(ctr.Value), t.Name, ctr.Name)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if !found {
		return fmt.Errorf("%s: %w", xfrmstat.Path, ErrNoData)
	}
	return nil
}
