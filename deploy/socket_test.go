package deploy_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSystemdSocketActivation: with --web.systemd-socket the exporter
// serves on the socket systemd passes (here systemd-socket-activate, which
// passes its listening socket as systemd does and starts the exporter at
// the first connection).
func TestSystemdSocketActivation(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed (package systemd)")
	}
	ns := newTestNetns(t)
	e := &exporter{addr: freeAddr(t), ns: ns, output: &syncBuffer{}, exited: make(chan struct{})}
	e.cmd = exec.Command(activate, "-l", e.addr, "--", exporterBinary(t), "--web.systemd-socket", "--collector.netns.dir=")
	e.cmd.Stdout, e.cmd.Stderr = e.output, e.output
	if err := ns.do(e.cmd.Start); err != nil {
		t.Fatal(err)
	}
	go func() { e.err = e.cmd.Wait(); close(e.exited) }()
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			t.Logf("output:\n%s", e.output.String())
		}
	})
	e.waitListening(t) // systemd-socket-activate's socket: the exporter starts now
	code, body := e.scrape(t)
	if code != 200 || !strings.Contains(body, "ipsec_exporter_build_info") {
		t.Fatalf("scrape through the activated socket: status %d\n%s", code, body)
	}
	if !strings.Contains(e.output.String(), `msg=listening address=`+e.addr) {
		t.Errorf("the exporter does not say it serves the passed socket %s", e.addr)
	}
}
