package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// TestOptions configure a VM test run (`ipsec-lab test`).
type TestOptions struct {
	Kernels []KernelSpec // all of one architecture (KernelSpec.On)
	Run     string       // -test.run regexp
	Pkg     string       // package pattern, as for go list
	Accel   string
	CPUs    int
	Timeout time.Duration // per VM
	// BootTimeout bounds the boot until init reports (0: DefaultBootTimeout).
	BootTimeout time.Duration
	Parallel    int // kernels booted at the same time
	Out         io.Writer
}

// kernelResult is what one kernel's VM reported.
type kernelResult struct {
	kernel   string
	boot     time.Duration
	wall     time.Duration
	retried  bool
	pkgs     map[string]int           // import path -> exit code
	took     map[string]time.Duration // import path -> run time in the VM
	order    []string
	done     bool
	problems []string
}

// Test builds the VM test binaries, boots every kernel and runs them there.
// It returns an error if anything failed, hung or never ran.
func Test(ctx context.Context, o TestOptions) error {
	start := time.Now()
	logf := func(format string, a ...any) { fmt.Fprintf(o.Out, "ipsec-lab: "+format+"\n", a...) }
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	pkgs, err := FindTestPackages(root, o.Pkg)
	if err != nil {
		return err
	}
	if len(pkgs) == 0 {
		return fmt.Errorf("no package matching %s has a func TestLab", o.Pkg)
	}
	work, err := workDir(root)
	if err != nil {
		return err
	}
	bin := filepath.Join(work, "bin")
	// Keep the logs, drop the big files.
	defer os.RemoveAll(bin)
	logf("work directory %s", work)
	arch := Amd64
	if len(o.Kernels) > 0 {
		arch = o.Kernels[0].arch()
	}
	ir, err := buildTestInitramfs(root, bin, pkgs, arch, logf)
	if err != nil {
		return err
	}
	script := testScript(ir, pkgs, o.Run, o.Timeout-30*time.Second)
	jobs, err := prepareKernels(ctx, &o, ir, script, work, logf)
	if err != nil {
		return err
	}
	results := runMatrix(ctx, o, jobs)
	return summarize(o.Out, pkgs, results, time.Since(start))
}

// buildTestInitramfs builds the exporter and the test binaries into bin and
// returns the initramfs contents every kernel shares: the exporter and the
// IKE daemons (testScript adds the tests).
func buildTestInitramfs(root, bin string, pkgs []TestPackage, arch Arch, logf func(string, ...any)) (*Initramfs, error) {
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	logf("building the exporter and %d test package(s)", len(pkgs))
	exporter := filepath.Join(bin, "ipsec_exporter")
	if err := BuildArchBinary(root, ".", exporter, arch); err != nil {
		return nil, err
	}
	if err := BuildTests(root, bin, pkgs, arch); err != nil {
		return nil, err
	}
	ir := &Initramfs{
		Files: map[string]string{VMExporter: exporter},
		Trees: map[string]string{},
	}
	if arch.Foreign() {
		// The IKE daemons come from the host's packages (amd64); the tests
		// that need them skip where they are absent.
		logf("%s: no IKE daemons in the VM", arch.Name)
	} else if err := ir.AddIKEDaemons(logf); err != nil {
		return nil, err
	}
	return ir, nil
}

// testScript adds each test binary (and its testdata) to ir and returns
// the shell lines that run them in the VM, each between a pkg-start and a
// pkg-end marker, with the test timeout given.
func testScript(ir *Initramfs, pkgs []TestPackage, run string, timeout time.Duration) string {
	var body strings.Builder
	for _, p := range pkgs {
		vmBin := path.Join("/lab/bin", filepath.Base(p.Binary))
		vmDir := path.Join("/lab/src", filepath.ToSlash(p.Rel))
		ir.Files[vmBin] = p.Binary
		if _, err := os.Stat(filepath.Join(p.Dir, "testdata")); err == nil {
			ir.Trees[path.Join(vmDir, "testdata")] = filepath.Join(p.Dir, "testdata")
		}
		fmt.Fprintf(&body, "mkdir -p %s && cd %s\n", vmDir, vmDir)
		fmt.Fprintf(&body, "echo %s >&3\n", shellQuote(Marker+"pkg-start "+p.ImportPath))
		body.WriteString("s=$(cut -d' ' -f1 /proc/uptime)\n")
		// -test.parallel 4: the IKE tests' parallel subtests (up to 4 per
		// test) mostly wait on daemon timers, not on the VM's 2 CPUs, whose
		// count would otherwise be the limit.
		fmt.Fprintf(&body, "%s -test.v -test.run %s -test.timeout %s -test.parallel 4 </dev/null >&3 2>&3\n",
			vmBin, shellQuote(run), timeout)
		// pkg-end PKG EXIT START END (guest uptime in seconds)
		fmt.Fprintf(&body, "echo %s\"$? $s $(cut -d' ' -f1 /proc/uptime)\" >&3\n", shellQuote(Marker+"pkg-end "+p.ImportPath+" "))
	}
	return body.String()
}

