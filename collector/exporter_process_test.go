package collector

import (
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// exporterProcess is the real exporter binary, run by a lab test.
type exporterProcess struct {
	cmd    *exec.Cmd
	addr   string
	client *http.Client
	logs   *strings.Builder
	done   chan struct{} // closed when the process has exited
}

// startExporter runs the exporter (scenario.ExporterBin) with args on a
// loopback port, inside n (its own namespace, netns="", is then n) or, with
// n nil, in the VM's; it is killed at cleanup if still running.
func startExporter(t *testing.T, n *scenario.Netns, args ...string) *exporterProcess {
	t.Helper()
	const addr = "127.0.0.1:10871"
	argv := append([]string{"--web.listen-address=" + addr}, args...)
	cmd := exec.Command(scenario.ExporterBin(), argv...)
	dial := (&net.Dialer{}).DialContext
	if n != nil {
		cmd = exec.Command(scenario.IPBin(), append([]string{"netns", "exec", n.Name, scenario.ExporterBin()}, argv...)...)
		dial = func(ctx context.Context, network, address string) (net.Conn, error) {
			var c net.Conn
			err := n.Do(func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, network, address)
				return err
			})
			return c, err
		}
	}
	x := &exporterProcess{cmd: cmd, addr: addr, logs: &strings.Builder{}, done: make(chan struct{}),
		client: &http.Client{Timeout: 3 * time.Minute, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}}
	cmd.Stdout, cmd.Stderr = x.logs, x.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		close(x.done)
	}()
	t.Cleanup(func() {
		x.stop(t, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("exporter log:\n%s", x.logs.String())
		}
	})
	return x
}

// stop sends sig and waits for the process to end.
func (x *exporterProcess) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	select {
	case <-x.done:
		return
	default:
	}
	_ = x.cmd.Process.Signal(sig)
	select {
	case <-x.done:
	case <-time.After(time.Minute):
		t.Errorf("exporter still running a minute after %s", sig)
		_ = x.cmd.Process.Kill()
		<-x.done
	}
}

// scrape returns one /metrics body, waiting up to three minutes for the
// exporter to answer (loading the verdict programs takes a minute under
// emulation on a loaded host).
func (x *exporterProcess) scrape(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		resp, err := x.client.Get("http://" + x.addr + "/metrics")
		if err == nil {
			body, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			return string(body)
		}
		select {
		case <-x.done:
			t.Fatalf("exporter exited: %v", x.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporter not answering: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// samples scrapes and parses the exposition.
func (x *exporterProcess) samples(t *testing.T) samples {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(x.scrape(t)))
	if err != nil {
		t.Fatal(err)
	}
	s := samples{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			s[sampleKey(mf.GetName(), m.GetLabel())] = sampleValue(m)
		}
	}
	return s
}

// waitFor scrapes until the sample has the value, for up to 30 s.
func (x *exporterProcess) waitFor(t *testing.T, name string, want map[string]string, value float64) samples {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := x.samples(t)
		got, ok := s.find(t, name, want)
		if ok && got == value {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v (present %v), want %v", name, want, got, ok, value)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
