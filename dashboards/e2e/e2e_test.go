// Package e2e proves the dashboards and alerts against the real thing: a
// lab VM runs the exporter with IPsec traffic and provoked failures, Debian's
// Prometheus scrapes it through a host forward with our rules loaded, and
// Debian's Alertmanager, configured from the shipped example, delivers the
// alerts to a webhook in this test.
//
//	cd dashboards && go test ./e2e -e2e -v            # run it (TestEndToEnd 3-4 minutes, TestMakeLab 4-6)
//	cd dashboards && go test ./e2e -e2e -update       # also rewrite testdata/lab-scrape.prom
package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipsec-exporter/ipsec_exporter/dashboards"
	"github.com/ipsec-exporter/ipsec_exporter/dashboards/rules"
)

var (
	runE2E = flag.Bool("e2e", os.Getenv("IPSEC_E2E") == "1", "run the end-to-end test (boots a lab VM; also IPSEC_E2E=1)")
	kernel = flag.String("kernel", "", "lab kernel for the end-to-end test (default: the newest of the matrix)")
	update = flag.Bool("update", false, "rewrite ../testdata/lab-scrape.prom from the lab's scrape")
	// -prometheus checks the dashboards against a running Prometheus that
	// scrapes the exporter as job "ipsec" with our rules, e.g. the one
	// `make lab` starts.
	existing = flag.String("prometheus", "", "URL of a running Prometheus to run every dashboard query against (TestQueriesAgainstPrometheus)")
	rangeArg = flag.String("rate-interval", "40s", "what $__rate_interval stands for with -prometheus (4 scrape intervals of make lab's Prometheus)")
)

// TestQueriesAgainstPrometheus runs every dashboard query and recording
// rule against the Prometheus given with -prometheus:
//
//	go test ./e2e -run TestQueriesAgainstPrometheus -prometheus http://127.0.0.1:19090 -v
func TestQueriesAgainstPrometheus(t *testing.T) {
	if *existing == "" {
		t.Skip("needs -prometheus URL")
	}
	checkQueries(t, &promClient{base: strings.TrimSuffix(*existing, "/")}, *rangeArg, rules.Default)
}

// Timings of the test's Prometheus: short, so alerts fire and resolve in
// seconds. The rules get them through their settings, not by hand edits.
const (
	// scrapeInterval is also the scrape timeout: at 1 s, up to 8 scrapes a
	// run of the emulated exporter on a loaded machine timed out, and
	// IpsecExporterDown went pending during the healthy-traffic check.
	scrapeInterval = "2s"
	evalInterval   = "1s"
	// rateWindow is both the rules' RateWindow and what $__rate_interval
	// stands for in dashboard queries: four scrapes, so a missed or slow
	// scrape under emulation does not empty a rate.
	rateWindow = "8s"
	jobName    = "ipsec"
	nodeName   = "lab"
)

// fastSettings are the shipped rules with the test's windows and for:
// durations; thresholds stay as shipped.
func fastSettings() rules.Settings {
	s := rules.Default
	s.Name = "e2e fastSettings"
	s.Selector = `job="` + jobName + `"`
	s.EvaluationInterval = evalInterval
	s.RateWindow = rateWindow
	s.DecryptFailureFor = "2s"
	s.EncryptFailureFor = "2s"
	s.UnprotectedFor = "2s"
	s.SAGoneLookback = "1m"
	s.SAGoneFor = "2s"
	s.SAExpiryFor = "2s"
	s.RekeyStormWindow = "30s"
	s.RekeyStormFor = "2s"
	s.BPFNotAttachedFor = "2s"
	s.ExporterDownFor = "2s"
	s.CollectorFailingFor = "2s"
	s.TunnelDownFor = "2s"
	s.IKEDaemonDownFor = "2s"
	return s
}

// How long IpsecTunnelDown may take at the webhook, from its parts. Down:
// A's charon probes C after ikeDPD without a packet from it (checked every
// ikeDPD, so up to twice that) and clears the tunnel when its retransmits
// go unanswered (1 + 1.4 + 1.96 + 2.744 = 7.1 s with the lab's
// strongswan.conf); then a scrape (2 s), an evaluation, TunnelDownFor (2 s),
// the next evaluation and Alertmanager's group_wait (1 s each): about 18 s.
// Up: C's daemon is back and the child SAs are in both kernels when the
// control call returns; a scrape, an evaluation and the group_interval:
// about 4 s. Three times each, for an emulated CPU on a loaded machine.
const (
	tunnelDownWithin = 3 * (2*ikeDPD + 7100*time.Millisecond + 7*time.Second)
	tunnelUpWithin   = 3 * (4 * time.Second)
)

