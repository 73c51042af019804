package deploy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestBadFlagValues: every flag is checked before any collector loads or
// attaches anything. A bad value exits with status 2 and a message naming
// the flag, and leaves nothing behind: the exporter runs in a namespace of
// the test's own with an interface the wire program would attach to as a tc
// filter (which, unlike a tcx link, outlives the process), and the test
// checks the interface has no filter afterwards. --web.telemetry-path=metrics
// used to panic after the collectors had started, leaving that filter.
func TestBadFlagValues(t *testing.T) {
	ns := newTestNetns(t)
	ns.ip(t, "link", "add", "flagtest0", "type", "veth", "peer", "name", "flagtest1")
	ns.ip(t, "link", "set", "flagtest0", "up")
	ns.ip(t, "link", "set", "flagtest1", "up")

	cases := []struct{ flag, value, want string }{
		{"web.telemetry-path", "metrics", `must be an absolute URL path starting with "/"`},
		{"web.telemetry-path", "", `must be an absolute URL path starting with "/"`},
		{"web.max-requests", "abc", `invalid value "abc"`},
		{"web.max-requests", "-1", "must be 0 (no limit) or more"},
		{"web.max-connections", "0", "must be 1 or more, got 0"},
		{"web.read-timeout", "0s", "must be 1s or more, got 0s"},
		{"web.write-timeout", "abc", `invalid value "abc"`},
		{"web.idle-timeout", "500ms", "must be 1s or more, got 500ms"},
		{"web.listen-address", "10871", `must be [host]:port or vsock://:port, got "10871"`},
		{"collector.sa.max-series", "-5", "must be 0 (no limit) or between 1 and 1000000, got -5"},
		{"collector.events.socket-buffer", "100", "must be 0 (the system default) or between 65536 and 1073741824 bytes"},
		{"collector.vici.timeout", "-1s", "must be between 0 (the default, 5s) and 1m, got -1s"},
		{"collector.vici.max-sas", "-1", "must be 0 (no limit) or more, got -1"},
		{"bpf.verdict-map-size", "20000000", "must be between 1 and 262144 counter keys, got 20000000"},
		{"bpf.verdict-map-size", "0", "must be between 1 and 262144 counter keys, got 0"},
		// Files that used to be read without bound (1.7 GiB in 6 s from
		// /dev/zero; a million-line YAML file peaked at 671 MiB).
		{"peers.names-file", "/dev/zero", "/dev/zero: not a regular file"},
		{"collector.verdict.peer-names", "/dev/zero", "/dev/zero: not a regular file"},
		{"peers.names-file", bigNamesFile(t), "bytes, more than the 1048576 a peer-names file may have"},
		{"bpf.pin-path", "/tmp/ipsec_exporter", "is not on a BPF filesystem"},
		{"bpf.pin-path", "sys/fs/bpf", "must be an absolute path on a BPF filesystem"},
	}
	// Every numeric flag the binary has, whoever owns it, names itself
	// when given a value its type cannot parse.
	for _, f := range numericFlags(t) {
		cases = append(cases, struct{ flag, value, want string }{f, "abc", `invalid value "abc"`})
	}
	for _, c := range cases {
		e := startExporterIn(t, ns, "--collector.wire.attach-mode=tc", "--collector.netns.dir=",
			"--"+c.flag+"="+c.value)
		code := e.waitExit(t, 60*time.Second)
		out := e.output.String()
		if code != 2 {
			t.Errorf("--%s=%q: exit status %d, want 2:\n%s", c.flag, c.value, code, out)
		}
		if !strings.Contains(out, "--"+c.flag+": ") || !strings.Contains(out, c.want) {
			t.Errorf("--%s=%q: the message does not name the flag and the bound (%q):\n%s", c.flag, c.value, c.want, out)
		}
		for _, started := range []string{"starting ipsec_exporter", "wire program attached", "enabled collectors", "panic"} {
			if strings.Contains(out, started) {
				t.Errorf("--%s=%q: %q in the output: something started before the flags were checked:\n%s",
					c.flag, c.value, started, out)
			}
		}
		for _, dev := range []string{"flagtest0", "flagtest1"} {
			for _, dir := range []string{"ingress", "egress"} {
				if filters := strings.TrimSpace(runCmd(t, "tc", "-n", ns.name, "filter", "show", "dev", dev, dir)); filters != "" {
					t.Fatalf("--%s=%q left a tc filter on %s %s:\n%s", c.flag, c.value, dev, dir, filters)
				}
			}
		}
	}
}

// bigNamesFile writes a peer-names file of a million YAML lines (20 MB).
func bigNamesFile(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for i := range 1_000_000 {
		fmt.Fprintf(&b, "10.%d.%d.%d: node-%d\n", i>>16&255, i>>8&255, i&255, i)
	}
	path := filepath.Join(t.TempDir(), "peers.yml")
	writeFile(t, path, b.String())
	return path
}

// numericFlags lists the flags whose --help placeholder is a number (their
// default), read from the binary so that new flags are covered as they come.
func numericFlags(t *testing.T) []string {
	t.Helper()
	code, out := runExporter(t, "--help")
	if code != 0 {
		t.Fatalf("--help exited %d:\n%s", code, out)
	}
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^\s+--([a-z0-9._-]+)=(-?[0-9][0-9.]*)\s`).FindAllStringSubmatch(out, -1) {
		flags = append(flags, m[1])
	}
	if len(flags) == 0 {
		t.Fatalf("no numeric flag found in --help:\n%s", out)
	}
	return flags
}

// TestTelemetryPath: the metrics page is served at exactly the path given,
// whatever characters it has (a path with "{" used to panic Go's ServeMux
// pattern parser after the collectors had started), and the landing page at
// "/" links to it.
func TestTelemetryPath(t *testing.T) {
	ns := newTestNetns(t)
	const path = "/ipsec{metrics"
	e := startExporterIn(t, ns, "--collector.netns.dir=", "--web.telemetry-path="+path)
	e.waitListening(t)
	client := e.client(60 * time.Second)
	for target, want := range map[string]int{
		"/ipsec%7Bmetrics": http.StatusOK, "/metrics": http.StatusNotFound,
		"/ipsec%7Bmetrics/": http.StatusNotFound, "/": http.StatusOK,
	} {
		resp, err := client.Get("http://" + e.addr + target)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: status %d, want %d", target, resp.StatusCode, want)
		}
		if target == "/ipsec%7Bmetrics" && !strings.Contains(string(body), "ipsec_exporter_build_info") {
			t.Errorf("GET %s: no metrics", target)
		}
		if target == "/" && !strings.Contains(string(body), path) {
			t.Errorf("the landing page does not link to %s", path)
		}
	}
}

// TestBusyPort: an address the exporter cannot listen on stops it before
// any collector starts, naming the address.
func TestBusyPort(t *testing.T) {
	ns := newTestNetns(t)
	var l net.Listener
	if err := ns.do(func() (err error) { l, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e := startExporterIn(t, ns, "--collector.wire.attach-mode=tc", "--collector.netns.dir=",
		"--web.listen-address="+l.Addr().String())
	code := e.waitExit(t, 60*time.Second)
	out := e.output.String()
	if code == 0 || !strings.Contains(out, l.Addr().String()) || !strings.Contains(out, "address already in use") {
		t.Errorf("exit status %d; the message does not name the busy address %s:\n%s", code, l.Addr(), out)
	}
	for _, started := range []string{"wire program attached", "enabled collectors", "panic"} {
		if strings.Contains(out, started) {
			t.Errorf("%q in the output: collectors started before the listener was open:\n%s", started, out)
		}
	}
}
