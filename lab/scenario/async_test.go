package scenario

import (
	"strings"
	"testing"
)

// TestLabAsyncCrypto: with the AEAD wrapped in pcrypt(...), every ESP packet
// completes asynchronously: the kernel runs esp_output_done and
// esp_input_done once per packet (counted by kprobe trace events), and
// xfrm_input runs twice per packet (the call and the resume after the crypto
// completion). The instance is gone after the test.
func TestLabAsyncCrypto(t *testing.T) {
	RequireVM(t)
	var driver string
	t.Cleanup(func() { // registered first, so it runs after AsyncCrypto's cleanup
		for _, a := range CryptoAlgs(t) {
			if a.Driver == driver {
				t.Errorf("%s still registered after cleanup", driver)
			}
		}
	})
	p := NewPair(t)
	driver = AsyncCrypto(t, "rfc4106(gcm(aes))")
	t.Logf("async driver %s", driver)
	e := p.ESP(t, ESPOptions{})
	outDone := CountCalls(t, "esp4:esp_output_done")
	inDone := CountCalls(t, "esp4:esp_input_done")
	input := CountCalls(t, "xfrm_input")
	before := take(t, p, e)
	const n = 5
	if got := p.A.Ping(t, e.BAddr, n); got != n {
		t.Fatalf("%d of %d replies", got, n)
	}
	d := take(t, p, e).sub(before)
	// Each ping is two ESP packets (request and reply), each encrypted once
	// and decrypted once.
	if got := outDone(); got != 2*n {
		t.Errorf("esp_output_done ran %d times, want %d", got, 2*n)
	}
	if got := inDone(); got != 2*n {
		t.Errorf("esp_input_done ran %d times, want %d", got, 2*n)
	}
	if got := input(); got != 4*n {
		t.Errorf("xfrm_input ran %d times, want %d (call + resume per packet)", got, 4*n)
	}
	want(t, d, "SA A->B on B", d.BAB, "packets", n)
	t.Logf("%s", d)
}

// TestLabSyncCryptoBaseline: without the pcrypt instance the same pings
// never complete asynchronously (the baseline that makes the async test
// meaningful).
func TestLabSyncCryptoBaseline(t *testing.T) {
	RequireVM(t)
	p := NewPair(t)
	e := p.ESP(t, ESPOptions{})
	for _, a := range CryptoAlgs(t) {
		if strings.HasPrefix(a.Driver, "pcrypt(") {
			t.Fatalf("a pcrypt instance is still registered: %s", a.Driver)
		}
	}
	outDone := CountCalls(t, "esp4:esp_output_done")
	input := CountCalls(t, "xfrm_input")
	if got := p.A.Ping(t, e.BAddr, 5); got != 5 {
		t.Fatalf("%d of 5 replies", got)
	}
	if got := outDone(); got != 0 {
		t.Errorf("esp_output_done ran %d times without async crypto", got)
	}
	if got := input(); got != 10 {
		t.Errorf("xfrm_input ran %d times, want 10", got)
	}
}
