package collector

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// TestLabExporterNamespaces runs the real exporter binary in the VM's own
// namespace, watching two named namespaces with SAs and traffic, and checks
// its /metrics: every SA of the lab with ip's counters, under the netns
// label of its namespace, and a clean lint.
func TestLabExporterNamespaces(t *testing.T) {
	scenario.RequireVM(t)
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	p := scenario.NewPair(t)
	e := p.ESP(t, scenario.ESPOptions{Tunnel: true})
	const addr = "127.0.0.1:10871"
	cmd := exec.Command(scenario.ExporterBin(), "--web.listen-address="+addr,
		"--collector.netns.dir=/run/netns", "--collector.netns.name="+p.A.Name, "--collector.netns.name="+p.B.Name,
		"--no-collector.verdict", "--no-collector.wire")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("exporter log:\n%s", logs.String())
		}
	})
	scrape := func() string {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second) // start-up under emulation on a busy host takes seconds
		for {
			resp, err := http.Get("http://" + addr + "/metrics")
			if err == nil {
				body, err := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if err != nil {
					t.Fatal(err)
				}
				return string(body)
			}
			if time.Now().After(deadline) {
				t.Fatalf("exporter not answering after 60s: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	scrape() // up, and the event listeners run
	if got := p.A.Ping(t, e.BAddr, 6); got != 6 {
		t.Fatalf("%d of 6 replies", got)
	}
	text := scrape()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	s := samples{}
	var families []*dto.MetricFamily
	for _, mf := range mfs {
		families = append(families, mf)
		for _, m := range mf.GetMetric() {
			s[sampleKey(mf.GetName(), m.GetLabel())] = sampleValue(m)
		}
	}
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