// faultAlerts are the alerts the driver's faults must fire and, once the
// faults end, resolve: decrypt failures (wrong key), plaintext to a peer
// (policy hole) and an SA near its hard expiry (a rekey that did not
// happen).
var faultAlerts = []string{"IpsecDecryptFailures", "IpsecUnprotectedTrafficToPeer", "IpsecSANearHardExpiry"}

// faults are the driver's fault switches, in faultAlerts' order.
var faults = []string{"wrong-key", "leak", "expiry"}

func TestEndToEnd(t *testing.T) {
	if !*runE2E {
		t.Skip("boots a lab VM: run with -e2e (or IPSEC_E2E=1), see the package comment")
	}
	if os.Getenv("IPSEC_LAB") == "1" {
		t.Skip("host side of the end-to-end test")
	}
	prometheus := lookBinary(t, "prometheus")
	alertmanager := lookBinary(t, "prometheus-alertmanager", "alertmanager")
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()

	vm := bootLab(ctx, t)
	t.Logf("lab up after %s: exporter at %s", time.Since(start).Round(time.Second), vm.exporter)

	dir := t.TempDir()
	hook := newWebhook(t)
	amAddr := freeAddr(t)
	writeFile(t, filepath.Join(dir, "alertmanager.yml"), alertmanagerConfig(t, hook.URL))
	startProcess(t, "alertmanager", alertmanager,
		"--config.file="+filepath.Join(dir, "alertmanager.yml"),
		"--storage.path="+filepath.Join(dir, "am-data"),
		"--web.listen-address="+amAddr,
		"--cluster.listen-address=",
	)
	ruleFile, err := rules.Render(fastSettings())
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "rules.yml"), ruleFile)
	writeFile(t, filepath.Join(dir, "prometheus.yml"), []byte(prometheusConfig(vm.exporter, amAddr)))
	promAddr := freeAddr(t)
	startProcess(t, "prometheus", prometheus,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "prom-data"),
		"--web.listen-address="+promAddr,
		"--rules.alert.resend-delay=1s",
	)
	prom := &promClient{base: "http://" + promAddr}
	t.Cleanup(func() {
		if t.Failed() {
			prom.dump(t, `ALERTS`, `ipsec_peer_sas`, `ipsec_sa_info`, `ipsec_scrape_collector_success == 0`)
		}
	})

	// Healthy traffic first: rates need a full window of scrapes.
	waitFor(ctx, t, "Prometheus' first ipsec_* sample of the lab exporter", 60*time.Second, func() (bool, error) {
		v, err := prom.query(`count({__name__=~"ipsec_.+", job="` + jobName + `"})`)
		return len(v) > 0, err
	})
	t.Logf("Prometheus has the first ipsec_* samples %s after start", time.Since(start).Round(time.Second))
	waitFor(ctx, t, "decrypt traffic in the recording rules", 60*time.Second, func() (bool, error) {
		v, err := prom.query(`instance_peer_direction:ipsec_xfrm_packets:rate{direction="decrypt"} > 0`)
		return len(v) > 0, err
	})
	if firing, _ := prom.query(`ALERTS`); len(firing) > 0 {
		t.Errorf("alerts pending or firing on healthy traffic: %v", firing)
	}

	// Provoke integrity failures on A, a plaintext leak to B and an SA about
	// to expire: the alerts must reach Alertmanager through the shipped
	// routes.
	for _, f := range faults {
		vm.control(t, "/fault/"+f+"?on=1")
	}
	faultAt := time.Now()
	for _, alert := range faultAlerts {
		hook.waitFor(ctx, t, alert, "firing", 90*time.Second)
		t.Logf("%s firing at the webhook %s after the faults", alert, time.Since(faultAt).Round(time.Second))
	}

	// With traffic and failures both present, every dashboard query and
	// every recording rule must return data, and the scrape is the one the
	// host-side checks compare with.
	checkQueries(t, prom, rateWindow, fastSettings())
	checkScrape(t, vm.exporter)

	for _, f := range faults {
		vm.control(t, "/fault/"+f+"?on=0")
	}
	healAt := time.Now()
	for _, alert := range faultAlerts {
		hook.waitFor(ctx, t, alert, "resolved", 90*time.Second)
		t.Logf("%s resolved at the webhook %s after the faults ended", alert, time.Since(healAt).Round(time.Second))
	}

	// The tunnel goes down: A's SAs with B are deleted while its policies
	// still require them. IpsecPeerSAsGone must reach the webhook and
	// resolve once the SAs are back; the packets that then fail to encrypt
	// (no_state) fire IpsecEncryptFailures in Prometheus, which the
	// example's inhibition may keep from the webhook.
	vm.control(t, "/fault/teardown?on=1")
	downAt := time.Now()
	hook.waitFor(ctx, t, "IpsecPeerSAsGone", "firing", 90*time.Second)
	t.Logf("IpsecPeerSAsGone firing at the webhook %s after the teardown", time.Since(downAt).Round(time.Second))
	waitFor(ctx, t, "IpsecEncryptFailures firing in Prometheus", 60*time.Second, func() (bool, error) {
		v, err := prom.query(`ALERTS{alertname="IpsecEncryptFailures", alertstate="firing"}`)
		return len(v) > 0, err
	})
	vm.control(t, "/fault/teardown?on=0")
	upAt := time.Now()
	hook.waitFor(ctx, t, "IpsecPeerSAsGone", "resolved", 90*time.Second)
	t.Logf("IpsecPeerSAsGone resolved at the webhook %s after the SAs came back", time.Since(upAt).Round(time.Second))

	// The IKE view: strongSwan's peer C is killed, A's DPD clears the
	// tunnel and its configured connection has no child SA:
	// IpsecTunnelDown must reach the webhook, and resolve once C is back and
	// A initiated again.
	vm.control(t, "/fault/ike-down?on=1")
	ikeDownAt := time.Now()
	hook.waitFor(ctx, t, "IpsecTunnelDown", "firing", tunnelDownWithin)
	t.Logf("IpsecTunnelDown firing at the webhook %s after the IKE peer was killed", time.Since(ikeDownAt).Round(time.Second))
	// With the tunnel, A's daemon removed its policies for C: A's pings to
	// C now leave in plaintext. C must stay a known peer (a configured
	// connection's address) and the leak be flagged per peer.
	waitFor(ctx, t, "IpsecUnprotectedTrafficToPeer for C firing in Prometheus", tunnelDownWithin, func() (bool, error) {
		v, err := prom.query(`ALERTS{alertname="IpsecUnprotectedTrafficToPeer", alertstate="firing", peer="` + ikePeerAddr + `"}`)
		return len(v) > 0, err
	})
	t.Logf("IpsecUnprotectedTrafficToPeer for C firing in Prometheus %s after the IKE peer was killed", time.Since(ikeDownAt).Round(time.Second))
	// The control call returns once C's daemon is back and the child SAs
	// are in both kernels; the alert may resolve while it runs.
	restartAt := time.Now()
	vm.control(t, "/fault/ike-down?on=0")
	t.Logf("C's daemon restarted and the tunnel re-established in %s", time.Since(restartAt).Round(time.Second))
	hook.waitFor(ctx, t, "IpsecTunnelDown", "resolved", tunnelUpWithin)
	t.Logf("IpsecTunnelDown resolved at the webhook %s after C's restart began", time.Since(restartAt).Round(time.Second))

	fired, err := prom.query(`count by (alertname) (max_over_time(ALERTS{alertstate="firing"}[15m]))`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range fired {
		names = append(names, s.Metric["alertname"])
	}
	slices.Sort(names)
	t.Logf("alerts that fired during the run: %s", strings.Join(names, ", "))
	t.Logf("notifications received by the webhook: %s", strings.Join(hook.summary(), "; "))
	// Scrapes that failed (1 s timeout under emulation) explain an
	// IpsecExporterDown above.
	for _, q := range []string{`count_over_time((up{job="` + jobName + `"} == 0)[15m:1s])`, `max_over_time(scrape_duration_seconds{job="` + jobName + `"}[15m])`} {
		if v, err := prom.query(q); err == nil && len(v) > 0 {
			t.Logf("%s = %v", q, v[0].Value[1])
		}
	}
	vm.control(t, "/stop")
	t.Logf("end-to-end wall time %s", time.Since(start).Round(time.Second))
}

