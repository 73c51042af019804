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
	Accel       string // "tcg" or "kvm"
	CPUs        int
	MemoryMB    int
	Console     string        // host file for the console (ttyS0)
	Results     string        // host file for the results port (ttyS1)
	HostFwd     []string      // user-mode networking forwards, e.g. "tcp:127.0.0.1:10871-:10871"
	Timeout     time.Duration // the whole run; the VM is killed after it
	BootTimeout time.Duration // until the init script reports itself
	OnLine      func(line string)
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
	if accel == "tcg" && vm.Kernel.Spec.TCGSingleThread {
		accel = "tcg,thread=single"
	}
	args := []string{
		"-nodefaults", "-display", "none", "-no-reboot",
		"-accel", accel, "-cpu", "max",
		"-smp", strconv.Itoa(vm.CPUs), "-m", strconv.Itoa(vm.MemoryMB),
		"-kernel", vm.Kernel.Vmlinuz, "-initrd", vm.Initrd,
		// panic=-1 reboots at once on a panic, which -no-reboot turns into exit;
		// oops and soft lockups panic, so a broken kernel ends the VM early.
		"-append", "console=ttyS0 loglevel=5 panic=-1 oops=panic softlockup_panic=1 random.trust_cpu=on rdinit=/init",
		"-serial", "file:" + vm.Console,
		"-serial", "file:" + vm.Results,
	}
	if len(vm.HostFwd) > 0 {
		nd := "user,id=n0"
		for _, f := range vm.HostFwd {
			nd += ",hostfwd=" + f
		}
		args = append(args, "-netdev", nd, "-device", "virtio-net-pci,netdev=n0")
	}
	return args
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
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", vm.args()...)
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
	bootHung := false
	go func() {
		select {
		case <-initSeen:
		case <-done:
		case <-time.After(vm.BootTimeout):
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
