package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MonitoringOptions place Debian's Prometheus and Alertmanager on the host
// next to the interactive lab.
type MonitoringOptions struct {
	Root             string // module root: examples/ is read from there
	ExporterPort     int    // host port forwarded to the lab's exporter
	PrometheusPort   int
	AlertmanagerPort int
	Logf             func(format string, a ...any)
}

// Monitoring is a running Prometheus (examples/prometheus/prometheus-lab.yml,
// the shipped rules with the lab's windows) and Alertmanager (the shipped
// example) on 127.0.0.1, in a temporary directory removed by Stop.
type Monitoring struct {
	Prometheus   string // http://127.0.0.1:PORT
	Alertmanager string
	dir          string
	servers      []*server
}

// server is one of the two monitoring processes. Each runs in its own
// process group, so that Ctrl-C in the terminal reaches only the lab, which
// then stops them: an exit while the lab runs is then a crash and its log
// is shown.
type server struct {
	name, log string
	cmd       *exec.Cmd
	exited    chan struct{}
	mu        sync.Mutex
	stopping  bool
}

// labConfig is the example configuration and the addresses in it that
// StartMonitoring rewrites to the ports in use.
const (
	labConfig           = "examples/prometheus/prometheus-lab.yml"
	labConfigExporter   = "127.0.0.1:10871"
	labConfigAM         = "127.0.0.1:19093"
	labConfigRules      = "rules-lab.yml"
	alertmanagerExample = "examples/alertmanager/alertmanager.yml"
)

// StartMonitoring starts Alertmanager and Prometheus and waits until both
// answer their readiness endpoints.
func StartMonitoring(ctx context.Context, o MonitoringOptions) (*Monitoring, error) {
	prometheus, err := exec.LookPath("prometheus")
	if err != nil {
		return nil, errors.New("prometheus is not installed (make deps installs Debian's prometheus)")
	}
	alertmanager, err := lookAny("prometheus-alertmanager", "alertmanager")
	if err != nil {
		return nil, errors.New("alertmanager is not installed (make deps installs Debian's prometheus-alertmanager)")
	}
	for _, p := range []int{o.PrometheusPort, o.AlertmanagerPort} {
		if err := portFree(p); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "ipsec-lab-monitoring-")
	if err != nil {
		return nil, err
	}
	m := &Monitoring{
		Prometheus:   fmt.Sprintf("http://127.0.0.1:%d", o.PrometheusPort),
		Alertmanager: fmt.Sprintf("http://127.0.0.1:%d", o.AlertmanagerPort),
		dir:          dir,
	}
	config, err := labPrometheusConfig(o)
	if err != nil {
		m.Stop()
		return nil, err
	}
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, config, 0o644); err != nil {
		m.Stop()
		return nil, err
	}
	m.start(o.Logf, "alertmanager", alertmanager,
		"--config.file="+filepath.Join(o.Root, alertmanagerExample),
		"--storage.path="+filepath.Join(dir, "alertmanager"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", o.AlertmanagerPort),
		"--cluster.listen-address=")
	m.start(o.Logf, "prometheus", prometheus,
		"--config.file="+configFile,
		"--storage.tsdb.path="+filepath.Join(dir, "prometheus"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", o.PrometheusPort))
	for _, s := range []struct {
		srv *server
		url string
	}{{m.servers[0], m.Alertmanager}, {m.servers[1], m.Prometheus}} {
		if err := waitReady(ctx, s.srv, s.url+"/-/ready", 30*time.Second); err != nil {
			m.Stop()
			return nil, err
		}
	}
	return m, nil
}

// labPrometheusConfig is prometheus-lab.yml with the ports in use and the
// rules file's absolute path (the copy lives in a temporary directory).
func labPrometheusConfig(o MonitoringOptions) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(o.Root, labConfig))
	if err != nil {
		return nil, err
	}
	config := string(b)
	for _, r := range []struct{ from, to string }{
		{labConfigExporter, fmt.Sprintf("127.0.0.1:%d", o.ExporterPort)},
		{labConfigAM, fmt.Sprintf("127.0.0.1:%d", o.AlertmanagerPort)},
		{"- " + labConfigRules, "- " + filepath.Join(o.Root, "examples/prometheus", labConfigRules)},
	} {
		if !strings.Contains(config, r.from) {
			return nil, fmt.Errorf("%s no longer names %s: update lab/monitoring.go with it", labConfig, r.from)
		}
		config = strings.ReplaceAll(config, r.from, r.to)
	}
	return []byte(config), nil
}

func (m *Monitoring) start(logf func(string, ...any), name, bin string, args ...string) {
	s := &server{name: name, log: filepath.Join(m.dir, name+".log"), exited: make(chan struct{})}
	m.servers = append(m.servers, s)
	logFile, err := os.Create(s.log)
	if err != nil {
		logf("%s: %v", name, err)
		close(s.exited)
		return
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		logf("starting %s: %v", name, err)
		close(s.exited)
		return
	}
	go func() {
		err := s.cmd.Wait()
		logFile.Close()
		s.mu.Lock()
		stopping := s.stopping
		s.mu.Unlock()
		if !stopping {
			logf("%s exited (%v) while the lab runs; the last lines of its log:\n%s", name, exitStatus(err), LogTail(s.log, 20))
		}
		close(s.exited)
	}()
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// waitReady polls url until it answers 200, the server exits or timeout.
func waitReady(ctx context.Context, s *server, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited at start-up; the last lines of its log:\n%s", s.name, LogTail(s.log, 20))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer %s within %s; the last lines of its log:\n%s", s.name, url, timeout, LogTail(s.log, 20))
		}
	}
}

// Stop ends both servers (SIGTERM, then SIGKILL after 10 s) and removes
// their data.
func (m *Monitoring) Stop() {
	for _, s := range m.servers {
		s.mu.Lock()
		s.stopping = true
		s.mu.Unlock()
		if s.cmd != nil && s.cmd.Process != nil {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, s := range m.servers {
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
	os.RemoveAll(m.dir)
}

// Links are the pages to open, found by asking the servers: Debian's
// Prometheus 2.42 serves only the classic UI (/classic/...), upstream
// builds the new one at the top; Debian's Alertmanager has no web UI at all,
// only its API (and amtool).
type Links struct {
	Alerts, Targets, Rules, Graph string
	// AlertmanagerUI is empty when Alertmanager serves no web UI.
	AlertmanagerUI string
}

// Links probes the servers for the pages they really serve.
func (m *Monitoring) Links() Links {
	client := &http.Client{Timeout: 5 * time.Second}
	ok := func(url string) bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	ui := m.Prometheus
	if !ok(ui+"/alerts") && ok(ui+"/classic/alerts") {
		ui += "/classic"
	}
	l := Links{Alerts: ui + "/alerts", Targets: ui + "/targets", Rules: ui + "/rules", Graph: ui + "/graph"}
	// A web UI is a page that loads a script; Debian's placeholder page
	// ("does not include a web application") loads none.
	if resp, err := client.Get(m.Alertmanager + "/"); err == nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && strings.Contains(string(body), "<script") {
			l.AlertmanagerUI = m.Alertmanager + "/"
		}
	}
	return l
}

func lookAny(names ...string) (string, error) {
	var err error
	for _, n := range names {
		var p string
		if p, err = exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", err
}

// portFree fails with a message naming the flag when port is taken on
// 127.0.0.1.
func portFree(port int) error {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return fmt.Errorf("port %d is taken on the host (another make lab? choose another port with the -port, -prometheus-port or -alertmanager-port flag, 0 for no monitoring): %w", port, err)
	}
	return ln.Close()
}
