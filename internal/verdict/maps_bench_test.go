package verdict

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
)

// BenchmarkRead is the map read alone (batch lookup, per-CPU sums, label
// values) for 100 to 100k keys.
func BenchmarkRead(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to create BPF maps")
	}
	for _, n := range []int{100, 1000, 10000, 100000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			m, err := NewMaps(uint32(n))
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			entries := make([]Entry, n)
			for i := range entries {
				entries[i] = Entry{Direction: "encrypt", Result: "ok", Packets: 1, Bytes: 100,
					Peer: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})}
			}
			if err := m.Set(entries); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				got, err := m.Read()
				if err != nil || len(got) != n {
					b.Fatalf("read %d entries, %v", len(got), err)
				}
			}
		})
	}
}
