package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/lab/testtool"
)

// TestInvalidUTF8Names: names are bytes to the kernel, not UTF-8. Any
// process with CAP_NET_ADMIN on the node can name an interface "ve\xff",
// and a netns file "bad\xffname" can appear in the netns directory; each
// used to panic the exporter inside its first scrape, at every restart. The
// real binary, in a namespace of the test's own with such an interface and
// such a namespace file, must serve every scrape with the names repaired
// (invalid bytes written as \xNN), count the repairs, and keep running.
func TestInvalidUTF8Names(t *testing.T) {
	ns := newTestNetns(t)
	const ifname, nsname = "ve\xff", "bad\xffname"
	ns.ip(t, "link", "add", ifname, "type", "veth", "peer", "name", "vepeer")
	ns.ip(t, "link", "set", "vepeer", "up")
	ns.ip(t, "link", "set", ifname, "up")

	// Another namespace than the exporter's own: a second name of its own
	// namespace is read once, as netns="".
	other := newTestNetns(t)
	dir := t.TempDir()
	nsfile := filepath.Join(dir, nsname)
	if err := os.WriteFile(nsfile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("/var/run/netns/"+other.name, nsfile, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mounting the namespace at %q: %v", nsfile, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(nsfile, unix.MNT_DETACH) })

	e := startExporterIn(t, ns, "--collector.netns.dir="+dir)
	e.waitListening(t)
	repairs := 0.0
	for i := range 3 {
		code, body := e.scrape(t)
		if code != 200 {
			t.Fatalf("scrape %d: status %d\n%s", i, code, body)
		}
		for _, want := range []string{`interface="ve\\xff"`, `netns="bad\\xffname"`} {
			if !strings.Contains(body, want) {
				t.Errorf("scrape %d lacks the repaired label %s", i, want)
			}
		}
		for _, name := range defaultCollectors(t) {
			if v, _ := metricValue(body, `ipsec_scrape_collector_success{collector="`+name+`"}`); v != "1" {
				t.Errorf("scrape %d: collector %s success %q, want 1", i, name, v)
			}
		}
		v, ok := metricValue(body, "ipsec_scrape_label_values_repaired_total")
		n := parseFloat(t, v)
		if !ok || n <= repairs {
			t.Errorf("scrape %d: ipsec_scrape_label_values_repaired_total %q, want more than %v", i, v, repairs)
		}
		repairs = n
		if i == 0 {
			promtoolCheck(t, body)
		}
	}
	select {
	case <-e.exited:
		t.Fatalf("the exporter exited: %v", e.err)
	default:
	}
	if out := e.output.String(); strings.Contains(out, "panic") {
		t.Errorf("the exporter panicked:\n%s", out)
	}
}

func parseFloat(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Errorf("not a number: %q", s)
	}
	return v
}

// promtoolCheck runs `promtool check metrics` on an exposition: it must
// parse, and follow Prometheus' naming conventions.
func promtoolCheck(t *testing.T, exposition string) {
	t.Helper()
	promtool := testtool.Find(t, "promtool", "prometheus")
	if promtool == "" {
		return
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
