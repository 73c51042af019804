package verdict

import (
	"slices"
	"strings"
	"testing"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

func TestHooksForOrder(t *testing.T) {
	spec, err := loadXfrmVerdict()
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{ModeFentry, ModeKprobe} {
		hooks := hooksFor(spec, mode)
		if len(hooks) < 8 {
			t.Errorf("%s: only %d hooks", mode, len(hooks))
		}
		// The ok counters come last, after every program that sees drops.
		last := hooks[len(hooks)-len(countsOK):]
		for _, h := range last {
			if !slices.Contains(countsOK, h.Target) {
				t.Errorf("%s: last hooks are %s/%s, want the ok counters %v", mode, h.Kind, h.Target, countsOK)
			}
		}
		for _, h := range hooks {
			if !strings.Contains(strings.Join(modeKinds[mode], " "), h.Kind) {
				t.Errorf("%s: hook of another mode: %s", mode, h.Program)
			}
		}
		for _, target := range required {
			found := false
			for _, h := range hooks {
				found = found || h.Target == target
			}
			if !found {
				t.Errorf("%s: no hook on required target %s", mode, target)
			}
		}
	}
}

func TestLoadRejectsUnknownMode(t *testing.T) {
	if _, err := Load(Options{Mode: "uprobe"}); err == nil || !strings.Contains(err.Error(), "unknown hook mode") {
		t.Errorf("Load(uprobe) error = %v", err)
	}
}

// On a kernel that refuses tracing programs (this project's build machines),
// Load fails with the reason and leaves nothing behind.
func TestLoadFailsCleanlyWithoutTracing(t *testing.T) {
	if scenario.InVM() {
		t.Skip("a lab kernel loads tracing programs; the TestLab tests cover Load")
	}
	v, err := Load(Options{Mode: ModeAuto})
	if err == nil {
		_ = v.Close()
		t.Fatal("Load succeeded on a kernel that refuses tracing programs")
	}
	t.Logf("Load error (expected): %v", err)
	if !strings.Contains(err.Error(), "fentry") || !strings.Contains(err.Error(), "kprobe") {
		t.Errorf("error does not name both modes tried: %v", err)
	}
}
