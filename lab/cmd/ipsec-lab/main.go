// Command ipsec-lab runs the project's VM tests on Debian's kernels under
// qemu (`ipsec-lab test`, what `make test-vm` calls) and boots an interactive
// two-node IPsec lab with the exporter inside (`ipsec-lab run`, `make lab`).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/ipsec-exporter/ipsec_exporter/lab"
)

func usage() {
	fmt.Fprintf(os.Stderr, `usage:
  ipsec-lab test [-kernel 6.1|6.12] [-arch amd64|arm64] [-run REGEX] [-pkg PATTERN]
                                                                    run the TestLab tests in VMs
  ipsec-lab run [-kernel 6.12] [-port 10871] [-prometheus-port 19090] [-alertmanager-port 19093]
                                                                    interactive lab with the exporter,
                                                                    Prometheus and Alertmanager on the host
`)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "test":
		err = test(ctx, os.Args[2:])
	case "run":
		err = run(ctx, os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ipsec-lab: %v\n", err)
		os.Exit(1)
	}
}

// kernels turns -kernel (comma-separated short names, empty for all) into specs.
func kernels(names string) ([]lab.KernelSpec, error) {
	if names == "" {
		return lab.Kernels, nil
	}
	var specs []lab.KernelSpec
	for _, n := range strings.Split(names, ",") {
		k, err := lab.FindKernel(strings.TrimSpace(n))
		if err != nil {
			return nil, err
		}
		specs = append(specs, k)
	}
	return specs, nil
}

func test(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("test", flag.ExitOnError)
	kernel := fs.String("kernel", "", "kernels to run, comma-separated (default: all of "+names()+")")
	archName := fs.String("arch", lab.Amd64.Name, "architecture of the kernels and binaries: amd64 or arm64 (arm64: software emulation, qemu-system-aarch64)")
	run := fs.String("run", "^TestLab", "run only tests matching this regexp (go test -run)")
	pkg := fs.String("pkg", "./...", "package pattern to search for TestLab tests")
	accel := fs.String("accel", "auto", "qemu accelerator: auto (KVM if a probe boot works, else tcg), tcg or kvm")
	cpus := fs.Int("smp", 2, "virtual CPUs")
	timeout := fs.Duration("timeout", 10*time.Minute, "hard timeout per VM")
	bootDefault, err := lab.BootTimeoutFromEnv()
	if err != nil {
		return err
	}
	bootTimeout := fs.Duration("boot-timeout", bootDefault, "kill (and retry once) a VM whose boot has not reached init after this long (IPSEC_LAB_BOOT_TIMEOUT sets the default)")
	// Each TCG VM keeps one or two host threads busy: booting the kernels
	// side by side only pays off with cores to spare.
	parallel := 1
	if runtime.NumCPU() >= 4 {
		parallel = len(lab.Kernels)
	}
	fs.IntVar(&parallel, "parallel", parallel, "kernels to boot at the same time (default: all with 4+ CPUs, else 1)")
	_ = fs.Parse(args)
	specs, err := kernels(*kernel)
	if err != nil {
		return err
	}
	arch, err := lab.FindArch(*archName)
	if err != nil {
		return err
	}
	for i := range specs {
		specs[i] = specs[i].On(arch)
	}
	return lab.Test(ctx, lab.TestOptions{
		Kernels: specs, Run: *run, Pkg: *pkg, Accel: *accel, CPUs: *cpus, Timeout: *timeout,
		BootTimeout: *bootTimeout, Parallel: parallel, Out: os.Stdout,
	})
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	newest := lab.Kernels[len(lab.Kernels)-1].Name
	kernel := fs.String("kernel", newest, "kernel to boot")
	port := fs.Int("port", 10871, "host port on 127.0.0.1 forwarded to the exporter in the VM")
	// Not the usual 9090/9093, so that the services Debian's packages
	// start do not collide with these.
	promPort := fs.Int("prometheus-port", 19090, "port on 127.0.0.1 of the Prometheus started beside the lab (0: no Prometheus and Alertmanager)")
	amPort := fs.Int("alertmanager-port", 19093, "port on 127.0.0.1 of the Alertmanager started beside the lab (0: no Prometheus and Alertmanager)")
	accel := fs.String("accel", "auto", "qemu accelerator: auto (KVM if a probe boot works, else tcg), tcg or kvm")
	cpus := fs.Int("smp", 2, "virtual CPUs")
	_ = fs.Parse(args)
	spec, err := lab.FindKernel(*kernel)
	if err != nil {
		return err
	}
	if *promPort == 0 || *amPort == 0 {
		*promPort, *amPort = 0, 0
	}
	return lab.Run(ctx, lab.RunOptions{
		Kernel: spec, Port: *port, PrometheusPort: *promPort, AlertmanagerPort: *amPort,
		Accel: *accel, CPUs: *cpus, Out: os.Stdout,
	})
}

func names() string {
	var n []string
	for _, k := range lab.Kernels {
		n = append(n, k.Name)
	}
	return strings.Join(n, ",")
}