// checkQueries runs every dashboard query and every recording rule's output
// at the current time and fails for any that returns nothing.
func checkQueries(t *testing.T, prom *promClient, rateInterval string, settings rules.Settings) {
	t.Helper()
	type q struct{ where, expr string }
	var qs []q
	for _, d := range []dashboards.Dashboard{dashboards.Overview, dashboards.SADetail} {
		// Every variable as its dashboard's default, All (".*"), so a
		// filter added to a dashboard is covered here too.
		vars := []string{"$__rate_interval", rateInterval, "$job", jobName, "$node", ".*", "$instance", ".*"}
		for _, f := range d.Filters {
			vars = append(vars, "$"+f.Name, ".*")
		}
		replacer := strings.NewReplacer(vars...)
		for _, row := range d.Rows {
			for _, p := range row.Panels {
				for _, target := range p.Targets {
					qs = append(qs, q{d.File + ": " + p.Title, replacer.Replace(target.Expr)})
				}
			}
		}
	}
	for _, name := range recordingRules(t, settings) {
		qs = append(qs, q{"recording rule", name})
	}
	for _, q := range qs {
		v, err := prom.query(q.expr)
		switch {
		case variableRef.MatchString(q.expr):
			t.Errorf("%s: a dashboard variable this test does not set\n  %s", q.where, q.expr)
		case err != nil:
			t.Errorf("%s: %v\n  %s", q.where, err, q.expr)
		case len(v) == 0:
			t.Errorf("NO DATA  %s\n  %s", q.where, q.expr)
		default:
			t.Logf("data (%d series)  %s", len(v), q.where+": "+q.expr)
		}
	}
}

