package collector

import (
	"log/slog"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/xfrmnl"
)

// remoteAccessSAs are n tunnel SAs of a remote-access gateway at 10.80.0.1:
// one inbound and one outbound per client, n/2 clients.
func remoteAccessSAs(n int) []xfrmnl.SA {
	gw := netip.MustParseAddr("10.80.0.1")
	sas := make([]xfrmnl.SA, n)
	for i := range sas {
		client := netip.AddrFrom4([4]byte{10, 81, byte(i >> 9), byte(i >> 1)})
		src, dst := gw, client
		if i%2 == 1 {
			src, dst = client, gw
		}
		sas[i] = xfrmnl.SA{Family: unix.AF_INET, Src: src, Dst: dst, SPI: uint32(0x10000 + i), Proto: unix.IPPROTO_ESP,
			Mode: 1, Reqid: uint32(i/2 + 1), Bytes: uint64(i) * 1000, Packets: uint64(i), AddTime: 1700000000,
			Limits:     xfrmnl.Limits{SoftBytes: inf, HardBytes: inf, SoftPackets: inf, HardPackets: inf, SoftAddSeconds: 3000, HardAddSeconds: 3600},
			HaveReplay: true, OSeq: uint64(i), AEAD: "rfc4106(gcm(aes))"}
	}
	return sas
}

// BenchmarkSAUpdate is one scrape of the sa collector over 50,000 SAs with
// the default per-SA cap, the kernel's dump and decoding left out (a fake
// reader hands over decoded SAs): what the collector itself adds. As a
// gateway (its address local: 25,000 peers, two series sets each) and with
// neither end local (direction unknown: one peer series), the shape of the
// lab's kernel-state bench.
func BenchmarkSAUpdate(b *testing.B) {
	for _, bc := range []struct {
		name  string
		local addrSet
	}{{"gateway", localOf("10.80.0.1")}, {"unknown", nil}} {
		b.Run(bc.name, func(b *testing.B) {
			snaps := map[string]saSnapshot{"gw": {SAs: remoteAccessSAs(50000), Local: bc.local}}
			c := newSACollector(slog.New(slog.DiscardHandler), fakeNamespaces("gw"), fakeSAReader(snaps), true, 1000)
			ch := make(chan prometheus.Metric, 1024)
			go func() {
				for range ch { // what a registry does with them is not measured
				}
			}()
			defer close(ch)
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Update(ch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
