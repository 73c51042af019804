package deploy_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// testNetns is a network namespace of the test's own (loopback up, nothing
// else), so the exporter can be run against interfaces and XFRM state the
// test makes without touching the host's. t.Cleanup removes it.
type testNetns struct {
	name   string
	handle netns.NsHandle
}

var netnsSeq atomic.Int32

func newTestNetns(t *testing.T) *testNetns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	n := &testNetns{name: fmt.Sprintf("deploytest%d-%d", os.Getpid(), netnsSeq.Add(1))}
	runCmd(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.name).Run() })
	h, err := netns.GetFromName(n.name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	n.handle = h
	n.ip(t, "link", "set", "lo", "up")
	return n
}

// ip runs `ip -n NAME args...`.
func (n *testNetns) ip(t *testing.T, args ...string) string {
	t.Helper()
	return runCmd(t, "ip", append([]string{"-n", n.name}, args...)...)
}

// do runs fn on an OS thread that is in the namespace. Sockets fn opens
// belong to the namespace, and so does a process fn starts: a child
// inherits the network namespace of the thread that forks it.
func (n *testNetns) do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(n.handle); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	err = fn()
	if netns.Set(orig) == nil {
		// Only a thread back in its own namespace may serve other goroutines.
		runtime.UnlockOSThread()
	}
	return err
}

// client is an HTTP client whose connections are made inside the namespace.
func (n *testNetns) client(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: n.transport(nil, "")}
}

// transport makes its connections inside the namespace, with TLS if
// tlsConfig is not nil, from the loopback address source if not "" (any of
// 127.0.0.0/8, so that tests can play several clients).
func (n *testNetns) transport(tlsConfig *tls.Config, source string) *http.Transport {
	dialer := &net.Dialer{}
	if source != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	return &http.Transport{
		TLSClientConfig: tlsConfig,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := n.do(func() (err error) {
				conn, err = dialer.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}
}

func runCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// addPolicies installs n IPsec policies in the namespace (with ip -batch:
// thousands take a second), so that a scrape has real kernel state to dump.
// Policies, not SAs: the host kernel has no ESP, so it refuses ESP SAs.
// Their peers are spread over 10.64.0.0/10.
func (n *testNetns) addPolicies(t *testing.T, count int) {
	t.Helper()
	var b strings.Builder
	for i := range count {
		peer := fmt.Sprintf("10.%d.%d.%d", 64+i>>16&63, i>>8&255, i&255)
		fmt.Fprintf(&b, "xfrm policy add src 10.0.0.1/32 dst %s/32 dir out tmpl src 10.0.0.1 dst %s proto esp reqid %d mode tunnel\n",
			peer, peer, 1+i%1000)
	}
	path := filepath.Join(t.TempDir(), "policies.batch")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	n.ip(t, "-batch", path)
}
