package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
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
// builds a two-node ESP scenario, runs the exporter on node A as a node
// agent would (in A's namespace, so the wire collector sees A's interface),
// keeps traffic flowing both ways, and serves a small control API on
// vmControlPort so the host can switch faults on and off while a real
// Prometheus watches:
//
//	GET  /ready                   200 once traffic flows
//	POST /fault/wrong-key?on=1|0  A's inbound SA from B gets a wrong key: integrity failures on A
//	POST /fault/leak?on=1|0       a policy hole on A: UDP to B's port 7777 leaves in clear
//	POST /fault/expiry?on=1|0     A's outbound SA to B gets a hard time limit 2 minutes away, as when a rekey failed
//	POST /fault/teardown?on=1|0   A's IPv4 SAs with B are deleted (policies stay), as when IKE gave up
//	POST /fault/ike-down?on=1|0   the strongSwan peer C of A crashes (daemon and kernel state gone; A's DPD clears the tunnel), and restarts
//	POST /stop                    ends the test; the VM powers off
func TestLabDriver(t *testing.T) {
	scenario.RequireVM(t)
	if os.Getenv("IPSEC_E2E_DRIVER") == "" {
		t.Skip("the end-to-end driver runs only under TestEndToEnd (dashboards/e2e)")
	}
	upHostLink(t)

	pair := scenario.NewPair(t)
	esp := pair.ESP(t, scenario.ESPOptions{})
	// A second tunnel, IPv6 in UDP (NAT-T), so that every wire class and
	// both address families show up.
	espNATT := pair.ESP(t, scenario.ESPOptions{IPv6: true, NATT: true})
	setLifetimes(t, pair.A)
	wrongKey := newKeyFault(t, pair.A, esp.BA)
	expiry := &expiryFault{node: pair.A, sa: esp.AB}
	teardown := &teardownFault{node: pair.A, peer: esp.BA.Src}
	hole := scenario.NewPolicyHole(t, pair.A, esp, leakPort)
	leak := faultFunc(hole.SetOpen)
	// A third node C, behind A's second link, with a tunnel negotiated by
	// strongSwan on both (DPD on): the IKE view (vici collector) and its
	// tunnel-down alert.
	ikePeer := newIKEPeer(t, pair.A)
	ikeDown := &ikeFault{t: t, ike: ikePeer}

	exporter := exec.Command(scenario.IPBin(), "netns", "exec", pair.A.Name, scenario.ExporterBin(),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", vmExporterPort),
		// Only A's own namespace, as on a real node; the scenario's
		// namespaces would otherwise be read again by name.
		"--collector.netns.dir=",
		"--web.disable-exporter-metrics", "--log.level=info",
		"--collector.vici", "--collector.vici.socket="+ikePeer.A.(*scenario.Charon).VICI)
	exporter.Stdout, exporter.Stderr = os.Stdout, os.Stderr
	if err := exporter.Start(); err != nil {
		t.Fatalf("start exporter: %v", err)
	}
	t.Cleanup(func() {
		_ = exporter.Process.Kill()
		_ = exporter.Wait()
	})
	// qemu forwards to the VM's root namespace; relay into A's.
	proxy(t, fmt.Sprintf(":%d", vmExporterPort), pair.A, fmt.Sprintf("127.0.0.1:%d", vmExporterPort))

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var traffic sync.WaitGroup
	traffic.Go(func() {
		// About 25 pings a second each way, and a few datagrams to the port
		// the leak fault opens: enough for every rate to move within a few
		// 2 s scrapes, little enough for an emulated CPU.
		udp := scenario.UDPSender(t, pair.A.Netns, "udp4")
		leakDst := &net.UDPAddr{IP: esp.BAddr.AsSlice(), Port: leakPort}
		for ctx.Err() == nil {
			pair.A.PingTimeout(t, esp.BAddr, 5, 150*time.Millisecond)
			pair.A.PingTimeout(t, espNATT.BAddr, 2, 100*time.Millisecond)
			pair.A.PingTimeout(t, ikePeer.BAddr, 2, 100*time.Millisecond)
			_, _ = udp.WriteTo([]byte("ipsec-lab datagram"), leakDst)
			time.Sleep(50 * time.Millisecond)
		}
	})
	defer traffic.Wait()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ready") })
	for name, f := range map[string]fault{"wrong-key": wrongKey, "leak": leak, "expiry": expiry, "teardown": teardown, "ike-down": ikeDown} {
		mux.HandleFunc("POST /fault/"+name, func(w http.ResponseWriter, r *http.Request) {
			on := r.URL.Query().Get("on") == "1"
			if err := f.set(on); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			t.Logf("fault %s on=%v", name, on)
			fmt.Fprintln(w, "ok")
		})
	}
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

// Lifetimes of the scenario's SAs: an hour, rekey due 10 minutes before.
const softSeconds, hardSeconds = 3000, 3600

// expiryFault brings an SA's hard time limit to 2 minutes from now (the
// soft one a minute earlier), as if the rekey due at the soft limit had
// failed, and back to the normal lifetimes.
type expiryFault struct {
	mu   sync.Mutex
	node *scenario.Node
	sa   scenario.SA
}

func (f *expiryFault) set(on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on {
		return scenario.ExpireIn(f.node.Netns, f.sa, time.Minute, 2*time.Minute)
	}
	return scenario.SetTimeLimits(f.node.Netns, f.sa, softSeconds, hardSeconds)
}

// teardownFault deletes every SA a node has with a peer and puts them
// back: the tunnel is down while the policies still require it.
type teardownFault struct {
	mu    sync.Mutex
	node  *scenario.Node
	peer  netip.Addr
	saved []netlink.XfrmState
}

func (f *teardownFault) set(on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !on {
		for _, st := range f.saved {
			if err := f.node.NL.XfrmStateAdd(&st); err != nil {
				return fmt.Errorf("restore SA 0x%x: %w", st.Spi, err)
			}
		}
		f.saved = nil
		return nil
	}
	states, err := f.node.NL.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, st := range states {
		src, _ := netip.AddrFromSlice(st.Src)
		dst, _ := netip.AddrFromSlice(st.Dst)
		if src.Unmap() != f.peer && dst.Unmap() != f.peer {
			continue
		}
		if err := f.node.NL.XfrmStateDel(&st); err != nil {
			return fmt.Errorf("delete SA 0x%x: %w", st.Spi, err)
		}
		f.saved = append(f.saved, st)
	}
	return nil
}

// setLifetimes gives n's SAs the time limits an IKE daemon sets (soft: rekey
// due, hard: deleted), so the lifetime and expiry panels have data.
func setLifetimes(t *testing.T, n *scenario.Node) {
	t.Helper()
	states, err := n.NL.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range states {
		st.Limits.TimeSoft, st.Limits.TimeHard = softSeconds, hardSeconds
		if err := n.NL.XfrmStateUpdate(&st); err != nil {
			t.Fatalf("lifetimes of SA 0x%x: %v", st.Spi, err)
		}
	}
}

// ikeDPD is A's dead-peer-detection delay for C, ikePeerAddr C's address.
const (
	ikeDPD      = 2 * time.Second
	ikePeerAddr = "10.77.9.2"
)

// newIKEPeer joins a new namespace C to A on A's second link (10.77.9.0/24)
// and has strongSwan on both negotiate a transport tunnel with DPD.
func newIKEPeer(t *testing.T, a *scenario.Node) *scenario.IKE {
	t.Helper()
	aSide := &scenario.Node{Netns: a.Netns, Link: "eth1", IPv4: netip.MustParseAddr("10.77.9.1")}
	c := &scenario.Node{Netns: scenario.NewNetns(t, "c"), Link: "eth0", IPv4: netip.MustParseAddr(ikePeerAddr)}
	scenario.Connect(t, aSide, c, 24, 0)
	p := &scenario.Pair{A: aSide, B: c}
	return p.IKE(t, scenario.StrongSwanKind, scenario.StrongSwanKind, scenario.IKEOptions{Name: "lab-c", DPD: ikeDPD})
}

// ikeFault crashes node C: its daemon is killed and its kernel's SAs and
// policies go with it, as when the node dies or reboots. A's DPD then
// hears nothing back, clears the tunnel, and its configured connection has
// no child SA (IpsecTunnelDown). Off restarts C's daemon, A initiating
// again. Killing the daemon alone is not a dead peer: C's kernel keeps
// answering A's pings through the old SAs, and charon probes a peer only
// after dpd_delay without any packet from it, so DPD came only from a gap
// in the traffic (1m16s after the kill once, never within 1m30s another
// time). A failure to restart fails the driver (and the end-to-end test).
type ikeFault struct {
	mu   sync.Mutex
	t    *testing.T
	ike  *scenario.IKE
	down bool
}

func (f *ikeFault) set(on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on == f.down {
		return nil
	}
	if on {
		f.ike.B.Kill(f.t)
		c := f.ike.Pair.B
		if err := c.NL.XfrmStateFlush(0); err != nil {
			return fmt.Errorf("flush C's SAs: %w", err)
		}
		if err := c.NL.XfrmPolicyFlush(); err != nil {
			return fmt.Errorf("flush C's policies: %w", err)
		}
	} else {
		f.ike.RestartB(f.t)
	}
	f.down = on
	return nil
}

// leakPort is the UDP port the leak fault lets out in clear.
const leakPort = 7777

type fault interface{ set(on bool) error }

// faultFunc makes a fault of a function that switches it.
type faultFunc func(on bool) error

func (f faultFunc) set(on bool) error { return f(on) }

// proxy accepts on listen in the current (root) namespace and relays each
// connection to target dialled inside n.
func proxy(t *testing.T, listen string, n *scenario.Node, target string) {
	t.Helper()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var up net.Conn
				if err := n.Do(func() (err error) {
					up, err = net.DialTimeout("tcp", target, 5*time.Second)
					return err
				}); err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, c) }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
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
