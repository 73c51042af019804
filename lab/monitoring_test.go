package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipsec-exporter/ipsec_exporter/lab/testtool"
)

// TestMonitoring starts the interactive lab's Prometheus and Alertmanager
// (Debian's) against a stand-in exporter that serves the committed lab
// scrape, and checks what `make lab` relies on: the copied configuration
// scrapes the chosen port with the lab's rules and sends to the chosen
// Alertmanager; every link the banner prints answers 200; a server that
// dies while the lab runs is reported with its log; Stop leaves nothing.
func TestMonitoring(t *testing.T) {
	for bin, pkg := range map[string]string{"prometheus": "prometheus", "amtool": "prometheus-alertmanager"} {
		if testtool.Find(t, bin, pkg) == "" {
			t.Skipf("no %s", bin)
		}
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	scrape, err := os.ReadFile(root + "/dashboards/testdata/lab-scrape.prom")
	if err != nil {
		t.Fatal(err)
	}
	exporter := serveOnFreePort(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(scrape) })
	var (
		mu  sync.Mutex
		log []string
	)
	logf := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		log = append(log, fmt.Sprintf(format, a...))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := StartMonitoring(ctx, MonitoringOptions{
		Root: root, ExporterPort: exporter, PrometheusPort: freePort(t), AlertmanagerPort: freePort(t), Logf: logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			m.Stop()
		}
	}()

	// Prometheus scrapes the stand-in as job "ipsec", loaded the lab's
	// rules and found the Alertmanager.
	var targets struct {
		Data struct {
			ActiveTargets []struct {
				ScrapeURL string            `json:"scrapeUrl"`
				Health    string            `json:"health"`
				Labels    map[string]string `json:"labels"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	wantURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", exporter)
	waitUntil(t, 30*time.Second, "Prometheus scraping "+wantURL, func() bool {
		getJSON(t, m.Prometheus+"/api/v1/targets", &targets)
		for _, tg := range targets.Data.ActiveTargets {
			if tg.ScrapeURL == wantURL && tg.Health == "up" && tg.Labels["job"] == "ipsec" {
				return true
			}
		}
		return false
	})
	var rules struct {
		Data struct {
			Groups []struct {
				File  string `json:"file"`
				Rules []struct {
					Name string `json:"name"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	getJSON(t, m.Prometheus+"/api/v1/rules", &rules)
	alerts := map[string]bool{}
	for _, g := range rules.Data.Groups {
		if !strings.HasSuffix(g.File, "examples/prometheus/rules-lab.yml") {
			t.Errorf("rule group from %s, want the lab's rules", g.File)
		}
		for _, r := range g.Rules {
			alerts[r.Name] = true
		}
	}
	for _, a := range strings.Split(labAlerts, ", ") {
		if !alerts[a] {
			t.Errorf("the lab's rules have no %s", a)
		}
	}
	var ams struct {
		Data struct {
			ActiveAlertmanagers []struct {
				URL string `json:"url"`
			} `json:"activeAlertmanagers"`
		} `json:"data"`
	}
	waitUntil(t, 30*time.Second, "Prometheus finding the Alertmanager", func() bool {
		getJSON(t, m.Prometheus+"/api/v1/alertmanagers", &ams)
		return len(ams.Data.ActiveAlertmanagers) == 1 && strings.HasPrefix(ams.Data.ActiveAlertmanagers[0].URL, m.Alertmanager+"/")
	})

	// Every page the banner names is one the server serves.
	l := m.Links()
	for _, u := range []string{l.Alerts, l.Targets, l.Rules, l.Graph} {
		if code := status(t, u); code != http.StatusOK {
			t.Errorf("banner link %s: HTTP %d", u, code)
		}
	}
	if l.AlertmanagerUI != "" {
		if code := status(t, l.AlertmanagerUI); code != http.StatusOK {
			t.Errorf("Alertmanager UI %s: HTTP %d", l.AlertmanagerUI, code)
		}
	} else {
		// What the banner says to use instead.
		out, err := exec.Command("amtool", "--alertmanager.url="+m.Alertmanager, "alert", "query").CombinedOutput()
		if err != nil {
			t.Errorf("amtool alert query against %s: %v\n%s", m.Alertmanager, err, out)
		}
	}

	// A crash while the lab runs is reported with the server's log.
	prom := m.servers[1]
	if err := prom.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-prom.exited
	mu.Lock()
	report := strings.Join(log, "\n")
	mu.Unlock()
	if !strings.Contains(report, "prometheus exited (signal: killed) while the lab runs") || !strings.Contains(report, "Server is ready to receive web requests") {
		t.Errorf("no crash report with the log's tail; logged:\n%s", report)
	}

	m.Stop()
	stopped = true
	if _, err := os.Stat(m.dir); !os.IsNotExist(err) {
		t.Errorf("Stop left %s: %v", m.dir, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Count(strings.Join(log, "\n"), "exited") != 1 {
		t.Errorf("Stop was reported as a crash:\n%s", strings.Join(log, "\n"))
	}
}

// TestMonitoringPortTaken: a taken port fails before anything starts, and
// names the flags that choose another.
func TestMonitoringPortTaken(t *testing.T) {
	if testtool.Find(t, "prometheus", "prometheus") == "" {
		t.Skip("no prometheus")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().(*net.TCPAddr).Port
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	_, err = StartMonitoring(context.Background(), MonitoringOptions{
		Root: root, ExporterPort: freePort(t), PrometheusPort: taken, AlertmanagerPort: freePort(t), Logf: t.Logf,
	})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("port %d is taken", taken)) || !strings.Contains(err.Error(), "-prometheus-port") {
		t.Errorf("StartMonitoring on a taken port: %v", err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// serveOnFreePort serves h on 127.0.0.1 for the rest of the test and
// returns the port.
func serveOnFreePort(t *testing.T, h http.HandlerFunc) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func status(t *testing.T, url string) int {
	t.Helper()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
