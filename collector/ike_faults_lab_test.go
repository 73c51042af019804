package collector

import (
	"testing"
	"time"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// viciExporter is an exporter with only the vici collector, reading the
// charon of daemon d (nil if d is not strongSwan).
func viciExporter(t *testing.T, d scenario.IKEDaemon) *exporterProcess {
	t.Helper()
	c, ok := d.(*scenario.Charon)
	if !ok {
		return nil
	}
	return startLabExporter(t, []*scenario.Netns{}, "--no-collector.verdict", "--no-collector.sa", "--no-collector.policy",
		"--no-collector.events", "--no-collector.xfrm_stat", "--collector.vici", "--collector.vici.socket="+c.VICI)
}

// TestLabIKEDeadPeer: B's daemon is killed (SIGKILL: it cannot tell A or
// clean up); A's DPD declares B dead and clears the SAs and policies; A's
// traffic to B then leaves in plaintext and B's stale policy drops it.
// The exporter must show the SAs gone on A (ipsec_peer_sas), the stale SAs
// left on B, no encryption, the IKE view of the survivor (connection not
// established) and the dead daemon unreachable.
func TestLabIKEDeadPeer(t *testing.T) {
	scenario.RequireVM(t)
	exp := startLabExporter(t, nil)
	for i, dp := range scenario.DaemonPairs {
		t.Run(dp.Name, func(t *testing.T) {
			t.Parallel() // see labPair
			p := labPair(t, i)
			exp.samples(t)
			e := p.IKE(t, dp.A, dp.B, scenario.IKEOptions{DPD: 2 * time.Second})
			// The daemons install their policies after the SAs WaitChild
			// waits for; with the pairings running at once under emulation
			// that took seconds (0 of 5 replies on 6.1): ping until through.
			got, tries := 0, 0
			for deadline := time.Now().Add(15 * time.Second); got != 5 && time.Now().Before(deadline); tries++ {
				got = p.A.Ping(t, e.BAddr, 5)
			}
			if got != 5 {
				t.Fatalf("%d of 5 replies before the kill, %d tries in 15s", got, tries)
			}
			if tries > 1 {
				t.Logf("the tunnel carried pings at try %d", tries)
			}
			a, b := p.A.IPv4.String(), p.B.IPv4.String()
			peerA := labels("netns", p.A.Name, "peer", b, "direction", "out")
			peerB := labels("netns", p.B.Name, "peer", a, "direction", "out")
			s0 := exp.samples(t)
			if v := s0.value(t, "ipsec_peer_sas", peerA); v < 1 {
				t.Fatalf("A has %v SAs with B before the kill", v)
			}
			viciA, viciB := viciExporter(t, e.A), viciExporter(t, e.B)
			if viciA != nil {
				v := viciA.samples(t)
				if got := v.get(t, "ipsec_ike_connection_established", labels("connection", "lab")); got != 1 {
					t.Errorf("vici on A before the kill: connection established %v, want 1", got)
				}
			}

			killed := time.Now()
			e.B.Kill(t)
			deadline := time.Now().Add(60 * time.Second)
			for {
				ab, ba := e.SPIs(t, p.A)
				if len(ab)+len(ba) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("A still has SAs with B 60s after B's daemon was killed; A's log:\n%s", e.A.LogTail())
				}
				time.Sleep(100 * time.Millisecond)
			}
			cleared := time.Since(killed)
			if ab, ba := e.SPIs(t, p.B); len(ab) == 0 || len(ba) == 0 {
				t.Errorf("B's kernel lost the dead daemon's SAs (%x, %x): nothing stale left to test", ab, ba)
			}

			before := exp.samples(t)
			xA, xB := p.A.XfrmStat(t), p.B.XfrmStat(t)
			const n = 20
			if got := p.A.PingTimeout(t, e.BAddr, n, time.Second); got != 0 {
				t.Errorf("%d replies after DPD cleared the tunnel, want 0", got)
			}
			dA, dB := p.A.XfrmStat(t).Sub(xA), p.B.XfrmStat(t).Sub(xB)
			after := exp.samples(t)

			// Each ping is dropped by what A's daemon left (a block or hold
			// policy: A's XfrmOut* counters), or leaves in plaintext and
			// reaches B, whose stale policy still requires ESP.
			// (B's counter also counts the IKE packets A's daemon sends to the
			// dead peer: Libreswan keeps its trap policy and re-initiates.)
			leaked := dB["XfrmInTmplMismatch"]
			if dropped := outDrops(dA); dropped != n && leaked < n-dropped {
				t.Errorf("%d pings: %d dropped on A (%s), %d reached B in plaintext (%s); want all %d accounted for\nA's policies:\n%s",
					n, dropped, dA, leaked, dB, n, p.A.IP(t, "xfrm", "policy"))
			}
			okDelta := func(dir, peer string) float64 {
				l := labels("direction", dir, "peer", peer, "result", "ok")
				return after.value(t, "ipsec_xfrm_packets_total", l) - before.value(t, "ipsec_xfrm_packets_total", l)
			}
			if d := okDelta("encrypt", b); d != 0 {
				t.Errorf("%v packets to B counted as encrypted after the tunnel was cleared", d)
			}
			// SAs gone on A (what IpsecPeerSAsGone reads), stale ones on B.
			if v := after.value(t, "ipsec_peer_sas", peerA); v != 0 {
				t.Errorf("ipsec_peer_sas A->B %v after DPD cleared, want 0 (or absent)", v)
			}
			if v := after.value(t, "ipsec_peer_sas", peerB); v < 1 {
				t.Errorf("ipsec_peer_sas B->A %v: the dead daemon's stale SAs should still be there", v)
			}
			if viciA != nil {
				v := viciA.samples(t)
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); v = viciA.samples(t) {
					if _, ok := v.find(t, "ipsec_ike_connection_established", labels("connection", "lab")); ok {
						break
					}
					t.Logf("vici on A: no connection series yet (collector success %v)", v.value(t, "ipsec_scrape_collector_success", labels("collector", "vici")))
					time.Sleep(500 * time.Millisecond)
				}
				for name, want := range map[string]float64{"ipsec_ike_daemon_up": 1} {
					if got := v.get(t, name, nil); got != want {
						t.Errorf("vici on A: %s %v, want %v", name, got, want)
					}
				}
				if got := v.get(t, "ipsec_ike_connection_established", labels("connection", "lab")); got != 0 {
					t.Errorf("vici on A after DPD: connection established %v, want 0", got)
				}
				if got := v.get(t, "ipsec_ike_connection_children_installed", labels("connection", "lab", "child", "lab")); got != 0 {
					t.Errorf("vici on A after DPD: children installed %v, want 0", got)
				}
			}
			if viciB != nil {
				if got := viciB.samples(t).get(t, "ipsec_ike_daemon_up", nil); got != 0 {
					t.Errorf("vici on B after the kill: ipsec_ike_daemon_up %v, want 0", got)
				}
			}
			t.Logf("kernel %s, %s: DPD cleared A's SAs %s after the kill; of %d pings %d left in plaintext (B: %s), %d dropped on A (%s)",
				scenario.Kernel(), dp.Name, cleared.Round(100*time.Millisecond), n, leaked, dB, outDrops(dA), dA)
		})
	}
}

