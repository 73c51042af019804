package collector

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// TestLabExporterNamespaces runs the real exporter binary in the VM's own
// namespace, watching two named namespaces with SAs and traffic, and checks
// its /metrics: every SA of the lab with ip's counters, under the netns
// label of its namespace, and a clean lint.
func TestLabExporterNamespaces(t *testing.T) {
	scenario.RequireVM(t)
	p := scenario.NewPair(t)
	e := p.ESP(t, scenario.ESPOptions{Tunnel: true})
	x := startLabExporter(t, []*scenario.Netns{p.A.Netns, p.B.Netns}, "--no-collector.verdict")
	if got := p.A.Ping(t, e.BAddr, 6); got != 6 {
		t.Fatalf("%d of 6 replies", got)
	}
	mfs := parseExposition(t, x.scrape(t))
	s := samplesOf(maps.Values(mfs))
	families := slices.Collect(maps.Values(mfs))
	for _, n := range []*scenario.Netns{p.A.Netns, p.B.Netns} {
		if got := compareWithIP(t, s, n); got != 2 {
			t.Errorf("%s: %d SAs compared, want 2", n.Name, got)
		}
	}
	for _, c := range []string{"sa", "policy", "events", "xfrm_stat"} {
		if v := s.get(t, "ipsec_scrape_collector_success", labels("collector", c)); v != 1 {
			t.Errorf("collector %s failed", c)
		}
	}
	if v := s.get(t, "ipsec_xfrm_events_total", labels("netns", p.B.Name, "event", "sa_added")); v != 0 {
		// The SAs were added before the exporter started.
		t.Errorf("sa_added %v for SAs that predate the exporter", v)
	}
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		if strings.HasPrefix(pr.Metric, "ipsec_sa") || strings.HasPrefix(pr.Metric, "ipsec_peer") || strings.HasPrefix(pr.Metric, "ipsec_polic") ||
			strings.HasPrefix(pr.Metric, "ipsec_xfrm_stat") || strings.HasPrefix(pr.Metric, "ipsec_xfrm_event") || strings.HasPrefix(pr.Metric, "ipsec_socket") {
			t.Errorf("lint: %s: %s", pr.Metric, pr.Text)
		}
	}
	t.Logf("kernel %s: exporter /metrics: %d families, %d samples; A's out SA %v packets",
		scenario.Kernel(), len(families), len(s), s.get(t, "ipsec_sa_packets_total", labels("netns", p.A.Name, "spi", fmt.Sprintf("0x%08x", e.AB.SPI))))
}
