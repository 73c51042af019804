// Package scenario builds IPsec scenarios inside a lab VM for TestLab tests:
// network namespaces joined by veth, ESP security associations and policies,
// traffic and provoked failures, and readers for the kernel's counters.
// Everything it creates is removed with t.Cleanup, so many tests can run one
// after the other in one VM. It is test-only code: production code never
// imports it.
package scenario

import (
	"os"
)

// InVM reports whether we run inside a lab VM (the init script sets
// IPSEC_LAB=1).
func InVM() bool { return os.Getenv("IPSEC_LAB") == "1" }

// RequireVM skips t outside a lab VM. Every TestLab test starts with it.
func RequireVM(t TB) {
	t.Helper()
	if !InVM() {
		t.Skip("needs a lab kernel: run `make test-vm` (go run ./lab/cmd/ipsec-lab test)")
	}
}

// Kernel is the lab kernel's short name ("6.1", "6.12"), empty outside the lab.
func Kernel() string { return os.Getenv("IPSEC_LAB_KERNEL") }

// ExporterBin is the path of the exporter binary inside the VM.
func ExporterBin() string { return os.Getenv("IPSEC_EXPORTER_BIN") }

// IPBin is the path of Debian's iproute2 ip inside the VM (busybox's ip has
// no xfrm support, so call this one by full path).
func IPBin() string { return os.Getenv("IPSEC_LAB_IP") }
