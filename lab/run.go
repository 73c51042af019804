package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// RunOptions configure the interactive lab (`ipsec-lab run`, `make lab`).
type RunOptions struct {
	Kernel KernelSpec
	Port   int // host port forwarded to the exporter in the VM
	Accel  string
	CPUs   int
	Out    io.Writer
}

// guestPort is where the exporter listens inside the VM (its default).
const guestPort = 10871

// Run boots the kernel with the lab agent (lab/cmd/ipsec-lab-node), which
// builds the scenario, starts the exporter and generates traffic. The
// exporter's port is forwarded to 127.0.0.1:Port. Run returns when ctx ends
// (Ctrl-C) or the VM stops.
func Run(ctx context.Context, o RunOptions) error {
	logf := func(format string, a ...any) { fmt.Fprintf(o.Out, "ipsec-lab: "+format+"\n", a...) }
	addr := fmt.Sprintf("127.0.0.1:%d", o.Port)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("port %d is taken on the host (choose another with -port): %w", o.Port, err)
	}
	ln.Close()
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	work, err := workDir(root)
	if err != nil {
		return err
	}
	bin := filepath.Join(work, "bin")
	defer os.RemoveAll(bin)
	logf("building the exporter and the lab agent")
	exporter, agent := filepath.Join(bin, "ipsec_exporter"), filepath.Join(bin, "ipsec-lab-node")
	if err := BuildBinary(root, ".", exporter); err != nil {
		return err
	}
	if err := BuildBinary(root, "./lab/cmd/ipsec-lab-node", agent); err != nil {
		return err
	}
	k, err := Fetch(o.Kernel, logf)
	if err != nil {
		return err
	}
	// qemu's user-mode network: the guest is 10.0.2.15, the host 10.0.2.2.
	body := fmt.Sprintf(`ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
/lab/bin/ipsec-lab-node -listen :%d >&3 2>&3
`, guestPort)
	ir := &Initramfs{
		Init:  InitScript(k, body),
		Files: map[string]string{VMExporter: exporter, "/lab/bin/ipsec-lab-node": agent},
	}
	if err := ir.AddIKEDaemons(logf); err != nil {
		return err
	}
	initrd := filepath.Join(work, "initrd.cpio")
	if err := ir.Write(initrd, k); err != nil {
		return err
	}
	defer os.Remove(initrd)
	o.Accel = ResolveAccel(ctx, o.Accel, k, work, logf)
	logf("booting %s (%s), accel %s; console log %s", k.Release, k.Package, o.Accel, filepath.Join(work, "console.log"))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go announce(ctx, o.Out, addr, k)
	for attempt := 1; attempt <= 2; attempt++ {
		vm := &VM{
			Kernel: k, Initrd: initrd, Accel: o.Accel, CPUs: o.CPUs, MemoryMB: 2048,
			Console: filepath.Join(work, "console.log"), Results: filepath.Join(work, "output.log"),
			HostFwd: []string{fmt.Sprintf("tcp:%s-:%d", addr, guestPort)},
			Timeout: 7 * 24 * time.Hour, // BootTimeout: IPSEC_LAB_BOOT_TIMEOUT or the default
			OnLine: func(line string) {
				if !strings.HasPrefix(line, Marker) {
					fmt.Fprintf(o.Out, "vm| %s\n", line)
				}
			},
		}
		out := vm.Run(ctx)
		if ctx.Err() != nil {
			logf("stopped")
			return nil
		}
		if !out.ReachedInit && attempt == 1 {
			logf("boot never reached init (%s), retrying once; console tail:\n%s", describe(out), LogTail(vm.Console, 30))
			continue
		}
		return fmt.Errorf("the VM stopped (%s); console tail:\n%s", describe(out), LogTail(vm.Console, 40))
	}
	return nil
}

// announce waits until the exporter answers through the forward, then
// prints where to look.
func announce(ctx context.Context, w io.Writer, addr string, k *Kernel) {
	url := "http://" + addr + "/metrics"
	client := &http.Client{Timeout: 2 * time.Second}
	for ctx.Err() == nil {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		time.Sleep(time.Second)
	}
	if ctx.Err() != nil {
		return
	}
	fmt.Fprintf(w, `
ipsec-lab: the lab is up on Debian's %s, with the exporter inside.
  metrics:  %s
  try:      curl -s %s | grep -E '^ipsec_(xfrm_stat_errors_total|sa_integrity_failures_total|sa_replay_failures_total)'
            curl -s %s | grep -E '^ipsec_(peer|xfrm_packets)_'
            Prometheus: scrape %s (job "ipsec"), then load dashboards/*.json into Grafana.
  traffic:  a gateway tunnel with bulk TCP every 10s, IPv6 transport (cbc+hmac), NAT-T, async crypto (pcrypt),
            and on purpose: a wrong key (integrity), no inbound SA, no outbound SA, replays, expiring SAs.
  Ctrl-C stops the VM.

`, k.Release, url, url, url, addr)
}
