package rules

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite examples/prometheus/rules.yml from the template and settings")

// shipped is the rules file users take, relative to this package.
const shipped = "../../examples/prometheus/rules.yml"

// TestShippedRulesMatchTemplate keeps the committed rules.yml and its source
// (template + Default settings) from drifting apart.
func TestShippedRulesMatchTemplate(t *testing.T) {
	want, err := Render(Default)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(shipped, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(shipped)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the template rendered with Default settings: run `go test ./rules -update` in dashboards/", shipped)
	}
}

// TestPromtool runs Debian's promtool on the shipped rules: `check rules`
// (syntax, PromQL, templates), `check config` on the lab's Prometheus
// configuration, and `test rules` on every unit test file.
func TestPromtool(t *testing.T) {
	promtool := lookPromtool(t)
	out, err := exec.Command(promtool, "check", "rules", shipped).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	out, err = exec.Command(promtool, "check", "config", "../../examples/prometheus/prometheus-lab.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config prometheus-lab.yml: %v\n%s", err, out)
	}
	tests, err := filepath.Glob("../../examples/prometheus/tests/*.yml")
	if err != nil || len(tests) == 0 {
		t.Fatalf("no promtool unit tests found (%v)", err)
	}
	args := append([]string{"test", "rules"}, tests...)
	out, err = exec.Command(promtool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// TestShortSettingsRender checks the fast variant the end-to-end test uses:
// a group interval appears and promtool accepts it.
func TestShortSettingsRender(t *testing.T) {
	s := Default
	s.EvaluationInterval = "1s"
	s.RateWindow = "10s"
	s.DecryptFailureFor = "2s"
	b, err := Render(s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("interval: 1s")) || !bytes.Contains(b, []byte("[10s]")) {
		t.Fatalf("short settings not rendered:\n%s", b)
	}
	path := filepath.Join(t.TempDir(), "rules.yml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(lookPromtool(t), "check", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// lookPromtool finds promtool. CI installs Debian's prometheus package, so a
// missing promtool fails there; set IPSEC_SKIP_PROMTOOL=1 to skip locally.
func lookPromtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("IPSEC_SKIP_PROMTOOL") != "" {
			t.Skip("promtool not installed (package prometheus)")
		}
		t.Fatal("promtool not found: install Debian's prometheus package (scripts/install-deps.sh)")
	}
	return path
}
