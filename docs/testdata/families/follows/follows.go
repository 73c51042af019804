// Package follows declares metric families in every way the docs test's
// reader follows; TestReadCodeFollowsDescriptors lists what it must find.
package follows

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

const subsystem = "fixture"

var (
	baseLabels = []string{"netns", "peer"}

	literal    = prometheus.NewDesc("fixture_literal_total", "h", nil, nil)
	assembled  = prometheus.NewDesc(prometheus.BuildFQName("fixture", subsystem, "assembled"), "h", baseLabels, nil)
	appended   = prometheus.NewDesc("fixture_appended", "h", append(slices.Clone(baseLabels), "extra"), prometheus.Labels{"fixed": "1"})
	viaClosure = prometheus.NewDesc("fixture_closure_total", "h", nil, nil)
	viaMethod  = prometheus.NewDesc("fixture_method", "h", nil, nil)
	plain      = prometheus.NewDesc("fixture_returned_total", "h", []string{"a"}, nil)
	named      = prometheus.NewDesc("fixture_returned_total", "h", []string{"a", "name"}, nil)
	inTable    = prometheus.NewDesc("fixture_table", "h", nil, nil)
	inSlice    = prometheus.NewDesc("fixture_slice_total", "h", nil, nil)
	inMap      = prometheus.NewDesc("fixture_map", "h", nil, nil)
)

// send is a wrapper like collector.newConstMetric: its ValueType is not a
// constant, so its callers are the sends.
func send(ch chan<- prometheus.Metric, d *prometheus.Desc, t prometheus.ValueType, v float64, l ...string) {
	ch <- prometheus.MustNewConstMetric(d, t, v, l...)
}

type sender struct{ ch chan<- prometheus.Metric }

func (s sender) gauge(d *prometheus.Desc) { send(s.ch, d, prometheus.GaugeValue, 1) }

func descs(withName bool) (*prometheus.Desc, int) {
	if withName {
		return named, 1
	}
	return plain, 0
}

type row struct {
	desc *prometheus.Desc
	v    float64
}

// Update sends every descriptor above.
func Update(ch chan<- prometheus.Metric, withName bool) {
	send(ch, literal, prometheus.CounterValue, 1)
	send(ch, assembled, prometheus.GaugeValue, 1, "a", "b")
	send(ch, appended, prometheus.GaugeValue, 1, "a", "b", "c")
	counter := func(d *prometheus.Desc) { send(ch, d, prometheus.CounterValue, 1) }
	counter(viaClosure)
	sender{ch}.gauge(viaMethod)
	d, _ := descs(withName)
	send(ch, d, prometheus.CounterValue, 1, "a")
	for _, r := range []row{{inTable, 1}} {
		send(ch, r.desc, prometheus.GaugeValue, r.v)
	}
	for _, d := range []*prometheus.Desc{inSlice} {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, 1)
	}
	m := map[string]*prometheus.Desc{"x": inMap}
	send(ch, m["x"], prometheus.GaugeValue, 1)
}

// Vectors are declared with their options.
func Vectors(reg prometheus.Registerer) {
	reg.MustRegister(
		prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "fixture", Subsystem: subsystem, Name: "vec_total"}, []string{"cause"}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fixture_func"}, func() float64 { return 1 }),
		prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fixture_seconds", ConstLabels: prometheus.Labels{"k": "v"}}),
	)
}
