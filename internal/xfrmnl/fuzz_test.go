package xfrmnl

import (
	"errors"
	"testing"
)

// The fuzz targets feed arbitrary bytes to every decoder: none may panic,
// and every failure must be ErrMalformed. Seeds are the encoders' realistic
// messages plus the committed corpus in testdata/fuzz.

func checkErr(t *testing.T, err error) {
	if err != nil && !errors.Is(err, ErrMalformed) {
		t.Fatalf("error %v does not wrap ErrMalformed", err)
	}
}

func FuzzParseSA(f *testing.F) {
	_, b := sampleSA()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		sa, err := ParseSA(b)
		checkErr(t, err)
		if err == nil {
			if r, ok := sa.SeqUsedRatio(); ok && (r < 0 || r > 1) {
				t.Fatalf("sequence ratio %v", r)
			}
		}
	})
}

func FuzzParsePolicy(f *testing.F) {
	_, b := samplePolicy()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := ParsePolicy(b)
		checkErr(t, err)
	})
}

func FuzzParseNotification(f *testing.F) {
	_, sa := sampleSA()
	_, pol := samplePolicy()
	f.Add(uint16(msgNewSA), sa)
	f.Add(uint16(msgNewPolicy), pol)
	f.Add(uint16(msgDelSA), append(make([]byte, sizeofUsersaID), encodeAttr(xfrmaSA, sa[:sizeofUsersaInfo])...))
	f.Add(uint16(msgExpire), append(sa[:sizeofUsersaInfo:sizeofUsersaInfo], make([]byte, 8)...))
	f.Fuzz(func(t *testing.T, typ uint16, b []byte) {
		n, ok, err := ParseNotification(typ, b)
		checkErr(t, err)
		if ok && n.Event == "" {
			t.Fatal("event without a name")
		}
	})
}

func FuzzParseInfo(f *testing.F) {
	f.Add(append(u32(0), encodeAttr(xfrmaSADCnt, u32(3))...))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := ParseSADInfo(b)
		checkErr(t, err)
		_, err = ParseSPDInfo(b)
		checkErr(t, err)
	})
}

func FuzzSplitMessages(f *testing.F) {
	f.Add([]byte{16, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, err := splitMessages(nil, b)
		checkErr(t, err)
		for _, m := range msgs {
			if len(m.data) > len(b) {
				t.Fatal("message longer than input")
			}
		}
	})
}
