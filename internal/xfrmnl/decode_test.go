package xfrmnl

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"testing"
)

func TestParseSA(t *testing.T) {
	want, b := sampleSA()
	got, err := ParseSA(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got, want)
	}
	if r, ok := got.SeqUsedRatio(); !ok || r != float64(5<<32|10)/math.MaxUint64 {
		t.Errorf("sequence ratio %v %v", r, ok)
	}
	if bytes.Contains([]byte(fmt.Sprintf("%+v", got)), []byte{0xEE, 0xEE}) {
		t.Error("key bytes in the decoded SA")
	}
}

func TestParseSALegacyReplay(t *testing.T) {
	sa, _ := sampleSA()
	sa.Flags, sa.ESN = 0, false
	b := encodeUsersaInfo(sa)
	b = append(b, encodeAttr(xfrmaReplayVal, append(append(u32(math.MaxUint32/2), u32(7)...), u32(0)...))...)
	got, err := ParseSA(b)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := got.SeqUsedRatio(); !ok || math.Abs(r-0.5) > 1e-9 {
		t.Errorf("sequence ratio %v %v, want 0.5", r, ok)
	}
	if got.Seq != 7 {
		t.Errorf("seq %d", got.Seq)
	}
}

func TestParseSAMalformed(t *testing.T) {
	_, good := sampleSA()
	cases := map[string][]byte{
		"short":          good[:sizeofUsersaInfo-1],
		"bad family":     func() []byte { b := bytes.Clone(good); b[212], b[213] = 99, 0; return b }(),
		"attr overrun":   append(bytes.Clone(good[:sizeofUsersaInfo]), 0xff, 0x00, 0x01, 0x00),
		"attr too short": append(bytes.Clone(good[:sizeofUsersaInfo]), 2, 0, 1, 0),
		"trailing":       append(bytes.Clone(good), 1),
		"short algo":     append(bytes.Clone(good[:sizeofUsersaInfo]), encodeAttr(xfrmaAlgAEAD, []byte("gcm"))...),
		"short replay":   append(bytes.Clone(good[:sizeofUsersaInfo]), encodeAttr(xfrmaReplayESN, make([]byte, 8))...),
		"binary name":    append(bytes.Clone(good[:sizeofUsersaInfo]), encodeAttr(xfrmaAlgCrypt, algo("a\x01b", 0, 16))...),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseSA(b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
}

func TestParsePolicy(t *testing.T) {
	want, b := samplePolicy()
	got, err := ParsePolicy(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got, want)
	}
	bad := bytes.Clone(b)
	bad[42] = 200 // a /200 prefix
	if _, err := ParsePolicy(bad); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad prefix: %v", err)
	}
}

