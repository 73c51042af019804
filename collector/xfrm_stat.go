package collector

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

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
// The help text carries each counter's kernel meaning.

func init() {
	registerCollector("xfrm_stat", true, func(logger *slog.Logger) (Collector, error) {
		return &xfrmStatCollector{logger: logger, targets: netnsTargets, read: readXfrmStat}, nil
	})
}

var xfrmStatDesc = prometheus.NewDesc(
	prometheus.BuildFQName(namespace, "xfrm_stat", "errors_total"),
	xfrmStatHelp(),
	[]string{"netns", "counter"}, nil,
)

// xfrmStatHelp lists the meaning of every counter this version knows.
func xfrmStatHelp() string {
	var b strings.Builder
	b.WriteString("Packets the kernel's IPsec (XFRM) layer dropped, by /proc/net/xfrm_stat counter (the kernel's name; counters of newer kernels appear as they come). Meanings:")
	for _, name := range xfrmstat.Known() {
		m, _ := xfrmstat.Meaning(name)
		fmt.Fprintf(&b, " %s: %s", name, m)
	}
	return b.String()
}

type xfrmStatCollector struct {
	logger  *slog.Logger
	targets func() ([]netnsTarget, error)
	read    func(netnsTarget) ([]xfrmstat.Counter, error)
}

func readXfrmStat(t netnsTarget) ([]xfrmstat.Counter, error) {
	data, err := readInNetns(t, xfrmstat.Path)
	if err != nil {
		return nil, err
	}
	return xfrmstat.Parse(data)
}

// Update reads every namespace's file. A namespace without the file (a
// kernel without CONFIG_XFRM_STATISTICS) is skipped; if no namespace has
// it, the collector has no data. A malformed file fails the scrape.
func (c *xfrmStatCollector) Update(ch chan<- prometheus.Metric) error {
	targets, err := c.targets()
	if err != nil {
		return err
	}
	found := false
	var errs []error
	for _, t := range targets {
		counters, err := c.read(t)
		switch {
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
