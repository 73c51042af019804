package main

import (
	"net"
	"time"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// The faults behind the lab's headline alerts that the failure trickle in
// main.go does not provoke (IpsecDecryptFailures and IpsecEncryptFailures
// come from its wrong key and missing outbound SA):
//   - IpsecUnprotectedTrafficToPeer: a pair with ESP and a hole in A's
//     policies, through which A sends two UDP datagrams a second to B in
//     clear;
//   - IpsecSANearHardExpiry: a pair whose A->B SA is kept 2 to 2.5 minutes
//     from its hard time limit, as when IKE's rekey keeps failing (the
//     alert's headroom is 3 minutes). Refreshed before its soft limit, so
//     the kernel neither asks for a rekey nor deletes it.
type alertFaults struct {
	leak     *scenario.Pair
	leakESP  *scenario.ESP
	hole     *scenario.PolicyHole
	stale    *scenario.Pair
	staleESP *scenario.ESP
}

// leakPort is the UDP port the policy hole lets out in clear.
const leakPort = 7777

func buildAlertFaults(t *tb) *alertFaults {
	a := &alertFaults{}
	a.leak = scenario.NewPairNamed(t, "leaka", "leakb", 9)
	a.leakESP = a.leak.ESP(t, scenario.ESPOptions{})
	a.hole = scenario.NewPolicyHole(t, a.leak.A, a.leakESP, leakPort)
	if err := a.hole.SetOpen(true); err != nil {
		t.Fatal(err)
	}
	a.stale = scenario.NewPairNamed(t, "stalea", "staleb", 10)
	a.staleESP = a.stale.ESP(t, scenario.ESPOptions{})
	return a
}

func (a *alertFaults) run() {
	every("plaintext-to-peer", 0, func(t *tb) {
		udp := scenario.UDPSender(t, a.leak.A.Netns, "udp4")
		dst := &net.UDPAddr{IP: a.leakESP.BAddr.AsSlice(), Port: leakPort}
		for {
			if _, err := udp.WriteTo([]byte("ipsec-lab: in clear through a policy hole"), dst); err != nil {
				t.Fatalf("send to %s: %v", dst, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
	every("sa-near-hard-expiry", 30*time.Second, func(t *tb) {
		if err := scenario.ExpireIn(a.stale.A.Netns, a.staleESP.AB, 100*time.Second, 150*time.Second); err != nil {
			t.Fatal(err)
		}
	})
}

// scenario describes the faults for the banner.
func (a *alertFaults) scenario() []string {
	return []string{
		"a policy hole: UDP to " + a.leakESP.BAddr.String() + " port 7777 leaves in clear, 2 datagrams/s (IpsecUnprotectedTrafficToPeer)",
		"an SA kept 2-2.5 min from its hard expiry, as when rekeying fails (IpsecSANearHardExpiry)",
	}
}
