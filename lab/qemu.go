package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Marker starts every line the init script writes about itself to the
// results port; everything else there is test output.
const Marker = "@@LAB "

// VM is one qemu boot of a lab kernel with an initramfs.
type VM struct {
	Kernel      *Kernel
	Initrd      string
	Accel       string // "tcg" or "kvm" (ResolveAccel turns "auto" into one)
	CPUs        int
	MemoryMB    int
	Console     string        // host file for the console (the Arch's Console)
	Results     string        // host file for the results port (its ResultsDevice)
	HostFwd     []string      // user-mode networking forwards, e.g. "tcp:127.0.0.1:10871-:10871"
	Timeout     time.Duration // the whole run; the VM is killed after it
	BootTimeout time.Duration // until the init script reports itself (0: DefaultBootTimeout)
	OnLine      func(line string)
}

// DefaultBootTimeout is how long a boot may take to reach init before the
// VM is killed (and, in the test runner, retried once). Under TCG on a
// loaded 2-core machine a 6.1 boot took 95 s; an instruction-counted VM is
// slower still. IPSEC_LAB_BOOT_TIMEOUT (a Go duration) overrides it for
// every VM the lab boots; ipsec-lab's -boot-timeout flag defaults to it.
const DefaultBootTimeout = 3 * time.Minute

// BootTimeoutFromEnv is IPSEC_LAB_BOOT_TIMEOUT, or DefaultBootTimeout when it
// is unset.
func BootTimeoutFromEnv() (time.Duration, error) {
	v := os.Getenv("IPSEC_LAB_BOOT_TIMEOUT")
	if v == "" {
		return DefaultBootTimeout, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("IPSEC_LAB_BOOT_TIMEOUT=%q: want a positive duration such as 5m", v)
	}
	return d, nil
}

// Outcome says how a boot ended.
type Outcome struct {
	ReachedInit bool
	BootTime    time.Duration // qemu start to the init script's first line
	TimedOut    bool
	BootHung    bool // killed because init never reported
	Err         error
	Wall        time.Duration
}

func (vm *VM) args() []string {
	accel := vm.Accel
	if accel == "" {
		accel = "tcg"
	}
	arch := vm.Kernel.Arch
	cpu := arch.TCGCPU
	if accel == "kvm" {
		cpu = "host" // "max" makes qemu 7.2 abort under some KVMs (MSR 0x10a)
	}
	if accel == "tcg" && vm.Kernel.Spec.TCGSingleThread {
		accel = "tcg,thread=single"
	}
	args := append(slices.Clone(arch.Machine),
		"-nodefaults", "-display", "none", "-no-reboot",
		"-accel", accel, "-cpu", cpu,
		"-smp", strconv.Itoa(vm.CPUs), "-m", strconv.Itoa(vm.MemoryMB),
		"-kernel", vm.Kernel.Vmlinuz, "-initrd", vm.Initrd,
		"-append", vm.cmdline(accel),
		"-serial", "file:"+vm.Console,
	)
	args = append(args, arch.ResultsPort(vm.Results)...)
	if len(vm.HostFwd) > 0 {
		nd := "user,id=n0"
		for _, f := range vm.HostFwd {
			nd += ",hostfwd=" + f
		}
		args = append(args, "-netdev", nd, "-device", "virtio-net-pci,netdev=n0")
	}
	return args
}

// cmdline is the kernel command line. panic=-1 reboots at once on a panic,
// which -no-reboot turns into exit; oopses and soft lockups panic, so a
// broken kernel ends the VM early instead of at the timeout.
func (vm *VM) cmdline(accel string) string {
	c := "console=" + vm.Kernel.Arch.Console + " loglevel=5 panic=-1 oops=panic softlockup_panic=1 random.trust_cpu=on rdinit=/init"
	if strings.HasPrefix(accel, "tcg") && vm.Kernel.Arch.Name == "amd64" {
		if khz := hostTSCkHz(); khz > 0 {
			// Under TCG the guest's TSC is the host's. On a loaded host the
			// kernel's PIT calibration came out 33x too low, the guest clock
			// ran 33x too fast (timeouts and the lockup detector with it);
			// tell it the frequency instead.
			c += " tsc_early_khz=" + strconv.Itoa(khz)
		}
	}
	return c
}

