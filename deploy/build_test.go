package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestMakeBuildVersion: the binary `make build` makes carries VERSION's
// version and the checkout's revision and branch, in --version and in
// ipsec_exporter_build_info, as a release built by promu does.
func TestMakeBuildVersion(t *testing.T) {
	if os.Getenv("IPSEC_EXPORTER_BIN") != "" {
		t.Skip("a given binary: make build is a host test")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	raw, err := os.ReadFile(filepath.Join(repoRoot, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimSpace(string(raw))
	bin := filepath.Join(t.TempDir(), "ipsec_exporter")
	if out, err := exec.Command("make", "-C", repoRoot, "build", "BINARY="+bin).CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	revision, branch := "unknown", "unknown"
	if out, err := exec.Command("git", "-C", repoRoot, "rev-parse", "HEAD").Output(); err == nil {
		revision = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "-C", repoRoot, "rev-parse", "--abbrev-ref", "HEAD").Output(); err == nil {
		branch = strings.TrimSpace(string(out))
	}
	t.Setenv("IPSEC_EXPORTER_BIN", bin) // what exporterBinary hands out

	code, out := runExporter(t, "--version")
	want := "ipsec_exporter, version " + version + " (branch: " + branch + ", revision: " + revision + ")"
	if code != 0 || !strings.Contains(out, want) {
		t.Errorf("--version exited %d, want a line %q:\n%s", code, want, out)
	}
	if !regexp.MustCompile(`build date: +20[0-9]{6}-[0-9]{2}:[0-9]{2}:[0-9]{2}\n`).MatchString(out) {
		t.Errorf("--version has no build date:\n%s", out)
	}

	e := startExporter(t, nil)
	e.waitListening(t)
	status, body := e.scrape(t)
	if status != 200 {
		t.Fatalf("scrape: HTTP %d", status)
	}
	var info string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "ipsec_exporter_build_info{") {
			info = line
		}
	}
	for _, label := range []string{`version="` + version + `"`, `revision="` + revision + `"`, `branch="` + branch + `"`} {
		if !strings.Contains(info, label) {
			t.Errorf("ipsec_exporter_build_info lacks %s: %q", label, info)
		}
	}
}
