package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// RunOptions configure the interactive lab (`ipsec-lab run`, `make lab`).
type RunOptions struct {
	Kernel KernelSpec
	Port   int // host port forwarded to the exporter in the VM
	// PrometheusPort and AlertmanagerPort are where Debian's Prometheus and
	// Alertmanager listen on 127.0.0.1 beside the lab; 0 starts neither.
	PrometheusPort, AlertmanagerPort int
	Accel                            string
	CPUs                             int
	Out                              io.Writer
	// Root is the repository's root (default: the module of the working
	// directory, as for `make lab`).
	Root string
}

// statusInterval is how often the lab prints what the exporter counted.
const statusInterval = time.Minute

// guestPort is where the exporter listens inside the VM (its default).
const guestPort = 10871

// Run boots the kernel with the lab agent (lab/cmd/ipsec-lab-node), which
// builds the scenario, starts the exporter and generates traffic. The
// exporter's port is forwarded to 127.0.0.1:Port. Run returns when ctx ends
// (Ctrl-C) or the VM stops.
func Run(ctx context.Context, o RunOptions) error {
	start := time.Now()
	logf := func(format string, a ...any) { fmt.Fprintf(o.Out, "ipsec-lab: "+format+"\n", a...) }
	addr := fmt.Sprintf("127.0.0.1:%d", o.Port)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("port %d is taken on the host (choose another with -port): %w", o.Port, err)
	}
	ln.Close()
	root := o.Root
	if root == "" {
		if root, err = ModuleRoot(); err != nil {
			return err
		}
	}
	var mon *Monitoring
	if o.PrometheusPort != 0 && o.AlertmanagerPort != 0 {
		logf("starting Prometheus and Alertmanager on the host")
		mon, err = StartMonitoring(ctx, MonitoringOptions{
			Root: root, ExporterPort: o.Port, PrometheusPort: o.PrometheusPort, AlertmanagerPort: o.AlertmanagerPort, Logf: logf,
		})
		if err != nil {
			return fmt.Errorf("monitoring: %w", err)
		}
		defer mon.Stop()
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
	logf("booting %s (%s), accel %s; console log %s", k.Release, k.Debian(), o.Accel, filepath.Join(work, "console.log"))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	scenario := &scenarioLines{}
	go func() {
		if !waitExporter(ctx, "http://"+addr+"/metrics") {
			return
		}
		announce(o.Out, banner{addr: addr, kernel: k, mon: mon, scenario: scenario.get(), up: time.Since(start)})
		go reportStatus(ctx, o.Out, "http://"+addr+"/metrics", statusInterval)
	}()
	if mon != nil {
		go watchPrometheus(ctx, o.Out, mon.Prometheus, start)
	}
	for attempt := 1; attempt <= 2; attempt++ {
		vm := &VM{
			Kernel: k, Initrd: initrd, Accel: o.Accel, CPUs: o.CPUs, MemoryMB: 2048,
			Console: filepath.Join(work, "console.log"), Results: filepath.Join(work, "output.log"),
			HostFwd: []string{fmt.Sprintf("tcp:%s-:%d", addr, guestPort)},
			Timeout: 7 * 24 * time.Hour, // BootTimeout: IPSEC_LAB_BOOT_TIMEOUT or the default
			OnLine: func(line string) {
				if text, ok := strings.CutPrefix(line, Marker+"scenario "); ok {
					scenario.add(text)
				}
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

// scenarioLines collect what the lab agent says it built (lines
// "@@LAB scenario ..." on the results port), for the banner.
type scenarioLines struct {
	mu    sync.Mutex
	lines []string
}

func (s *scenarioLines) add(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, line)
}

func (s *scenarioLines) get() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lines)
}

// waitExporter polls the exporter through the forward until it answers,
// false if ctx ends first. Under emulation the first scrape takes seconds.
func waitExporter(ctx context.Context, url string) bool {
	client := &http.Client{Timeout: 15 * time.Second}
	for ctx.Err() == nil {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return false
}

// banner is what the lab prints once the exporter answers.
type banner struct {
	addr     string
	kernel   *Kernel
	mon      *Monitoring // nil without monitoring
	scenario []string
	up       time.Duration // since start
}

// labAlerts are the alerts the lab's provoked faults fire (rules-lab.yml).
const labAlerts = "IpsecDecryptFailures, IpsecEncryptFailures, IpsecUnprotectedTrafficToPeer, IpsecSANearHardExpiry"

func announce(w io.Writer, b banner) {
	url := "http://" + b.addr + "/metrics"
	var s strings.Builder
	fmt.Fprintf(&s, "\nipsec-lab: the lab is up on Debian's %s with the exporter inside, %s after start.\n", b.kernel.Release, b.up.Round(time.Second))
	fmt.Fprintf(&s, "  metrics:      %s\n", url)
	fmt.Fprintf(&s, "  try:          curl -s %s | grep -E '^ipsec_(peer|xfrm_packets)_'\n", url)
	fmt.Fprintf(&s, "                curl -s %s | grep -E '^ipsec_(xfrm_stat_errors_total|sa_integrity_failures_total|sa_replay_failures_total)'\n", url)
	if b.mon != nil {
		l := b.mon.Links()
		fmt.Fprintf(&s, "  Prometheus:   %s   (also %s, %s, %s)\n", l.Alerts, l.Targets, l.Rules, l.Graph)
		fmt.Fprintf(&s, "                scrapes the lab every 10 s with the shipped rules at the lab's windows (examples/prometheus/rules-lab.yml);\n")
		fmt.Fprintf(&s, "                %s fire within a minute of Prometheus' first samples.\n", labAlerts)
		if l.AlertmanagerUI != "" {
			fmt.Fprintf(&s, "  Alertmanager: %s\n", l.AlertmanagerUI)
		} else {
			fmt.Fprintf(&s, "  Alertmanager: %s has no web UI (Debian's package ships none): amtool --alertmanager.url=%s alert query\n", b.mon.Alertmanager, b.mon.Alertmanager)
		}
		fmt.Fprintf(&s, "  Grafana:      import dashboards/overview.json and dashboards/sa-detail.json, data source %s\n", b.mon.Prometheus)
	} else {
		fmt.Fprintf(&s, "  monitoring:   none started (-prometheus-port 0); `make lab` starts Prometheus and Alertmanager with the lab's rules\n")
	}
	for i, line := range b.scenario {
		label := ""
		if i == 0 {
			label = "scenario:"
		}
		fmt.Fprintf(&s, "  %-13s %s\n", label, line)
	}
	fmt.Fprintf(&s, "  Every minute the lab prints the packets per peer and result the exporter counted. Ctrl-C stops everything.\n\n")
	fmt.Fprint(w, s.String())
}
