package collector

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// Every metric a collector sends is built by newConstMetric. Label values
// come from the kernel and from files (interface and namespace names, the
// peer-names file), and none of those has to be valid UTF-8: an interface
// named "ve\xff" is legal to the kernel, and prometheus.MustNewConstMetric
// panics on it, inside a scrape, at every restart. newConstMetric repairs such
// values instead, writing each byte that is not part of valid UTF-8 as the
// four characters \xNN (so "ve\xff" is exported as `ve\xff`, readable and
// distinct from "ve\xfe"), counts every repair in
// ipsec_scrape_label_values_repaired_total and never panics.

var labelValuesRepairedDesc = prometheus.NewDesc(
	prometheus.BuildFQName(namespace, "scrape", "label_values_repaired_total"),
	"Label values that were not valid UTF-8 (an interface, namespace or peer name from the kernel or a file) and were exported with each invalid byte written as \\xNN; counted each time such a metric is built, so it grows by the number of such values per scrape.",
	nil, nil)

// labelRepairs counts repairs since start; the fan-out exports it.
var labelRepairs atomic.Uint64

// repairLog remembers which repaired values were logged, so each is logged
// once and a flood of distinct bad names cannot grow memory or the log
// without bound.
var repairLog = struct {
	sync.Mutex
	logger *slog.Logger
	seen   map[string]struct{}
}{logger: slog.New(slog.DiscardHandler), seen: map[string]struct{}{}}

// maxLoggedRepairs bounds the distinct repaired values logged.
const maxLoggedRepairs = 100

// setRepairLogger sets where repairs are logged (the exporter's logger).
func setRepairLogger(logger *slog.Logger) {
	repairLog.Lock()
	defer repairLog.Unlock()
	repairLog.logger = logger
}

// newConstMetric is prometheus.NewConstMetric that cannot fail on label
// values and never panics: values that are not valid UTF-8 are repaired (see
// above). A wrong number of label values is a bug in the caller; it comes
// back as an invalid metric, which fails that one series in the scrape (the
// registry reports it) instead of the process.
func newConstMetric(desc *prometheus.Desc, valueType prometheus.ValueType, value float64, labelValues ...string) prometheus.Metric {
	repaired := false
	for i, v := range labelValues {
		if utf8.ValidString(v) {
			continue
		}
		if !repaired {
			// The slice may be the caller's, reused for its next metric.
			labelValues = append([]string(nil), labelValues...)
			repaired = true
		}
		labelValues[i] = escapeInvalidUTF8(v)
		noteRepair(desc, labelValues[i])
	}
	m, err := prometheus.NewConstMetric(desc, valueType, value, labelValues...)
	if err != nil {
		return prometheus.NewInvalidMetric(desc, err)
	}
	return m
}

// escapeInvalidUTF8 keeps valid UTF-8 as it is and writes every other byte
// as \xNN.
func escapeInvalidUTF8(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		if r == utf8.RuneError && size == 1 {
			fmt.Fprintf(&b, `\x%02x`, s[0])
		} else {
			b.WriteString(s[:size])
		}
		s = s[size:]
	}
	return b.String()
}

func noteRepair(desc *prometheus.Desc, repaired string) {
	labelRepairs.Add(1)
	repairLog.Lock()
	defer repairLog.Unlock()
	if _, seen := repairLog.seen[repaired]; seen || len(repairLog.seen) >= maxLoggedRepairs {
		return
	}
	repairLog.seen[repaired] = struct{}{}
	repairLog.logger.Warn("label value is not valid UTF-8; exported with its invalid bytes written as \\xNN",
		"value", repaired, "metric", desc.String())
}
