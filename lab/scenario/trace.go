package scenario

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
)

const tracefs = "/sys/kernel/tracing"

var probeCounter atomic.Int64

// CountCalls puts a kprobe trace event on the kernel function fn ("xfrm_output",
// or "esp4:esp_output_done" for a module's static function) and returns a
// function reading how often it ran since. It is the kernel's own evidence,
// independent of our BPF code (tracefs kprobe_profile). Removed at cleanup.
// The count is for the whole kernel, all namespaces.
func CountCalls(t TB, fn string) func() uint64 {
	t.Helper()
	name := fmt.Sprintf("lab_%s_%d", strings.NewReplacer(":", "_", ".", "_").Replace(fn), probeCounter.Add(1))
	if err := appendFile(filepath.Join(tracefs, "kprobe_events"), fmt.Sprintf("p:ipsec_lab/%s %s\n", name, fn)); err != nil {
		t.Fatalf("kprobe on %s: %v", fn, err)
	}
	enable := filepath.Join(tracefs, "events/ipsec_lab", name, "enable")
	t.Cleanup(func() {
		_ = os.WriteFile(enable, []byte("0\n"), 0)
		if err := appendFile(filepath.Join(tracefs, "kprobe_events"), "-:ipsec_lab/"+name+"\n"); err != nil {
			t.Errorf("remove kprobe %s: %v", name, err)
		}
	})
	if err := os.WriteFile(enable, []byte("1\n"), 0); err != nil {
		t.Fatalf("enable kprobe %s: %v", fn, err)
	}
	return func() uint64 {
		b, err := os.ReadFile(filepath.Join(tracefs, "kprobe_profile"))
		if err != nil {
			t.Fatalf("kprobe_profile: %v", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == name {
				n, err := strconv.ParseUint(f[1], 10, 64)
				if err != nil {
					t.Fatalf("kprobe_profile %q: %v", line, err)
				}
				return n
			}
		}
		t.Fatalf("kprobe %s not in kprobe_profile", name)
		return 0
	}
}

func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
