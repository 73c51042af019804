package xfrmstat

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The fixtures are real files: testdata/xfrm_stat-<kernel> captured inside
// the lab VMs (6.1, 6.12) and on the build host (6.18).
func TestFixtures(t *testing.T) {
	want := map[string]int{"6.1": 28, "6.12": 30, "6.18": 32}
	for kernel, n := range want {
		t.Run(kernel, func(t *testing.T) {
			counters, err := ReadFile(filepath.Join("testdata", "xfrm_stat-"+kernel))
			if err != nil {
				t.Fatal(err)
			}
			if len(counters) != n {
				t.Fatalf("got %d counters, want %d", len(counters), n)
			}
			if counters[0].Name != "XfrmInError" {
				t.Errorf("first counter %q, want the kernel's order starting with XfrmInError", counters[0].Name)
			}
			for _, c := range counters {
				if _, ok := Meaning(c.Name); !ok {
					t.Errorf("no meaning for %s", c.Name)
				}
			}
		})
	}
}

func TestParse(t *testing.T) {
	got, err := Parse([]byte("XfrmInError             \t7\nXfrmFutureCounter\t18446744073709551615\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Counter{{"XfrmInError", 7}, {"XfrmFutureCounter", 18446744073709551615}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestParseMalformed(t *testing.T) {
	for name, in := range map[string]string{
		"empty":       "",
		"blank":       "\n\n",
		"no value":    "XfrmInError\n",
		"three":       "XfrmInError 1 2\n",
		"negative":    "XfrmInError -1\n",
		"plus":        "XfrmInError +1\n",
		"hex":         "XfrmInError 0x10\n",
		"overflow":    "XfrmInError 18446744073709551616\n",
		"float":       "XfrmInError 1.5\n",
		"repeated":    "XfrmInError 1\nXfrmInError 2\n",
		"bad name":    "Xfrm-In 1\n",
		"digit first": "1Xfrm 1\n",
		"utf8 name":   "Xfrmé 1\n",
		"too many":    strings.Repeat("X", 0) + manyCounters(300),
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Parse([]byte(in))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, %v; want ErrMalformed", got, err)
			}
		})
	}
}

func manyCounters(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("Xfrm")
		for _, c := range []byte{byte('A' + i/26%26), byte('A' + i%26), byte('A' + i/676)} {
			b.WriteByte(c)
		}
		b.WriteString(" 1\n")
	}
	return b.String()
}

func TestReadFileMissing(t *testing.T) {
	_, err := ReadFile(filepath.Join(t.TempDir(), "absent"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want ErrNotExist", err)
	}
}

// FuzzParse checks that no input panics and that whatever is accepted
// round-trips: each counter's value is exactly the digits of its line.
func FuzzParse(f *testing.F) {
	for _, kernel := range []string{"6.1", "6.12", "6.18"} {
		if data, err := os.ReadFile(filepath.Join("testdata", "xfrm_stat-"+kernel)); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		counters, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		var b strings.Builder
		for _, c := range counters {
			if !validName(c.Name) {
				t.Fatalf("accepted bad name %q", c.Name)
			}
			b.WriteString(c.Name + " " + uitoa(c.Value) + "\n")
		}
		again, err := Parse([]byte(b.String()))
		if err != nil || len(again) != len(counters) {
			t.Fatalf("re-parse of %q: %v", b.String(), err)
		}
		for i := range again {
			if again[i] != counters[i] {
				t.Fatalf("round trip changed %v to %v", counters[i], again[i])
			}
		}
	})
}

func uitoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var buf [20]byte
	i := len(buf)
	for v > 0 {
		i--
		buf[i] = byte('0' + v%10)
		v /= 10
	}
	return string(buf[i:])
}

// TestKnownMatchesMeanings: the ordered list and the meanings are the same
// set, in the order of the newest fixture (the host's 6.18).
func TestKnownMatchesMeanings(t *testing.T) {
	known := Known()
	if len(known) != len(meanings) {
		t.Fatalf("%d known, %d meanings", len(known), len(meanings))
	}
	newest, err := ReadFile(filepath.Join("testdata", "xfrm_stat-6.18"))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range newest {
		if known[i] != c.Name {
			t.Errorf("Known()[%d] = %s, kernel order has %s", i, known[i], c.Name)
		}
	}
}
