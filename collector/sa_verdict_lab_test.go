package collector

import (
	"log/slog"
	"testing"
	"time"

	"github.com/ipsec-exporter/ipsec_exporter/internal/verdict"
	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// TestLabSAAgreesWithVerdicts cross-checks the two independent sources of
// this exporter for the same traffic: the kernel's SA counters summed per
// peer (sa collector) and the eBPF verdict counts per peer
// (internal/verdict). Both namespaces of a pair share one kernel, so the
// verdicts for "encrypt towards B" are A's outbound SA traffic and "decrypt
// from A" is B's inbound SA traffic.
func TestLabSAAgreesWithVerdicts(t *testing.T) {
	scenario.RequireVM(t)
	v, err := verdict.Load(verdict.Options{Mode: verdict.ModeAuto, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("loading verdict programs on %s: %v", scenario.Kernel(), err)
	}
	defer func() { _ = v.Close() }()
	read := func() map[[3]string]uint64 {
		t.Helper()
		entries, err := v.Read()
		if err != nil {
			t.Fatal(err)
		}
		m := map[[3]string]uint64{}
		for _, e := range entries {
			m[[3]string{e.Direction, e.Result, e.Peer.String()}] += e.Packets
		}
		return m
	}
	for _, c := range []struct {
		name string
		opts scenario.ESPOptions
		n    int
	}{
		{"healthy", scenario.ESPOptions{}, 7},
		{"wrong-key", scenario.ESPOptions{WrongKey: true}, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := scenario.NewPair(t)
			b := newStateCollectors(t, p.A.Netns, p.B.Netns)
			e := p.ESP(t, c.opts)
			before := read()
			books0 := b.scrape(t)
			p.A.PingTimeout(t, e.BAddr, c.n, time.Second)
			after := read()
			books := b.scrape(t)
			delta := func(k [3]string) uint64 { return after[k] - before[k] }
			peerDelta := func(netns, peer, dir, metric string) uint64 {
				l := labels("netns", netns, "peer", peer, "direction", dir)
				return uint64(books.get(t, metric, l) - books0.get(t, metric, l))
			}
			a, bAddr := p.A.IPv4.String(), p.B.IPv4.String()
			checks := []struct {
				what          string
				books, verdct uint64
			}{
				{"A->B encrypted", peerDelta(p.A.Name, bAddr, "out", "ipsec_peer_packets_total"), delta([3]string{"encrypt", "ok", bAddr})},
				{"A->B decrypted by B", peerDelta(p.B.Name, a, "in", "ipsec_peer_packets_total"), delta([3]string{"decrypt", "ok", a})},
				{"A->B integrity failures at B", peerDelta(p.B.Name, a, "in", "ipsec_peer_integrity_failures_total"), delta([3]string{"decrypt", "integrity", a})},
				{"B->A encrypted", peerDelta(p.B.Name, a, "out", "ipsec_peer_packets_total"), delta([3]string{"encrypt", "ok", a})},
				{"B->A decrypted by A", peerDelta(p.A.Name, bAddr, "in", "ipsec_peer_packets_total"), delta([3]string{"decrypt", "ok", bAddr})},
			}
			for _, ch := range checks {
				if ch.books != ch.verdct {
					t.Errorf("%s: SA books %d packets, eBPF verdicts %d", ch.what, ch.books, ch.verdct)
				}
				t.Logf("kernel %s %s: %s: books %d, verdicts %d", scenario.Kernel(), c.name, ch.what, ch.books, ch.verdct)
			}
			wantOK := uint64(c.n)
			if c.opts.WrongKey {
				wantOK = 0
			}
			if checks[1].books != wantOK {
				t.Errorf("B decrypted %d, want %d", checks[1].books, wantOK)
			}
		})
	}
}
