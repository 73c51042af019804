// Package testtool finds the programs tests run (promtool, amtool,
// prometheus), with the project's one policy for a missing one: CI
// installs them (Debian's prometheus and prometheus-alertmanager packages,
// `make deps`), so a missing tool fails the test; IPSEC_SKIP_PROMTOOL=1
// lets a developer without them skip instead.
package testtool

import (
	"os"
	"os/exec"
	"testing"
)

// SkipEnv is the variable that turns a missing tool into a skip.
const SkipEnv = "IPSEC_SKIP_PROMTOOL"

// Find returns the path of name. A missing tool fails the test, or with
// SkipEnv set is logged and returns "": the caller skips what needs it.
// debianPackage is where the tool comes from, for the message.
func Find(t testing.TB, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv(SkipEnv) != "" {
		t.Logf("%s not installed (Debian package %s): its checks skipped (%s is set)", name, debianPackage, SkipEnv)
		return ""
	}
	t.Fatalf("%s not found: install Debian's %s package (make deps), or set %s=1 to skip", name, debianPackage, SkipEnv)
	return ""
}
