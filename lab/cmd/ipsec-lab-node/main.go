// Command ipsec-lab-node runs inside the `make lab` VM. It builds a small
// IPsec world out of lab/scenario building blocks: healthy tunnels
// negotiated and rekeyed by strongSwan as in production (a gateway with
// bulk TCP, IPv6 transport, NAT-T), async crypto, and hand-made SAs that
// fail on purpose (what a daemon cannot be made to do). It starts the
// exporter in the root namespace, where it sees every namespace, with the
// vici collector reading the gateway's charon, and keeps traffic and a slow
// trickle of failures going until the VM is stopped.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
	"github.com/vishvananda/netlink"
)

func main() {
	listen := flag.String("listen", ":10871", "exporter listen address")
	flag.Parse()
	log.SetFlags(log.Ltime)
	log.SetOutput(os.Stdout)
	t := newTB("setup")
	var w *world
	if !step(t, "building the scenario", func() { w = build(t) }) {
		os.Exit(1)
	}
	exporter := exec.Command(scenario.ExporterBin(), "--web.listen-address="+*listen,
		"--collector.vici", "--collector.vici.socket="+w.gw.IKE.A.(*scenario.Charon).VICI)
	exporter.Stdout, exporter.Stderr = os.Stdout, os.Stdout
	if err := exporter.Start(); err != nil {
		log.Fatalf("start exporter: %v", err)
	}
	log.Printf("exporter started, listening on %s", *listen)
	for _, line := range w.scenario() {
		// Unprefixed, so that the host's ipsec-lab sees the marker and
		// puts the line into its banner.
		fmt.Println("@@LAB scenario " + line)
	}
	w.run()
	if err := exporter.Wait(); err != nil {
		log.Fatalf("exporter: %v", err)
	}
}

// world is everything the lab set up.
type world struct {
	gw                         *scenario.Gateway
	v6, natt, async            *scenario.Pair
	e6, eNATT                  *scenario.IKE
	eAsync                     *scenario.ESP
	wrong, noIn, noOut, replay *scenario.Pair
	eWrong, eNoIn, eNoOut, eRe *scenario.ESP
	alerts                     *alertFaults
}

func build(t *tb) *world {
	w := &world{}
	// The healthy tunnels are strongSwan's, rekeyed every few minutes (the
	// lifetime, expiry and event panels move as in production), with DPD.
	ss := scenario.StrongSwanKind
	// The hard lifetime stays more than IpsecSANearHardExpiry's headroom (3
	// minutes) past the rekey, as with the daemons' defaults, so that
	// healthy tunnels never fire it: with 4 minutes every child SA fired
	// it for the minute before its rekey.
	rekey := scenario.IKEOptions{ChildRekey: 3 * time.Minute, ChildLifetime: 7 * time.Minute, IKERekey: 15 * time.Minute, DPD: 10 * time.Second}
	// A gateway: client C behind A, tunnel A<->B.
	gw := rekey
	gw.Name = "gateway"
	w.gw = scenario.NewIKEGateway(t, ss, ss, gw)
	// IPv6 transport.
	v6 := rekey
	v6.Name, v6.IPv6 = "v6", true
	w.v6 = scenario.NewPairNamed(t, "v6a", "v6b", 1)
	w.e6 = w.v6.IKE(t, ss, ss, v6)
	// ESP in UDP 4500, forced (no NAT on the path), in tunnel mode.
	natt := rekey
	natt.Name, natt.Encap, natt.Tunnel = "natt", true, true
	w.natt = scenario.NewPairNamed(t, "natta", "nattb", 2)
	w.eNATT = w.natt.IKE(t, ss, ss, natt)
	// Failures on purpose, one pair each.
	w.wrong = scenario.NewPairNamed(t, "badkeya", "badkeyb", 3)
	w.eWrong = w.wrong.ESP(t, scenario.ESPOptions{WrongKey: true})
	w.noIn = scenario.NewPairNamed(t, "noina", "noinb", 4)
	w.eNoIn = w.noIn.ESP(t, scenario.ESPOptions{NoInboundSA: true})
	w.noOut = scenario.NewPairNamed(t, "nouta", "noutb", 5)
	w.eNoOut = w.noOut.ESP(t, scenario.ESPOptions{NoOutboundSA: true})
	w.replay = scenario.NewPairNamed(t, "replaya", "replayb", 6)
	w.eRe = w.replay.ESP(t, scenario.ESPOptions{})
	// Async crypto last: SAs created after this are async too (the expiry
	// cycle's, and the daemons' tunnels from their first rekey on).
	w.async = scenario.NewPairNamed(t, "asynca", "asyncb", 7)
	scenario.AsyncCrypto(t, "rfc4106(gcm(aes))")
	w.eAsync = w.async.ESP(t, scenario.ESPOptions{})
	w.alerts = buildAlertFaults(t)
	return w
}