// kernelJob is one kernel of the matrix, ready to boot.
type kernelJob struct {
	k           *Kernel
	initrd, dir string
}

// prepareKernels fetches every kernel of the matrix and writes its
// initramfs (ir with an init that runs script) into a directory of its own
// under work. An o.Accel of "auto" is resolved here, once per run.
func prepareKernels(ctx context.Context, o *TestOptions, ir *Initramfs, script, work string, logf func(string, ...any)) ([]kernelJob, error) {
	var jobs []kernelJob
	for _, spec := range o.Kernels {
		k, err := Fetch(spec, logf)
		if err != nil {
			return nil, err
		}
		ir.Init = InitScript(k, script)
		dir := filepath.Join(work, spec.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		initrd := filepath.Join(dir, "initrd.cpio")
		if err := ir.Write(initrd, k); err != nil {
			return nil, err
		}
		if o.Accel == "auto" {
			o.Accel = ResolveAccel(ctx, o.Accel, k, dir, logf)
		}
		jobs = append(jobs, kernelJob{k, initrd, dir})
	}
	return jobs, nil
}

// runMatrix boots the kernels up to o.Parallel at a time; their output is
// printed in matrix order, live for the first one still running.
func runMatrix(ctx context.Context, o TestOptions, jobs []kernelJob) []*kernelResult {
	results := make([]*kernelResult, len(jobs))
	outs, printed := orderedOutput(o.Out, len(jobs))
	sem := make(chan struct{}, max(1, o.Parallel))
	var wg sync.WaitGroup
	for i, j := range jobs {
		sem <- struct{}{} // in order, so the printer never waits for a kernel that cannot start
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer outs[i].Close()
			defer os.Remove(j.initrd)
			if ctx.Err() != nil {
				results[i] = &kernelResult{kernel: j.k.Spec.Name, problems: []string{"not run: interrupted"}}
				return
			}
			fmt.Fprintf(outs[i], "ipsec-lab: kernel %s: %s (%s), accel %s\n", j.k.Spec.Name, j.k.Release, j.k.Debian(), o.Accel)
			results[i] = runKernel(ctx, o, j.k, j.initrd, j.dir, outs[i])
		}()
	}
	wg.Wait()
	<-printed
	return results
}

// orderedOutput returns n writers whose text reaches w in order: all of the
// first writer's (as it comes), then the second's, and so on. Each writer
// must be closed; printed is closed when everything was copied.
func orderedOutput(w io.Writer, n int) ([]io.WriteCloser, <-chan struct{}) {
	outs := make([]io.WriteCloser, n)
	readers := make([]*io.PipeReader, n)
	for i := range outs {
		readers[i], outs[i] = io.Pipe()
	}
	printed := make(chan struct{})
	go func() {
		defer close(printed)
		for _, r := range readers {
			_, _ = io.Copy(w, r)
		}
	}()
	return outs, printed
}

// workDir makes a fresh directory for one run under .build/lab, so runs in
// parallel (several developers or agents in one checkout) do not collide.
func workDir(root string) (string, error) {
	base := filepath.Join(root, ".build", "lab")
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", err
	}
	return os.MkdirTemp(base, time.Now().Format("20060102-150405-")+"*")
}

