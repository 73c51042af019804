package collector

import (
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/xfrmnl"
	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// A scrape as a searchable set of samples, for the tests that check many
// series of a real scrape.

// stateCollectors are the sa, policy, xfrm_stat and events collectors over
// the given lab namespaces, sharing one watcher and one listener per
// namespace as in the exporter.
type stateCollectors struct {
	sa     *saCollector
	policy *policyCollector
	stat   *xfrmStatCollector
	events *eventsCollector
}

func newStateCollectors(t *testing.T, ns ...*scenario.Netns) *stateCollectors {
	t.Helper()
	w := labWatcher(t, ns...)
	ls := xfrmnl.Follow(w, xfrmnl.ListenOptions{})
	t.Cleanup(func() { _ = ls.Close() })
	logger := slog.New(slog.DiscardHandler)
	namespaces := namespacesNow(w)
	c := &stateCollectors{
		sa:     newSACollector(logger, namespaces, readSAs, true, 0),
		policy: &policyCollector{logger: logger, namespaces: namespaces, read: readPolicies},
		stat:   &xfrmStatCollector{logger: logger, namespaces: namespaces, read: readXfrmStat},
		events: &eventsCollector{logger: logger, namespaces: namespaces, listeners: ls},
	}
	c.sa.finals = takeFinals(ls)
	return c
}

func (c *stateCollectors) scrape(t *testing.T) samples {
	t.Helper()
	return gatherSamples(t, c.sa, c.policy, c.stat, c.events)
}

// waitEvents scrapes until the event counter reaches want (events arrive
// asynchronously) and returns the last scrape. A listener in a lab VM
// under load was seen 4.5 s behind its socket: the deadline leaves room.
func (c *stateCollectors) waitEvents(t *testing.T, netns, event string, want float64) samples {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := c.scrape(t)
		got := s.get(t, "ipsec_xfrm_events_total", labels("netns", netns, "event", event))
		if got >= want || time.Now().After(deadline) {
			if got != want {
				t.Errorf("%s %s events: %v, want %v", netns, event, got, want)
			}
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// samples maps "name{k=v,...}" (labels sorted) to a value.
type samples map[string]float64

func gatherSamples(t *testing.T, cs ...Collector) samples {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range cs {
		reg.MustRegister(adapt(t, c))
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return samplesOf(slices.Values(mfs))
}

// samplesOf indexes families, gathered or parsed, by sampleKey.
func samplesOf(mfs iter.Seq[*dto.MetricFamily]) samples {
	s := samples{}
	for mf := range mfs {
		for _, m := range mf.GetMetric() {
			s[sampleKey(mf.GetName(), m.GetLabel())] = sampleValue(m)
		}
	}
	return s
}

// parseExposition parses a scrape's text.
func parseExposition(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	return mfs
}

func sampleKey(name string, labels []*dto.LabelPair) string {
	var parts []string
	for _, l := range labels {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// find returns the one sample of name whose labels include all of want.
func (s samples) find(t *testing.T, name string, want map[string]string) (float64, bool) {
	t.Helper()
	var found []string
	for k := range s {
		if !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for lk, lv := range want {
			if !strings.Contains(k, "{"+lk+"="+lv+",") && !strings.Contains(k, ","+lk+"="+lv+",") &&
				!strings.HasSuffix(k, ","+lk+"="+lv+"}") && !strings.HasSuffix(k, "{"+lk+"="+lv+"}") {
				ok = false
				break
			}
		}
		if ok {
			found = append(found, k)
		}
	}
	if len(found) > 1 {
		t.Fatalf("%s %v matches %d samples: %v", name, want, len(found), found)
	}
	if len(found) == 0 {
		return 0, false
	}
	return s[found[0]], true
}

// value is a sample's value, 0 when absent (a counter not yet created).
func (s samples) value(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	v, _ := s.find(t, name, want)
	return v
}

// get is find that fails the test when the sample is absent.
func (s samples) get(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	v, ok := s.find(t, name, want)
	if !ok {
		t.Fatalf("no sample %s %v", name, want)
	}
	return v
}

// labWatcher watches the given scenario namespaces (and our own) the way
// the exporter finds them: through /run/netns.
func labWatcher(t *testing.T, ns ...*scenario.Netns) *netnsx.Watcher {
	t.Helper()
	var names []string
	for _, n := range ns {
		names = append(names, n.Name)
	}
	w, err := netnsx.NewWatcher(netnsx.Config{Dir: "/run/netns", Names: names})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

func labels(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func spiHex(spi uint32) string { return fmt.Sprintf("0x%08x", spi) }
