package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInsnprofLoads builds bench/qemu/insnprof.c as scripts/bench.sh does
// and has the installed qemu load it: the plugin's own API declarations
// (plugin_api.h) must be accepted by this QEMU's plugin loader, which
// checks the version, and install must refuse to run without an output.
// What the plugin counts is checked inside the lab by
// TestLabBenchInstrument (make bench).
func TestInsnprofLoads(t *testing.T) {
	for _, tool := range []string{"gcc", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/install-deps.sh installs qemu; gcc: apt-get install gcc)", tool)
		}
	}
	dir := t.TempDir()
	so := filepath.Join(dir, "insnprof.so")
	build := exec.Command("gcc", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-shared", "-fPIC",
		"-fvisibility=hidden", "-o", so, "qemu/insnprof.c")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building insnprof: %v\n%s", err, out)
	}
	profile := filepath.Join(dir, "profile.txt")
	qemu := func(plugin string) string {
		// No kernel to boot: qemu installs the plugins, then fails on the
		// kernel image, which is all this needs.
		out, _ := exec.Command("qemu-system-x86_64", "-nodefaults", "-display", "none", "-accel", "tcg,thread=single",
			"-icount", "shift=0,sleep=off", "-plugin", plugin, "-kernel", filepath.Join(dir, "no-kernel")).CombinedOutput()
		return string(out)
	}
	out := qemu(so + ",out=" + profile)
	b, err := os.ReadFile(profile)
	if err != nil {
		t.Fatalf("qemu did not install the plugin (no profile written): %s", out)
	}
	if !strings.HasPrefix(string(b), "insnprof 1 target x86_64 vcpus 1 api ") {
		t.Errorf("profile header %q", b)
	}
	if out := qemu(so); !strings.Contains(out, "needs out=FILE") {
		t.Errorf("without out= the plugin must refuse to install; qemu said: %s", out)
	}
}
