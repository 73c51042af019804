package xfrmnl

import "testing"

// BenchmarkDecodeSA is the decoding an SA dump does per SA (into one reused
// SA, as EachSA does).
func BenchmarkDecodeSA(b *testing.B) {
	_, msg := sampleSA()
	var sa SA
	b.ReportAllocs()
	for b.Loop() {
		if err := decodeSA(&sa, msg); err != nil {
			b.Fatal(err)
		}
	}
}
