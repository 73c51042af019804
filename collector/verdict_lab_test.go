package collector

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// TestLabVerdictExporter runs the real exporter binary in the lab VM with
// --bpf.strict and a peer names file, sends five pings over ESP and reads
// the verdicts from /metrics: the whole path from BPF map to exposition.
func TestLabVerdictExporter(t *testing.T) {
	scenario.RequireVM(t)
	bin := scenario.ExporterBin()
	if bin == "" {
		t.Fatal("IPSEC_EXPORTER_BIN not set in the lab VM")
	}
	peers := filepath.Join(t.TempDir(), "peers")
	if err := os.WriteFile(peers, []byte("10.77.0.2 node-b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const addr = "127.0.0.1:10899"
	ctx, cancel := context.WithCancel(context.Background())
	var logs bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--web.listen-address="+addr, "--bpf.strict",
		"--collector.verdict.peer-names="+peers)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("exporter log:\n%s", logs.String())
		}
	})
	// Attaching the fentry programs takes seconds under emulation.
	var families map[string]*dto.MetricFamily
	deadline := time.Now().Add(60 * time.Second)
	for {
		var err error
		if families, err = scrape("http://" + addr + "/metrics"); err == nil {
			break
		}
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			t.Fatalf("exporter not serving: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if mode := scenario.AutoHookMode(); gauge(families, "ipsec_bpf_verdict_hook_mode", map[string]string{"mode": mode}) != 1 {
		t.Errorf("hook mode %s = %v, want 1 (what auto picks on this lab kernel)", mode,
			gauge(families, "ipsec_bpf_verdict_hook_mode", map[string]string{"mode": mode}))
	}
	if v := gauge(families, "ipsec_bpf_verdict_programs_attached", nil); v < 8 {
		t.Errorf("%v verdict programs attached, want at least 8", v)
	}

	p := scenario.NewPair(t)
	e := p.ESP(t, scenario.ESPOptions{})
	if got := p.A.Ping(t, e.BAddr, 5); got != 5 {
		t.Fatalf("ping: %d of 5 replies", got)
	}
	families, err := scrape("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	sa := p.A.SACounters(t, e.AB)
	labels := map[string]string{"direction": "encrypt", "peer": "10.77.0.2", "result": "ok", "peer_name": "node-b"}
	if v := gauge(families, "ipsec_xfrm_packets_total", labels); v != 5 {
		t.Errorf("ipsec_xfrm_packets_total%v = %v, want 5", labels, v)
	}
	if v := gauge(families, "ipsec_xfrm_bytes_total", labels); v != float64(sa["bytes"]) {
		t.Errorf("ipsec_xfrm_bytes_total%v = %v, want the SA's %d", labels, v, sa["bytes"])
	}
	labels = map[string]string{"direction": "decrypt", "peer": "10.77.0.1", "result": "ok", "peer_name": ""}
	if v := gauge(families, "ipsec_xfrm_packets_total", labels); v != 5 {
		t.Errorf("ipsec_xfrm_packets_total%v = %v, want 5", labels, v)
	}
}

func scrape(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("%s: %s", resp.Status, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// gauge returns the value of the series with exactly these labels (all of
// the series' labels), or -1.
func gauge(families map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	f, ok := families[name]
	if !ok {
		return -1
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			if l.GetValue() != "" {
				got[l.GetName()] = l.GetValue()
			}
		}
		if !sameLabels(got, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

func sameLabels(got, want map[string]string) bool {
	n := 0
	for k, v := range want {
		if v == "" {
			continue
		}
		n++
		if got[k] != v {
			return false
		}
	}
	return n == len(got)
}