func TestParseNotifications(t *testing.T) {
	sa, saMsg := sampleSA()
	pol, polMsg := samplePolicy()

	// Delete notifications: id header, the info wrapped in an attribute,
	// the rest of the attributes at the top level.
	delSA := make([]byte, sizeofUsersaID)
	delSA = append(delSA, encodeAttr(xfrmaSA, saMsg[:sizeofUsersaInfo])...)
	delSA = append(delSA, saMsg[sizeofUsersaInfo:]...)
	delPol := make([]byte, sizeofPolicyID)
	delPol = append(delPol, encodeAttr(xfrmaPolicy, polMsg[:sizeofPolicyInfo])...)
	delPol = append(delPol, polMsg[sizeofPolicyInfo:]...)
	expire := func(hard byte) []byte {
		b := bytes.Clone(saMsg[:sizeofUsersaInfo])
		b = append(b, hard, 0, 0, 0, 0, 0, 0, 0)
		return append(b, encodeAttr(xfrmaMark, append(u32(sa.Mark), u32(sa.MarkMask)...))...)
	}
	polExpire := append(bytes.Clone(polMsg[:sizeofPolicyInfo]), 1, 0, 0, 0, 0, 0, 0, 0)

	for _, c := range []struct {
		typ  uint16
		msg  []byte
		want Event
		sa   bool
		pol  bool
	}{
		{msgNewSA, saMsg, EventSAAdded, true, false},
		{msgUpdSA, saMsg, EventSAUpdated, true, false},
		{msgDelSA, delSA, EventSADeleted, true, false},
		{msgExpire, expire(0), EventSASoftExpired, false, false},
		{msgExpire, expire(1), EventSAHardExpired, false, false},
		{msgFlushSA, []byte{50}, EventSAFlushed, false, false},
		{msgAcquire, nil, EventAcquire, false, false},
		{msgMapping, nil, EventMapping, false, false},
		{msgNewPolicy, polMsg, EventPolicyAdded, false, true},
		{msgUpdPolicy, polMsg, EventPolicyUpdated, false, true},
		{msgDelPolicy, delPol, EventPolicyDeleted, false, true},
		{msgPolExpire, polExpire, EventPolicyHardExpired, false, false},
		{msgFlushPolicy, nil, EventPolicyFlushed, false, false},
		{msgNewAE, nil, EventReplayUpdate, false, false},
	} {
		n, ok, err := ParseNotification(c.typ, c.msg)
		if err != nil || !ok || n.Event != c.want {
			t.Errorf("type %#x: got %v %v %v, want %s", c.typ, n.Event, ok, err, c.want)
			continue
		}
		if c.sa && !reflect.DeepEqual(*n.SA, sa) {
			t.Errorf("type %#x: SA\n%+v\nwant\n%+v", c.typ, *n.SA, sa)
		}
		if c.pol && !reflect.DeepEqual(*n.Policy, pol) {
			t.Errorf("type %#x: policy\n%+v\nwant\n%+v", c.typ, *n.Policy, pol)
		}
		if c.typ == msgExpire && (n.SA.SPI != sa.SPI || n.SA.Mark != sa.Mark) {
			t.Errorf("expire: SA %+v", n.SA)
		}
	}
	if _, ok, err := ParseNotification(msgGetSA, nil); ok || err != nil {
		t.Errorf("a request type is not an event: %v %v", ok, err)
	}
	for _, typ := range []uint16{msgNewSA, msgDelSA, msgExpire, msgNewPolicy, msgDelPolicy, msgPolExpire} {
		if _, _, err := ParseNotification(typ, make([]byte, 10)); !errors.Is(err, ErrMalformed) {
			t.Errorf("type %#x, 10 bytes: %v", typ, err)
		}
	}
}

func TestParseInfo(t *testing.T) {
	sad := append(u32(0), encodeAttr(xfrmaSADCnt, u32(12))...)
	sad = append(sad, encodeAttr(xfrmaSADHInfo, append(u32(16), u32(1<<20)...))...)
	got, err := ParseSADInfo(sad)
	if err != nil || got != (SADInfo{Count: 12, HashBuckets: 16, HashMax: 1 << 20}) {
		t.Errorf("SAD info %+v %v", got, err)
	}
	counts := []byte{}
	for _, v := range []uint32{1, 2, 3, 4, 5, 6} {
		counts = append(counts, u32(v)...)
	}
	spd := append(u32(0), encodeAttr(xfrmaSPDInfo, counts)...)
	spdGot, err := ParseSPDInfo(spd)
	if err != nil || spdGot != (SPDInfo{In: 1, Out: 2, Fwd: 3, SocketIn: 4, SocketOut: 5, SocketFwd: 6}) {
		t.Errorf("SPD info %+v %v", spdGot, err)
	}
	if _, err := ParseSPDInfo(append(u32(0), encodeAttr(xfrmaSPDInfo, u32(1))...)); !errors.Is(err, ErrMalformed) {
		t.Errorf("short SPD counts: %v", err)
	}
	for name, b := range map[string][]byte{"no count": u32(0), "short": {1}} {
		_, err1 := ParseSADInfo(b)
		_, err2 := ParseSPDInfo(b)
		if !errors.Is(err1, ErrMalformed) || !errors.Is(err2, ErrMalformed) {
			t.Errorf("%s: %v / %v", name, err1, err2)
		}
	}
}

func TestSplitMessages(t *testing.T) {
	if _, err := splitMessages(nil, []byte{20, 0, 0, 0, 1, 0}); !errors.Is(err, ErrMalformed) {
		t.Errorf("short header: %v", err)
	}
	if _, err := splitMessages(nil, append([]byte{200, 0, 0, 0}, make([]byte, 12)...)); !errors.Is(err, ErrMalformed) {
		t.Errorf("overlong: %v", err)
	}
}
