// Package pintest gives tests a BPF filesystem of their own.
package pintest

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/pin"
)

// Dir mounts a bpffs on a temporary directory for the test, unmounted (and
// with it every pin) at its end. It skips without the privilege to mount.
func Dir(t testing.TB) pin.Dir {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		t.Skipf("cannot mount a BPF filesystem (needs CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return pin.Dir(dir)
}