// hostTSCkHz is the host's TSC frequency from /proc/cpuinfo, if its TSC
// runs at a constant rate, else 0.
func hostTSCkHz() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	var mhz float64
	constant := false
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "cpu MHz":
			if mhz == 0 {
				mhz, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
			}
		case "flags":
			constant = constant || slices.Contains(strings.Fields(v), "constant_tsc")
		}
		if line == "" && mhz > 0 {
			break // first CPU is enough
		}
	}
	if !constant {
		return 0
	}
	return int(mhz * 1000)
}

// Run boots the VM and waits until it powers off, times out or ctx ends.
func (vm *VM) Run(ctx context.Context) Outcome {
	for _, f := range []string{vm.Console, vm.Results} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			return Outcome{Err: err}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, vm.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, vm.Kernel.Arch.Qemu, vm.args()...)
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Outcome{Err: fmt.Errorf("qemu: %w", err)}
	}

	var (
		mu  sync.Mutex
		out Outcome
	)
	initSeen := make(chan struct{})
	var once sync.Once
	onLine := func(line string) {
		if strings.HasPrefix(line, Marker+"init") {
			mu.Lock()
			out.ReachedInit = true
			out.BootTime = time.Since(start)
			mu.Unlock()
			once.Do(func() { close(initSeen) })
		}
		if vm.OnLine != nil {
			vm.OnLine(line)
		}
	}
	done := make(chan struct{})
	tailed := make(chan struct{})
	go func() {
		tail(vm.Results, done, onLine)
		close(tailed)
	}()
	// Boot watchdog: a kernel that never starts init is killed early.
	bootTimeout := vm.BootTimeout
	if bootTimeout <= 0 {
		// A malformed variable was refused by the command already.
		bootTimeout, _ = BootTimeoutFromEnv()
		bootTimeout = max(bootTimeout, time.Second)
	}
	bootHung := false
	go func() {
		select {
		case <-initSeen:
		case <-done:
		case <-time.After(bootTimeout):
			mu.Lock()
			bootHung = true
			mu.Unlock()
			cancel()
		}
	}()
	err := cmd.Wait()
	close(done)
	<-tailed
	mu.Lock()
	defer mu.Unlock()
	out.Wall = time.Since(start)
	out.BootHung = bootHung
	if ctx.Err() != nil && !bootHung && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		out.TimedOut = true
	}
	if err != nil && ctx.Err() == nil {
		out.Err = fmt.Errorf("qemu: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if err == nil && stderr.Len() > 0 {
		// qemu exits 0 after "KVM internal error" style messages too.
		if s := strings.TrimSpace(stderr.String()); strings.Contains(s, "error") {
			out.Err = fmt.Errorf("qemu: %s", s)
		}
	}
	return out
}

// tail follows file until done is closed, calling onLine for each complete
// line (carriage returns dropped), then drains what is left.
func tail(file string, done <-chan struct{}, onLine func(string)) {
	f, err := os.Open(file)
	if err != nil {
		return
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var partial string
	for {
		line, err := r.ReadString('\n')
		partial += line
		if err == nil {
			onLine(strings.TrimRight(partial, "\r\n"))
			partial = ""
			continue
		}
		if !errors.Is(err, io.EOF) {
			return
		}
		select {
		case <-done:
			// One last read after qemu exited, then flush.
			rest, _ := io.ReadAll(r)
			partial += string(rest)
			for _, l := range strings.SplitAfter(partial, "\n") {
				if l = strings.TrimRight(l, "\r\n"); l != "" {
					onLine(l)
				}
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// LogTail returns the last n lines of a log file.
func LogTail(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
