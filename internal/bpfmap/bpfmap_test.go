package bpfmap

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
)

type pair struct{ Packets, Bytes uint64 }

// newMap creates a real map; without the right to (not root, no CAP_BPF)
// the test is skipped and says so.
func newMap(t *testing.T, spec *ebpf.MapSpec) *ebpf.Map {
	t.Helper()
	if err := RemoveMemlock(); err != nil {
		t.Logf("%v (kernels from 5.11 do not need it)", err)
	}
	m, err := ebpf.NewMap(spec)
	if errors.Is(err, fs.ErrPermission) {
		t.Skipf("creating BPF maps needs root or CAP_BPF: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// The per-CPU hash holds key i with CPU c's slot {i*c, 1}: each key's values
// must arrive in its own CPU order, whatever the batch boundaries (700 keys
// are three batches) and whether batch or iteration reads them.
func TestReaderPerCPUHash(t *testing.T) {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	const n = 700
	m := newMap(t, &ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 16, MaxEntries: n})
	for i := range uint32(n) {
		v := make([]pair, ncpu)
		for c := range v {
			v[c] = pair{Packets: uint64(i) * uint64(c), Bytes: 1}
		}
		if err := m.Put(i, v); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader[uint32, pair](m)
	for _, via := range []string{"batch", "iteration"} {
		if via == "iteration" {
			r.ForceIteration()
		}
		seen := map[uint32]bool{}
		err := r.Each(func(k uint32, v []pair) {
			if len(v) != ncpu {
				t.Fatalf("%s: key %d has %d values, want one per CPU (%d)", via, k, len(v), ncpu)
			}
			for c, p := range v {
				if p != (pair{Packets: uint64(k) * uint64(c), Bytes: 1}) {
					t.Errorf("%s: key %d CPU %d = %+v", via, k, c, p)
				}
			}
			seen[k] = true
		})
		if err != nil {
			t.Fatalf("%s: %v", via, err)
		}
		if len(seen) != n {
			t.Errorf("%s: %d keys read, want %d", via, len(seen), n)
		}
	}
}

func TestReaderPlainArray(t *testing.T) {
	m := newMap(t, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 300})
	if err := m.Put(uint32(299), pair{Packets: 7, Bytes: 9}); err != nil {
		t.Fatal(err)
	}
	r := NewReader[uint32, pair](m)
	for _, via := range []string{"batch", "iteration"} {
		if via == "iteration" {
			r.ForceIteration()
		}
		var keys int
		var got pair
		if err := r.Each(func(k uint32, v []pair) {
			keys++
			if len(v) != 1 {
				t.Fatalf("%s: %d values for a plain array key", via, len(v))
			}
			if k == 299 {
				got = v[0]
			}
		}); err != nil {
			t.Fatal(err)
		}
		if keys != 300 || got != (pair{7, 9}) {
			t.Errorf("%s: %d keys, key 299 = %+v; want 300 keys, {7 9}", via, keys, got)
		}
	}
}

// EachFirst reads indexes 0..n-1 of a per-CPU array, across batch
// boundaries (batchChunk), and nothing beyond.
func TestReaderEachFirst(t *testing.T) {
	m := newMap(t, &ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 16, MaxEntries: 1000})
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	for k := range uint32(1000) {
		v := make([]pair, ncpu)
		v[0] = pair{Packets: uint64(k), Bytes: 1}
		if err := m.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader[uint32, pair](m)
	for _, via := range []string{"batch", "iteration"} {
		if via == "iteration" {
			r.ForceIteration()
		}
		for _, n := range []int{0, 1, batchChunk, batchChunk + 1, 999, 1000, 5000} {
			var keys []uint32
			if err := r.EachFirst(n, func(k uint32, v []pair) {
				if v[0].Packets != uint64(k) {
					t.Errorf("%s n=%d: key %d holds %+v", via, n, k, v[0])
				}
				keys = append(keys, k)
			}); err != nil {
				t.Fatalf("%s n=%d: %v", via, n, err)
			}
			want := min(n, 1000)
			if len(keys) != want || (want > 0 && keys[want-1] != uint32(want-1)) {
				t.Errorf("%s n=%d: read %d keys (last %v), want 0..%d", via, n, len(keys), keys[max(0, len(keys)-1):], want-1)
			}
		}
	}
}

func TestSumUint64(t *testing.T) {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	m := newMap(t, &ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 2})
	v := make([]uint64, ncpu)
	for c := range v {
		v[c] = uint64(c + 1)
	}
	if err := m.Put(uint32(1), v); err != nil {
		t.Fatal(err)
	}
	got, err := SumUint64(m, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(ncpu * (ncpu + 1) / 2); got != want {
		t.Errorf("SumUint64 = %d, want %d", got, want)
	}
	if _, err := SumUint64(m, 5); err == nil {
		t.Error("reading past the array's end is not an error")
	}
}

func TestStatsEnabled(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]bool{"1\n": true, "0\n": false, "": false} {
		p := filepath.Join(dir, "s")
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := StatsEnabled(p); got != want {
			t.Errorf("StatsEnabled(%q) = %v, want %v", content, got, want)
		}
	}
	if StatsEnabled(filepath.Join(dir, "absent")) {
		t.Error("a missing sysctl reads as enabled")
	}
}