// runKernel boots k, retrying once a boot that never reached init.
func runKernel(ctx context.Context, o TestOptions, k *Kernel, initrd, dir string, w io.Writer) *kernelResult {
	res := &kernelResult{kernel: k.Spec.Name}
	for attempt := 1; attempt <= 2; attempt++ {
		res.pkgs = map[string]int{}
		res.took = map[string]time.Duration{}
		res.order = nil
		res.done = false
		vm := &VM{
			Kernel: k, Initrd: initrd, Accel: o.Accel, CPUs: o.CPUs, MemoryMB: 2048,
			Console: filepath.Join(dir, "console.log"), Results: filepath.Join(dir, "results.log"),
			Timeout: o.Timeout, BootTimeout: o.BootTimeout,
			OnLine: func(line string) { res.line(w, line) },
		}
		out := vm.Run(ctx)
		res.boot, res.wall = out.BootTime, out.Wall
		if !out.ReachedInit && ctx.Err() == nil && attempt == 1 {
			fmt.Fprintf(w, "ipsec-lab: [%s] boot never reached init (%v); console tail:\n%s\nipsec-lab: [%s] retrying the boot once\n",
				k.Spec.Name, describe(out), LogTail(vm.Console, 30), k.Spec.Name)
			res.retried = true
			continue
		}
		switch {
		case !out.ReachedInit:
			res.problems = append(res.problems, fmt.Sprintf("boot never reached init (%s)", describe(out)))
		case out.TimedOut:
			res.problems = append(res.problems, fmt.Sprintf("VM timed out after %s", o.Timeout))
		case !res.done:
			res.problems = append(res.problems, fmt.Sprintf("VM stopped before the tests finished (%s)", describe(out)))
		case out.Err != nil:
			res.problems = append(res.problems, out.Err.Error())
		}
		if len(res.problems) > 0 {
			fmt.Fprintf(w, "ipsec-lab: [%s] %s; console tail (%s):\n%s\n",
				k.Spec.Name, strings.Join(res.problems, "; "), vm.Console, LogTail(vm.Console, 40))
		}
		break
	}
	return res
}

func describe(o Outcome) string {
	switch {
	case o.BootHung:
		return "no sign of init, killed"
	case o.TimedOut:
		return "timed out, killed"
	case o.Err != nil:
		return o.Err.Error()
	}
	return fmt.Sprintf("qemu exited after %s", o.Wall.Round(time.Millisecond))
}

// line handles one line from the results port: markers are turned into
// headers and recorded, test output is printed as it is.
func (r *kernelResult) line(w io.Writer, line string) {
	if !strings.HasPrefix(line, Marker) {
		fmt.Fprintln(w, line)
		return
	}
	f := strings.Fields(strings.TrimPrefix(line, Marker))
	if len(f) == 0 {
		return
	}
	switch f[0] {
	case "init":
		fmt.Fprintf(w, "ipsec-lab: [%s] init running on %s\n", r.kernel, strings.Join(f[1:], " "))
	case "modfail":
		fmt.Fprintf(w, "ipsec-lab: [%s] warning: could not load %s\n", r.kernel, strings.Join(f[1:], " "))
	case "ready":
		fmt.Fprintf(w, "ipsec-lab: [%s] modules loaded, uptime %ss\n", r.kernel, strings.Join(f[1:], " "))
	case "pkg-start":
		if len(f) > 1 {
			fmt.Fprintf(w, "ipsec-lab: [%s] === %s\n", r.kernel, f[1])
		}
	case "pkg-end":
		if len(f) > 2 {
			code, err := strconv.Atoi(f[2])
			if err != nil {
				code = -1
			}
			r.pkgs[f[1]] = code
			r.order = append(r.order, f[1])
			if len(f) > 4 {
				start, err1 := strconv.ParseFloat(f[3], 64)
				end, err2 := strconv.ParseFloat(f[4], 64)
				if err1 == nil && err2 == nil {
					r.took[f[1]] = time.Duration((end - start) * float64(time.Second))
				}
			}
		}
	case "done":
		r.done = true
	}
}

// summarize prints one line per kernel and package and returns an error if
// anything failed or did not run.
func summarize(w io.Writer, pkgs []TestPackage, results []*kernelResult, wall time.Duration) error {
	failed := 0
	fmt.Fprintf(w, "\nipsec-lab: summary\n")
	for _, r := range results {
		retry := ""
		if r.retried {
			retry = ", boot retried once"
		}
		fmt.Fprintf(w, "  kernel %s: boot %s, VM wall %s%s\n", r.kernel, r.boot.Round(10*time.Millisecond), r.wall.Round(10*time.Millisecond), retry)
		for _, p := range pkgs {
			code, ok := r.pkgs[p.ImportPath]
			status := "ok"
			switch {
			case !ok:
				status, failed = "FAIL (did not finish)", failed+1
			case code != 0:
				status, failed = fmt.Sprintf("FAIL (exit %d)", code), failed+1
			}
			took := ""
			if d, ok := r.took[p.ImportPath]; ok {
				took = " " + d.Round(10*time.Millisecond).String()
			}
			fmt.Fprintf(w, "    %-60s %s%s\n", p.ImportPath, status, took)
		}
		for _, p := range r.problems {
			fmt.Fprintf(w, "    problem: %s\n", p)
			failed++
		}
	}
	fmt.Fprintf(w, "ipsec-lab: total wall time %s\n", wall.Round(100*time.Millisecond))
	if failed > 0 {
		return fmt.Errorf("%d VM test failure(s)", failed)
	}
	return nil
}
