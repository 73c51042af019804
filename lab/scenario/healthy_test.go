package scenario

import "testing"

// TestLabHealthy: pings over every healthy combination move each SA by
// exactly the number of pings on both nodes, and no xfrm_stat counter.
func TestLabHealthy(t *testing.T) {
	RequireVM(t)
	for _, o := range []ESPOptions{
		{},
		{Cipher: CBCHMAC},
		{IPv6: true},
		{IPv6: true, Cipher: CBCHMAC},
		{Tunnel: true},
		{Tunnel: true, Cipher: CBCHMAC},
		{Tunnel: true, IPv6: true},
		{NATT: true},
		{NATT: true, Tunnel: true},
		{NATT: true, IPv6: true},
	} {
		t.Run(name(o), func(t *testing.T) {
			p := NewPair(t)
			e := p.ESP(t, o)
			before := take(t, p, e)
			const n = 5
			got := p.A.Ping(t, e.BAddr, n)
			d := take(t, p, e).sub(before)
			if got != n {
				t.Errorf("ping %s: %d of %d replies; %s", e.BAddr, got, n, d)
			}
			want(t, d, "SA A->B on A", d.AAB, "packets", n)
			want(t, d, "SA A->B on B", d.BAB, "packets", n)
			want(t, d, "SA B->A on B", d.BBA, "packets", n)
			want(t, d, "SA B->A on A", d.ABA, "packets", n)
			if len(d.A)+len(d.B) != 0 {
				t.Errorf("xfrm_stat moved: %s", d)
			}
			t.Logf("%s", d)
		})
	}
}

func name(o ESPOptions) string {
	s := "v4"
	if o.IPv6 {
		s = "v6"
	}
	if o.Tunnel {
		s += "-tunnel"
	} else {
		s += "-transport"
	}
	if o.Cipher == CBCHMAC {
		s += "-cbc"
	} else {
		s += "-gcm"
	}
	if o.NATT {
		s += "-natt"
	}
	return s
}