// scenario says what build made, for the host's banner.
func (w *world) scenario() []string {
	return append([]string{
		"strongSwan tunnels, rekeyed every 3 min, with DPD: a gateway with bulk TCP every 10s, IPv6 transport, NAT-T;",
		"async crypto (pcrypt) on a hand-made pair; the vici collector reads the gateway's charon",
		"failures on purpose: a wrong key (integrity, IpsecDecryptFailures), no inbound SA, no outbound SA (IpsecEncryptFailures),",
		"replays, SAs that reach their packet limit every 50 s",
	}, w.alerts.scenario()...)
}

// every runs f every d, forever, each time with its own cleanup scope.
func every(name string, d time.Duration, f func(t *tb)) {
	go func() {
		for i := 0; ; i++ {
			t := newTB(name + "#" + strconv.Itoa(i))
			step(t, name, func() { f(t) })
			t.close()
			time.Sleep(d)
		}
	}()
}

func (w *world) run() {
	g := w.gw
	every("gateway-ping", 200*time.Millisecond, func(t *tb) { g.C.Ping(t, g.Server, 1) })
	every("gateway-bulk", 10*time.Second, func(t *tb) { scenario.BulkTCP(t, g.C.Netns, g.B.Netns, g.Server, 1<<20) })
	every("v6-ping", 500*time.Millisecond, func(t *tb) { w.v6.A.Ping(t, w.e6.BAddr, 2) })
	every("natt-ping", time.Second, func(t *tb) { w.natt.A.Ping(t, w.eNATT.BAddr, 1) })
	every("async-ping", time.Second, func(t *tb) { w.async.A.Ping(t, w.eAsync.BAddr, 1) })
	short := 200 * time.Millisecond
	// The wrong key and the missing outbound SA fail every packet of a
	// ping a second, as a broken tunnel fails all its traffic: about
	// 0.8/s, well above the alerts' minimum rate (0.1/s), so that the
	// alerts fire soon after the first samples (a rate over the lab's 2m
	// window reaches 0.1/s after 0.1*120/0.8 = 15 s of data).
	every("integrity-failure", time.Second, func(t *tb) { w.wrong.A.PingTimeout(t, w.eWrong.BAddr, 1, short) })
	every("no-inbound-state", 7*time.Second, func(t *tb) { w.noIn.A.PingTimeout(t, w.eNoIn.BAddr, 1, short) })
	every("no-outbound-state", time.Second, func(t *tb) {
		t.quiet = true // sendto fails on purpose
		w.noOut.A.PingTimeout(t, w.eNoOut.BAddr, 1, short)
	})
	every("replay", 13*time.Second, func(t *tb) { w.replay.Replay(t, w.eRe, 2) })
	// An SA that reaches its hard packet limit, expires and is deleted, then
	// the pair goes away and a new one comes.
	every("expiry", 30*time.Second, func(t *tb) {
		t.quiet = true // sendto fails on purpose once the SA expired
		p := scenario.NewPairNamed(t, "expirea", "expireb", 8)
		e := p.ESP(t, scenario.ESPOptions{HardPackets: 10, Limits: netlink.XfrmStateLimits{PacketSoft: 5}})
		p.A.Ping(t, e.BAddr, 8)
		p.A.PingTimeout(t, e.BAddr, 4, short)
		time.Sleep(20 * time.Second)
	})
	w.alerts.run()
}
