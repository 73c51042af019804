// Package deploy_test checks what users deploy: the binary's flags, TLS and
// basic auth through exporter-toolkit's web config, the systemd unit, the
// Dockerfile, .promu.yml, and (in the lab) the capabilities the exporter
// needs. Tests run the real binary, as a user would.
package deploy_test

import (
	"bytes"
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
	"testing"
	"time"
)

// repoRoot is where go build runs; tests run with cwd = this package's dir.
const repoRoot = ".."

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// exporterBinary returns the exporter to test. In the lab VM the runner puts
// one at $IPSEC_EXPORTER_BIN (there is no Go toolchain there); on the host
// it is built once per test run with .promu.yml's version ldflags.
func exporterBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("IPSEC_EXPORTER_BIN"); bin != "" {
		return bin
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "ipsec-exporter-deploy-")
		if buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "ipsec_exporter")
		var ldflags string
		if ldflags, buildErr = promuLdflags(); buildErr == nil {
			buildErr = goBuild(buildPath, ldflags, nil)
		}
	})
	if buildErr != nil {
		t.Fatalf("building the exporter: %v", buildErr)
	}
	return buildPath
}

// testLdflags are the values promuLdflags fills into .promu.yml's templates;
// the --version test looks for them in the output.
var testLdflags = map[string]string{
	"{{.Version}}":                   "0.0.0-deploytest",
	"{{.Revision}}":                  "deadbeefcafe",
	"{{.Branch}}":                    "deploy-test",
	"{{user}}":                       "tester",
	"{{host}}":                       "testhost",
	"{{date \"20060102-15:04:05\"}}": "20260101-00:00:00",
}

func goBuild(out, ldflags string, extraEnv []string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "-ldflags", ldflags, ".")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Env = append(cmd.Env, extraEnv...)
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, output)
	}
	return nil
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// exporter is a running exporter process.
type exporter struct {
	cmd    *exec.Cmd
	addr   string
	ns     *testNetns // nil: the test's own network namespace
	output *syncBuffer
	exited chan struct{}
	err    error
}

// startExporter runs the binary with args plus a free loopback listen
// address, and stops it (SIGTERM, then SIGKILL) when the test ends.
// attr, if not nil, sets credentials and capabilities.
func startExporter(t *testing.T, attr *syscall.SysProcAttr, args ...string) *exporter {
	t.Helper()
	return launchExporter(t, attr, nil, args...)
}

// startExporterIn is startExporter inside the namespace ns: the exporter's
// own namespace (its interfaces, XFRM state, loopback) is ns.
func startExporterIn(t *testing.T, ns *testNetns, args ...string) *exporter {
	t.Helper()
	return launchExporter(t, nil, ns, args...)
}

func launchExporter(t *testing.T, attr *syscall.SysProcAttr, ns *testNetns, args ...string) *exporter {
	t.Helper()
	e := &exporter{addr: freeAddr(t), ns: ns, output: &syncBuffer{}, exited: make(chan struct{})}
	e.cmd = exec.Command(exporterBinary(t), append([]string{"--web.listen-address=" + e.addr}, args...)...)
	e.cmd.Stdout = e.output
	e.cmd.Stderr = e.output
	e.cmd.SysProcAttr = attr
	err := e.cmd.Start
	if ns != nil {
		err = func() error { return ns.do(e.cmd.Start) }
	}
	if err := err(); err != nil {
		t.Fatalf("starting exporter: %v", err)
	}
	go func() {
		e.err = e.cmd.Wait()
		close(e.exited)
	}()
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			t.Logf("exporter output:\n%s", e.output.String())
		}
	})
	return e
}

func (e *exporter) stop() {
	select {
	case <-e.exited:
		return
	default:
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(15 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.exited
	}
}

// waitListening waits until the exporter accepts TCP connections, failing
// the test if it exits or takes too long (BPF attach is slow under
// emulation, hence the generous limit).
func (e *exporter) waitListening(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-e.exited:
			t.Fatalf("exporter exited early (%v):\n%s", e.err, e.output.String())
		default:
		}
		conn, err := e.dial(time.Second)
		if err == nil {
			conn.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("exporter not listening on %s after 60s:\n%s", e.addr, e.output.String())
}

// dial connects to the exporter's address from its namespace.
func (e *exporter) dial(timeout time.Duration) (net.Conn, error) {
	if e.ns == nil {
		return net.DialTimeout("tcp", e.addr, timeout)
	}
	var conn net.Conn
	err := e.ns.do(func() (err error) {
		conn, err = net.DialTimeout("tcp", e.addr, timeout)
		return err
	})
	return conn, err
}

// client is an HTTP client that reaches the exporter from its namespace.
func (e *exporter) client(timeout time.Duration) *http.Client {
	if e.ns == nil {
		return &http.Client{Timeout: timeout}
	}
	return e.ns.client(timeout)
}

// scrape GETs the metrics page over plain HTTP and returns the status code
// and body.
func (e *exporter) scrape(t *testing.T) (int, string) {
	t.Helper()
	client := e.client(60 * time.Second)
	defer client.CloseIdleConnections() // a one-off scrape leaves no connection behind
	resp, err := client.Get("http://" + e.addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v\n%s", err, e.output.String())
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the scrape: %v", err)
	}
	return resp.StatusCode, string(body)
}

// waitExit waits for the process to end and returns its exit code.
func (e *exporter) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-e.exited:
	case <-time.After(timeout):
		t.Fatalf("exporter still running after %v:\n%s", timeout, e.output.String())
	}
	var exitErr *exec.ExitError
	if errors.As(e.err, &exitErr) {
		return exitErr.ExitCode()
	}
	if e.err != nil {
		t.Fatalf("waiting for exporter: %v", e.err)
	}
	return 0
}

// runExporter runs the binary to completion with a timeout and returns its
// exit code and combined output.
func runExporter(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exporterBinary(t), args...)
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exitErr) && ctx.Err() == nil:
		return exitErr.ExitCode(), string(out)
	default:
		t.Fatalf("running exporter %v: %v\n%s", args, err, out)
		return -1, ""
	}
}

// syncBuffer collects a child's output while tests read it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// metricValue returns the value of the sample whose name and labels match
// exactly as written in the exposition (e.g.
// `ipsec_scrape_collector_success{collector="sa"}`), and whether it exists.
func metricValue(exposition, series string) (string, bool) {
	for _, line := range strings.Split(exposition, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return strings.TrimSpace(rest), true
		}
	}
	return "", false
}

// defaultCollectors lists the collectors enabled by default, read from the
// binary's --help (each registers --[no-]collector.NAME "... (default:
// enabled)"), so these tests follow the collectors as they are added.
func defaultCollectors(t *testing.T) []string {
	t.Helper()
	code, out := runExporter(t, "--help")
	if code != 0 {
		t.Fatalf("--help exited %d:\n%s", code, out)
	}
	// kingpin wraps long descriptions onto indented lines: join each flag's
	// lines before reading its default.
	var flags []string
	for _, line := range strings.Split(out, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "-"):
			flags = append(flags, trimmed)
		case len(flags) > 0 && trimmed != "" && strings.HasPrefix(line, " "):
			flags[len(flags)-1] += " " + trimmed
		}
	}
	var names []string
	for _, flag := range flags {
		fields := strings.Fields(flag)
		if !strings.HasPrefix(fields[0], "--[no-]collector.") {
			continue
		}
		name := strings.TrimPrefix(fields[0], "--[no-]collector.")
		if strings.Contains(name, ".") || !strings.Contains(flag, "(default: enabled)") {
			continue // a collector's option, or off by default
		}
		names = append(names, name)
	}
	return names
}
