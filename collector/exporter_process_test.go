package collector

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os/exec"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// exporterProcess is the real exporter binary, run by a lab test.
type exporterProcess struct {
	cmd    *exec.Cmd
	addr   string
	client *http.Client
	logs   *syncBuffer
	done   chan struct{} // closed when the process has exited
}

// exporterPort numbers the exporters a test binary starts: each has a port
// of its own, so one still running or closing never holds the next's.
var exporterPort atomic.Int32

// startExporter runs the exporter (scenario.ExporterBin) with args on a
// loopback port, inside n (its own namespace, netns="", is then n) or, with
// n nil, in the VM's; it is killed at cleanup if still running.
func startExporter(t *testing.T, n *scenario.Netns, args ...string) *exporterProcess {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", 10900+exporterPort.Add(1))
	argv := append([]string{"--web.listen-address=" + addr}, args...)
	cmd := exec.Command(scenario.ExporterBin(), argv...)
	dial := (&net.Dialer{}).DialContext
	if n == nil {
		// The VM's own loopback, which nothing else brings up.
		if lo, err := netlink.LinkByName("lo"); err == nil {
			_ = netlink.LinkSetUp(lo)
		}
	} else {
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
	x := &exporterProcess{cmd: cmd, addr: addr, logs: &syncBuffer{}, done: make(chan struct{}),
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

// startLabExporter runs the exporter in the VM's namespace, without the
// wire collector, watching the given namespaces (nil: every one under
// /run/netns, found at each scrape, so one exporter serves all subtests),
// and waits until it answers: its event listeners run.
func startLabExporter(t *testing.T, ns []*scenario.Netns, args ...string) *exporterProcess {
	t.Helper()
	argv := []string{"--collector.netns.dir=/run/netns", "--no-collector.wire"}
	for _, n := range ns {
		argv = append(argv, "--collector.netns.name="+n.Name)
	}
	x := startExporter(t, nil, append(argv, args...)...)
	x.scrape(t)
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
	return samplesOf(maps.Values(parseExposition(t, x.scrape(t))))
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
