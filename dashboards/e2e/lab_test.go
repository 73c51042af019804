package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ipsec-exporter/ipsec_exporter/lab"
)

// labVM is the running lab VM as the host sees it.
type labVM struct {
	exporter string // http://127.0.0.1:PORT
	ctl      string // http://127.0.0.1:PORT of the driver's control API
}

func (v *labVM) control(t *testing.T, path string) {
	t.Helper()
	resp, err := http.Post(v.ctl+path, "text/plain", nil)
	if err != nil {
		t.Fatalf("lab control %s: %v", path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("lab control %s: %s", path, resp.Status)
	}
}

// repoRoot is the main module's directory, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// bootLab builds the exporter and this package's test binary (whose
// TestLabDriver runs in the VM), boots a lab kernel with both and the
// exporter and control ports forwarded to the host, and waits for the driver.
func bootLab(ctx context.Context, t *testing.T) *labVM {
	t.Helper()
	spec := lab.Kernels[len(lab.Kernels)-1]
	if *kernel != "" {
		var err error
		if spec, err = lab.FindKernel(*kernel); err != nil {
			t.Fatal(err)
		}
	}
	work := t.TempDir()
	exporter := filepath.Join(work, "ipsec_exporter")
	if err := lab.BuildBinary(repoRoot(t), ".", exporter); err != nil {
		t.Fatal(err)
	}
	driver := filepath.Join(work, "e2e.test")
	build := exec.Command("go", "test", "-c", "-o", driver, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the driver: %v\n%s", err, out)
	}
	k, err := lab.Fetch(spec, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	ir := &lab.Initramfs{
		Init: lab.InitScript(k,
			"cd /e2e && IPSEC_E2E_DRIVER=1 /e2e/e2e.test -test.v -test.run '^TestLabDriver$' -test.timeout 10m </dev/null >&3 2>&3\n"),
		Files: map[string]string{lab.VMExporter: exporter, "/e2e/e2e.test": driver},
	}
	if err := ir.AddIKEDaemons(t.Logf); err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(work, "initrd.cpio")
	if err := ir.Write(initrd, k); err != nil {
		t.Fatal(err)
	}
	exporterAddr, ctlAddr := freeAddr(t), freeAddr(t)
	vm := &lab.VM{
		Kernel: k, Initrd: initrd, Accel: "tcg", CPUs: 2, MemoryMB: 1024,
		Console: filepath.Join(work, "console.log"), Results: filepath.Join(work, "results.log"),
		HostFwd: []string{
			fmt.Sprintf("tcp:%s-:%d", exporterAddr, vmExporterPort),
			fmt.Sprintf("tcp:%s-:%d", ctlAddr, vmControlPort),
		},
		Timeout: 10 * time.Minute, // BootTimeout: IPSEC_LAB_BOOT_TIMEOUT or the lab default
		OnLine:  func(line string) { t.Log("vm: " + line) },
	}
	vmCtx, stopVM := context.WithCancel(ctx)
	done := make(chan lab.Outcome, 1)
	go func() { done <- vm.Run(vmCtx) }()
	t.Cleanup(func() {
		stopVM()
		out := <-done
		if t.Failed() {
			t.Logf("VM outcome %+v; console tail:\n%s", out, lab.LogTail(vm.Console, 30))
		}
	})
	v := &labVM{exporter: "http://" + exporterAddr, ctl: "http://" + ctlAddr}
	waitFor(ctx, t, "the lab driver", 3*time.Minute, func() (bool, error) {
		select {
		case out := <-done:
			done <- out
			t.Fatalf("VM ended before the driver was ready: %+v\n%s", out, lab.LogTail(vm.Console, 30))
		default:
		}
		if _, err := httpGet(v.ctl + "/ready"); err != nil {
			return false, err
		}
		_, err := httpGet(v.exporter + "/metrics")
		return err == nil, err
	})
	return v
}

// alertmanagerConfig is the shipped example with its webhooks pointed at
// the test's receiver and its waits shortened; routes, matchers and
// inhibitions stay as users get them.
func alertmanagerConfig(t *testing.T, hookURL string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../examples/alertmanager/alertmanager.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	// Waits set on the root are inherited; those a child route sets itself
	// are shortened where they are.
	var shorten func(route map[string]any, root bool)
	shorten = func(route map[string]any, root bool) {
		for key, v := range map[string]string{"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1m"} {
			if _, ok := route[key]; ok || root {
				route[key] = v
			}
		}
		routes, _ := route["routes"].([]any)
		for _, r := range routes {
			shorten(r.(map[string]any), false)
		}
	}
	shorten(cfg["route"].(map[string]any), true)
	for _, r := range cfg["receivers"].([]any) {
		hooks, _ := r.(map[string]any)["webhook_configs"].([]any)
		for _, h := range hooks {
			h := h.(map[string]any)
			u := h["url"].(string)
			h["url"] = hookURL + u[strings.LastIndex(u, "/"):]
		}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