// TestLabIKEWrongPSK: A installs trap policies and B holds another PSK. A's
// first packet makes the kernel ACQUIRE an SA (a larval placeholder while
// the daemon negotiates), authentication fails, and nothing is encrypted:
// the exporter shows the acquire and the larval SA, its events equal the
// kernel's stream, and no verdict is ok.
func TestLabIKEWrongPSK(t *testing.T) {
	scenario.RequireVM(t)
	exp := startLabExporter(t, nil)
	for i, dp := range scenario.DaemonPairs {
		t.Run(dp.Name, func(t *testing.T) {
			t.Parallel() // see labPair
			p := labPair(t, i)
			evA, evB := p.A.WatchXfrmEvents(t), p.B.WatchXfrmEvents(t)
			before := exp.samples(t)
			e := p.IKE(t, dp.A, dp.B, scenario.IKEOptions{WrongPSK: true, Trap: true})
			if !waitPolicies(t, p.A, 2, 30*time.Second) {
				t.Fatalf("A's trap policies not installed after 30s; log:\n%s", e.A.LogTail())
			}
			viciA := viciExporter(t, e.A)
			xA := p.A.XfrmStat(t)
			const n = 5
			if got := p.A.PingTimeout(t, e.BAddr, n, 3*time.Second); got != 0 {
				t.Errorf("%d replies with a wrong PSK", got)
			}
			larval := 0.0
			deadline := time.Now().Add(10 * time.Second)
			for larval == 0 && time.Now().Before(deadline) {
				larval = exp.samples(t).value(t, "ipsec_sa_larval", labels("netns", p.A.Name))
				time.Sleep(100 * time.Millisecond)
			}
			if larval < 1 {
				t.Errorf("ipsec_sa_larval{netns=A} never rose after the acquire")
			}
			time.Sleep(5 * time.Second) // the daemons give up
			dA := p.A.XfrmStat(t).Sub(xA)
			after := waitEventsSettled(t, exp, map[string]*scenario.XfrmEvents{p.A.Name: evA, p.B.Name: evB})
			if got := after.value(t, "ipsec_xfrm_events_total", labels("netns", p.A.Name, "event", "acquire")); got < 1 {
				t.Errorf("no acquire event in A")
			}
			a, b := p.A.IPv4.String(), p.B.IPv4.String()
			for _, l := range []map[string]string{
				labels("direction", "encrypt", "peer", b, "result", "ok"),
				labels("direction", "decrypt", "peer", a, "result", "ok"),
				labels("direction", "encrypt", "peer", a, "result", "ok"),
				labels("direction", "decrypt", "peer", b, "result", "ok"),
			} {
				if d := after.value(t, "ipsec_xfrm_packets_total", l) - before.value(t, "ipsec_xfrm_packets_total", l); d != 0 {
					t.Errorf("ipsec_xfrm_packets_total %v rose by %v with a wrong PSK", l, d)
				}
			}
			if v := after.value(t, "ipsec_peer_sas", labels("netns", p.A.Name, "peer", b, "direction", "out")); v != 0 {
				t.Errorf("A has %v SAs with B with a wrong PSK", v)
			}
			if viciA != nil {
				if got := viciA.samples(t).get(t, "ipsec_ike_connection_established", labels("connection", "lab")); got != 0 {
					t.Errorf("vici on A: connection established %v with a wrong PSK", got)
				}
			}
			t.Logf("kernel %s, %s: %d pings, larval SAs %v, A's MIB: %s", scenario.Kernel(), dp.Name, n, larval, dA)
		})
	}
}

// waitPolicies waits until n has at least want XFRM policies.
func waitPolicies(t *testing.T, n *scenario.Node, want int, timeout time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		pols, err := n.NL.XfrmPolicyList(0)
		if err != nil {
			t.Fatal(err)
		}
		if len(pols) >= want {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}
