package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// In-VM ports, forwarded to the host by TestEndToEnd.
const (
	vmExporterPort = 10871
	vmControlPort  = 10872
)

// TestLabDriver runs inside the lab VM for TestEndToEnd (and only then): it
// builds a two-node ESP scenario, keeps traffic flowing both ways, runs the
// exporter, and serves a small control API on vmControlPort so the host can
// switch faults on and off while a real Prometheus watches:
//
//	GET  /ready                   200 once traffic flows
//	POST /fault/wrong-key?on=1|0  B's inbound SA gets a wrong key (integrity failures on B)
//	POST /stop                    ends the test; the VM powers off
func TestLabDriver(t *testing.T) {
	scenario.RequireVM(t)
	if os.Getenv("IPSEC_E2E_DRIVER") == "" {
		t.Skip("the end-to-end driver runs only under TestEndToEnd (dashboards/e2e)")
	}
	upHostLink(t)

	pair := scenario.NewPair(t)
	esp := pair.ESP(t, scenario.ESPOptions{})
	wrongKey := newKeyFault(t, pair.B, esp.AB)

	exporter := exec.Command(scenario.ExporterBin(),
		fmt.Sprintf("--web.listen-address=:%d", vmExporterPort), "--log.level=info")
	exporter.Stdout, exporter.Stderr = os.Stdout, os.Stderr
	if err := exporter.Start(); err != nil {
		t.Fatalf("start exporter: %v", err)
	}
	t.Cleanup(func() {
		_ = exporter.Process.Kill()
		_ = exporter.Wait()
	})

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var traffic sync.WaitGroup
	traffic.Go(func() {
		// About 25 pings a second each way: enough for every rate to move
		// within a few 1 s scrapes, little enough for an emulated CPU.
		for ctx.Err() == nil {
			pair.A.PingTimeout(t, esp.BAddr, 5, 150*time.Millisecond)
			time.Sleep(50 * time.Millisecond)
		}
	})
	defer traffic.Wait()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ready") })
	mux.HandleFunc("POST /fault/wrong-key", func(w http.ResponseWriter, r *http.Request) {
		if err := wrongKey.set(r.URL.Query().Get("on") == "1"); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		t.Logf("fault wrong-key on=%s", r.URL.Query().Get("on"))
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "stopping")
		stop()
	})
	srv := &http.Server{Addr: fmt.Sprintf(":%d", vmControlPort), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("control server: %v", err)
			stop()
		}
	}()
	t.Logf("driver ready: exporter on :%d, control on :%d", vmExporterPort, vmControlPort)
	<-ctx.Done()
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown)
}

// upHostLink gives the VM's user-mode network interface qemu's default
// guest address, the target of its host forwards.
func upHostLink(t *testing.T) {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatalf("links: %v", err)
	}
	for _, l := range links {
		if l.Type() != "device" || l.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		addr, _ := netlink.ParseAddr("10.0.2.15/24")
		if err := netlink.AddrAdd(l, addr); err != nil {
			t.Fatalf("address on %s: %v", l.Attrs().Name, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatalf("%s up: %v", l.Attrs().Name, err)
		}
		return
	}
	t.Fatal("no network device for the host forwards (virtio_net not loaded?)")
}

// keyFault swaps an inbound SA for one with the same selector and SPI but
// another key, and back: the receiver then fails the integrity check of
// every packet, as after a botched rekey.
type keyFault struct {
	mu    sync.Mutex
	node  *scenario.Node
	right netlink.XfrmState
	on    bool
}

func newKeyFault(t *testing.T, n *scenario.Node, sa scenario.SA) *keyFault {
	return &keyFault{node: n, right: n.State(t, sa)}
}

func (f *keyFault) set(on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on == f.on {
		return nil
	}
	install := f.right
	if on {
		install.Aead = &netlink.XfrmStateAlgo{Name: f.right.Aead.Name, Key: append([]byte(nil), f.right.Aead.Key...), ICVLen: f.right.Aead.ICVLen}
		for i := range install.Aead.Key {
			install.Aead.Key[i] ^= 0xee
		}
	}
	current := f.right
	if err := f.node.NL.XfrmStateDel(&current); err != nil {
		return fmt.Errorf("delete SA: %w", err)
	}
	if err := f.node.NL.XfrmStateAdd(&install); err != nil {
		return fmt.Errorf("add SA: %w", err)
	}
	f.on = on
	return nil
}