// variableRef is a Grafana variable left in a query ($name or ${name}).
var variableRef = regexp.MustCompile(`\$\{?[A-Za-z_]`)

func recordingRules(t *testing.T, settings rules.Settings) []string {
	t.Helper()
	b, err := rules.Render(settings)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "- record: "); ok {
			names = append(names, name)
		}
	}
	return names
}

// prometheusConfig scrapes the lab exporter as job "ipsec" with a node
// label, as the Kubernetes example's relabeling would, and sends alerts to
// the test's Alertmanager.
func prometheusConfig(exporter, alertmanager string) string {
	return fmt.Sprintf(`global:
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
  evaluation_interval: %[2]s
rule_files:
  - rules.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: [%[3]q]
scrape_configs:
  - job_name: %[4]s
    static_configs:
      - targets: [%[5]q]
        labels:
          node: %[6]s
`, scrapeInterval, evalInterval, alertmanager, jobName, strings.TrimPrefix(exporter, "http://"), nodeName)
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
}

// dump logs the current result of each query, for a failure's context.
func (p *promClient) dump(t *testing.T, queries ...string) {
	for _, q := range queries {
		v, err := p.query(q)
		if err != nil {
			t.Logf("prometheus %s: %v", q, err)
			continue
		}
		t.Logf("prometheus %s:", q)
		for _, s := range v {
			t.Logf("  %v %v", s.Metric, s.Value)
		}
	}
}

type promClient struct{ base string }

func (p *promClient) query(expr string) ([]promSample, error) {
	resp, err := http.Get(p.base + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string       `json:"resultType"`
			Result     []promSample `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", expr, body.Error)
	}
	return body.Data.Result, nil
}

// webhook is Alertmanager's receiver: it records every notification.
type webhook struct {
	*httptest.Server
	mu     sync.Mutex
	events []string // "alertname status"
}

func newWebhook(t *testing.T) *webhook {
	h := &webhook{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var msg struct {
			Receiver string `json:"receiver"`
			Alerts   []struct {
				Status string            `json:"status"`
				Labels map[string]string `json:"labels"`
			} `json:"alerts"`
		}
		if err := json.NewDecoder(r.Body).Decode(&msg); err != nil {
			t.Errorf("webhook: %v", err)
			return
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, a := range msg.Alerts {
			h.events = append(h.events, a.Labels["alertname"]+" "+a.Status+" via "+msg.Receiver)
		}
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *webhook) has(alert, status string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.events {
		if strings.HasPrefix(e, alert+" "+status+" ") {
			return true
		}
	}
	return false
}

func (h *webhook) summary() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, e := range h.events {
		if !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	return out
}

func (h *webhook) waitFor(ctx context.Context, t *testing.T, alert, status string, timeout time.Duration) {
	t.Helper()
	waitFor(ctx, t, alert+" "+status+" at the Alertmanager webhook", timeout, func() (bool, error) {
		return h.has(alert, status), nil
	})
}

// waitFor polls cond every 500ms until it holds, failing the test after
// timeout.
func waitFor(ctx context.Context, t *testing.T, what string, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, lastErr)
}

func lookBinary(t *testing.T, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	t.Fatalf("%s not found: install Debian's prometheus and prometheus-alertmanager packages", strings.Join(names, " or "))
	return ""
}

// startProcess runs a server for the rest of the test, its output in the
// test log only when the test fails.
func startProcess(t *testing.T, name, bin string, args ...string) {
	t.Helper()
	// Not tied to ctx: the failure dumps in later cleanups still need it.
	cmd := exec.Command(bin, args...)
	logFile, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("%s log:\n%s", name, tailLines(string(b), 40))
		}
		logFile.Close()
	})
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freeAddr returns a 127.0.0.1 address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func httpGet(u string) (string, error) {
	resp, err := http.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return string(b), err
}
