package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ResolveAccel turns "auto" into "kvm" or "tcg". /dev/kvm existing proves
// little (on some build machines every KVM boot fails, early or after a
// minute), so auto boots k once under KVM with a tiny initramfs, runs a
// little work in it, and takes KVM only if that reached init and powered off
// cleanly.
func ResolveAccel(ctx context.Context, accel string, k *Kernel, dir string, logf func(string, ...any)) string {
	if accel != "auto" {
		return accel
	}
	if k.Arch.Foreign() {
		logf("%s kernel on this host: software emulation (tcg)", k.Arch.Name)
		return "tcg"
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		logf("no usable /dev/kvm (%v): software emulation (tcg)", err)
		return "tcg"
	}
	f.Close()
	if err := probeKVM(ctx, k, dir); err != nil {
		first, _, _ := strings.Cut(err.Error(), "\n")
		logf("KVM probe failed, using software emulation (tcg): %s", first)
		return "tcg"
	}
	logf("KVM works: using it")
	return "kvm"
}

func probeKVM(ctx context.Context, k *Kernel, dir string) error {
	busybox, err := staticBusybox()
	if err != nil {
		return err
	}
	initrd := filepath.Join(dir, "kvm-probe.cpio")
	defer os.Remove(initrd)
	out, err := os.Create(initrd)
	if err != nil {
		return err
	}
	c := newCPIOWriter(out)
	init := fmt.Sprintf(`#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
stty -F /dev/ttyS1 raw -echo 2>/dev/null
echo "%[1]sinit" >/dev/ttyS1
i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done
echo "%[1]sdone" >/dev/ttyS1
poweroff -f
`, Marker)
	for _, step := range []func() error{
		func() error { return c.Dir("/proc") },
		func() error { return c.Dir("/dev") },
		func() error { return c.CharDev("/dev/console", 5, 1) },
		func() error { return c.CharDev("/dev/ttyS1", 4, 65) },
		func() error { return c.File("/init", 0o755, []byte(init)) },
		func() error { return c.CopyFile("/bin/busybox", busybox) },
		c.Close,
	} {
		if err := step(); err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Close(); err != nil {
		return err
	}
	done := false
	vm := &VM{
		Kernel: k, Initrd: initrd, Accel: "kvm", CPUs: 2, MemoryMB: 512,
		Console: filepath.Join(dir, "kvm-probe-console.log"), Results: filepath.Join(dir, "kvm-probe.log"),
		Timeout: 60 * time.Second, BootTimeout: 30 * time.Second,
		OnLine: func(l string) { done = done || strings.HasPrefix(l, Marker+"done") },
	}
	o := vm.Run(ctx)
	switch {
	case o.Err != nil:
		return o.Err
	case !o.ReachedInit || !done:
		return fmt.Errorf("%s", describe(o))
	}
	return nil
}
