// Package fails declares metric families in ways the docs test's reader
// must refuse, each with an error naming its line;
// TestReadCodeRefusesWhatItCannotFollow lists them.
package fails

import "github.com/prometheus/client_golang/prometheus"

var (
	neverSent = prometheus.NewDesc("fixture_never_sent", "h", nil, nil)
	twoTypes  = prometheus.NewDesc("fixture_two_types", "h", nil, nil)
	labelsRun = prometheus.NewDesc("fixture_computed_labels", "h", computed(), nil)
	fromChan  = make(chan *prometheus.Desc, 1)
)

func computed() []string { return []string{"a"} }

func name() string { return "fixture_computed_name" }

// Update sends them.
func Update(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(twoTypes, prometheus.CounterValue, 1)
	ch <- prometheus.MustNewConstMetric(twoTypes, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(labelsRun, prometheus.GaugeValue, 1, "a")
	ch <- prometheus.MustNewConstMetric(<-fromChan, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name(), "h", nil, nil), prometheus.GaugeValue, 1)
}
