package scenario

import "runtime"

// FentryAttaches says whether the lab kernel attaches fentry/fexit programs
// to kernel functions, that is whether the verdict programs' auto hook mode
// must pick fentry there. Measured: every x86 lab kernel and arm64 6.12 do;
// Debian's arm64 6.1 refuses (fexit/xfrm_rcv_cb: "create raw tracepoint:
// not supported"), so there auto falls back to kprobes.
func FentryAttaches() bool {
	return runtime.GOARCH != "arm64" || Kernel() != "6.1"
}

// AutoHookMode is the verdict hook mode auto picks on the lab kernel.
func AutoHookMode() string {
	if FentryAttaches() {
		return "fentry"
	}
	return "kprobe"
}
