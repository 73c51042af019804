// Package bpfmap holds what every loader of the project's BPF objects needs
// once: reading per-CPU counter maps (batch lookups with a remembered
// fallback to iteration, buffers reused from read to read), lifting the
// memlock limit, and asking whether the kernel keeps program statistics. It
// knows nothing about Prometheus or about any one program.
package bpfmap

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

var memlock struct {
	once sync.Once
	err  error
}

// RemoveMemlock lifts RLIMIT_MEMLOCK, which kernels before 5.11 charge BPF
// memory to, once per process. Every call returns the first call's result:
// a loader that cannot create maps without it fails with the same reason.
func RemoveMemlock() error {
	memlock.once.Do(func() {
		if err := rlimit.RemoveMemlock(); err != nil {
			memlock.err = fmt.Errorf("removing the memlock limit: %w", err)
		}
	})
	return memlock.err
}

// StatsSysctl is where the kernel says whether it keeps run time and run
// count per program (kernel.bpf_stats_enabled).
const StatsSysctl = "/proc/sys/kernel/bpf_stats_enabled"

// StatsEnabled reads the sysctl at path (StatsSysctl outside tests). It is
// read at every call: an operator may switch it on and off at run time, and
// while it is off the kernel's zeros would look like idle programs.
func StatsEnabled(path string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// batchChunk is the number of keys per batch lookup.
const batchChunk = 256

// Reader reads every key of one map with its values: K is the key type, V
// the value type of one CPU (bpf2go's generated types). It is safe for
// concurrent use; reads are serialised because they share the buffers.
type Reader[K, V any] struct {
	m      *ebpf.Map
	perCPU bool

	mu      sync.Mutex
	noBatch bool // the kernel has no batch lookups for this map type (remembered)
	ncpu    int
	keys    []K
	values  []V
	one     []V // iteration's per-key values, reused by Next
}

// NewReader returns a reader of m.
func NewReader[K, V any](m *ebpf.Map) *Reader[K, V] {
	return &Reader[K, V]{m: m, perCPU: isPerCPU(m.Type())}
}

func isPerCPU(t ebpf.MapType) bool {
	switch t {
	case ebpf.PerCPUHash, ebpf.PerCPUArray, ebpf.LRUCPUHash:
		return true
	}
	return false
}

// Each calls f for every key with its values: one per possible CPU for a
// per-CPU map, else one. The slice is only valid during the call. With batch
// lookups where the kernel has them (5.6+), else by iteration; the choice is
// made at the first read and kept.
func (r *Reader[K, V]) Each(f func(key K, values []V)) error {
	return r.each(-1, f)
}

// EachFirst is Each for the first n keys of an array (indexes 0..n-1): a
// table filled from index 0 upwards is read without its unused rest.
func (r *Reader[K, V]) EachFirst(n int, f func(key K, values []V)) error {
	if n <= 0 {
		return nil
	}
	return r.each(n, f)
}

// each reads up to limit keys (all when limit < 0).
func (r *Reader[K, V]) each(limit int, f func(K, []V)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ncpu == 0 {
		r.ncpu = 1
		if r.perCPU {
			n, err := ebpf.PossibleCPU()
			if err != nil {
				return fmt.Errorf("counting CPUs: %w", err)
			}
			r.ncpu = n
		}
	}
	if !r.noBatch {
		err := r.batch(limit, f)
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
		r.noBatch = true
	}
	var key K
	it := r.m.Iterate()
	if !r.perCPU && len(r.one) != 1 {
		r.one = make([]V, 1)
	}
	for seen := 0; limit < 0 || seen < limit; seen++ {
		var ok bool
		if r.perCPU {
			ok = it.Next(&key, &r.one)
		} else {
			ok = it.Next(&key, &r.one[0])
		}
		if !ok {
			break
		}
		f(key, r.one)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterating map %s: %w", r.m, err)
	}
	return nil
}

// ForceIteration makes every later read iterate, as on a kernel without
// batch lookups: for tests of the fallback.
func (r *Reader[K, V]) ForceIteration() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.noBatch = true
}

func (r *Reader[K, V]) batch(limit int, f func(K, []V)) error {
	// No more keys per batch than the map holds: a small map (the wire
	// program has one of 14 slots per interface) gets small buffers.
	chunk := min(batchChunk, max(1, int(r.m.MaxEntries())))
	if len(r.keys) != chunk || len(r.values) != chunk*r.ncpu {
		r.keys = make([]K, chunk)
		r.values = make([]V, chunk*r.ncpu)
	}
	var cursor ebpf.MapBatchCursor
	for done := 0; limit < 0 || done < limit; {
		c := chunk
		if limit >= 0 {
			c = min(chunk, limit-done)
		}
		n, err := r.m.BatchLookup(&cursor, r.keys[:c], r.values[:c*r.ncpu], nil)
		for i := range n {
			f(r.keys[i], r.values[i*r.ncpu:(i+1)*r.ncpu])
		}
		done += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("batch lookup of map %s: %w", r.m, err)
		}
	}
	return nil
}

// SumUint64 returns entry key of a per-CPU array of u64 counters, summed
// over CPUs.
func SumUint64(m *ebpf.Map, key uint32) (uint64, error) {
	var perCPU []uint64
	if err := m.Lookup(key, &perCPU); err != nil {
		return 0, fmt.Errorf("reading map %s[%d]: %w", m, key, err)
	}
	var sum uint64
	for _, v := range perCPU {
		sum += v
	}
	return sum, nil
}
