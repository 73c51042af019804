// Package verdict loads the XFRM verdict BPF programs (bpf/xfrm_verdict.bpf.c),
// attaches them with fentry or kprobes, and reads their counters. It knows
// nothing about Prometheus.
package verdict

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
)

// Directions and results as the BPF side numbers them (enum verdict_dir and
// enum verdict_result in bpf/xfrm_verdict.h). The names are stable label
// values; bpf/README.md ties each to its XFRM MIB counter and errno.
var (
	directionNames = map[uint8]string{1: "encrypt", 2: "decrypt"}
	resultNames    = []string{
		0:  "ok",
		1:  "integrity",
		2:  "proto_error",
		3:  "replay",
		4:  "expired",
		5:  "no_state",
		6:  "mode_error",
		7:  "invalid_state",
		8:  "header_error",
		9:  "rejected",
		10: "seq_overflow",
		11: "output_error",
	}
	// errorNames index the verdict_errors array (enum verdict_error).
	errorNames = []string{"map_full", "stack_full", "stale_frame", "unmatched_exit", "pending_miss"}
)

// Results lists every result name, for documentation and tests.
func Results() []string { return append([]string(nil), resultNames...) }

// ErrorKinds lists the kinds of accounting errors the BPF side counts.
func ErrorKinds() []string { return append([]string(nil), errorNames...) }

// Entry is one counter: packets and bytes per direction, peer and result,
// summed over CPUs.
type Entry struct {
	Direction string // "encrypt" or "decrypt"
	Result    string
	Peer      netip.Addr
	Packets   uint64
	Bytes     uint64
}

// Maps are the counters the programs write. They load on kernels that
// refuse tracing programs, which is how the collector is tested on such hosts.
type Maps struct {
	coll *ebpf.Collection
	// batch remembers whether BatchLookup works here: 0 unknown, 1 yes, -1 no.
	batchMu sync.Mutex
	batch   int
	// Batch buffers and the last key count, reused by every read (under batchMu).
	kbuf    []xfrmVerdictVerdictKey
	vbuf    []xfrmVerdictVerdictValue
	lastLen int
}

// DefaultMapSize is the default number of {direction, peer, result} keys.
const DefaultMapSize = 16384

// NewMaps creates the maps of the verdict object, with room for mapSize
// counter keys.
func NewMaps(mapSize uint32) (*Maps, error) {
	spec, err := loadXfrmVerdict()
	if err != nil {
		return nil, fmt.Errorf("reading embedded BPF object: %w", err)
	}
	return newMaps(spec, mapSize)
}

func newMaps(spec *ebpf.CollectionSpec, mapSize uint32) (*Maps, error) {
	removeMemlock()
	if mapSize == 0 {
		return nil, errors.New("verdict map size must be positive")
	}
	mapsOnly := spec.Copy()
	mapsOnly.Programs = nil
	mapsOnly.Maps["verdicts"].MaxEntries = mapSize
	coll, err := ebpf.NewCollection(mapsOnly)
	if err != nil {
		return nil, fmt.Errorf("creating BPF maps: %w", err)
	}
	return &Maps{coll: coll}, nil
}

// MaxEntries is the capacity of the counter map.
func (m *Maps) MaxEntries() uint32 { return m.coll.Maps["verdicts"].MaxEntries() }

// Close releases the maps.
func (m *Maps) Close() error {
	m.coll.Close()
	return nil
}

// Read returns every counter, summed over CPUs.
func (m *Maps) Read() ([]Entry, error) {
	counters, err := m.dump()
	if err != nil {
		return nil, err
	}
	entries := make([]Entry, 0, len(counters))
	for _, c := range counters {
		k := c.key
		e := Entry{
			Direction: directionNames[k.Direction],
			Peer:      peerAddr(k.Family, k.Peer),
			Packets:   c.packets,
			Bytes:     c.bytes,
		}
		if e.Direction == "" {
			e.Direction = fmt.Sprintf("unknown_%d", k.Direction)
		}
		if int(k.Result) < len(resultNames) {
			e.Result = resultNames[k.Result]
		} else {
			e.Result = fmt.Sprintf("unknown_%d", k.Result)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// counter is one key with its values summed over CPUs.
type counter struct {
	key            xfrmVerdictVerdictKey
	packets, bytes uint64
}

func (c *counter) add(perCPU []xfrmVerdictVerdictValue) {
	for _, v := range perCPU {
		c.packets += v.Packets
		c.bytes += v.Bytes
	}
}

func peerAddr(family uint8, peer [16]uint8) netip.Addr {
	switch family {
	case 4:
		return netip.AddrFrom4([4]byte(peer[:4]))
	case 6:
		return netip.AddrFrom16(peer)
	}
	return netip.Addr{}
}

// dump reads all keys and sums their per-CPU values: with batch lookups
// where the kernel has them (5.6+), else by iteration; the choice is made
// once. The per-CPU values are summed as they arrive, in buffers reused
// from scrape to scrape: nothing is allocated per key.
func (m *Maps) dump() ([]counter, error) {
	m.batchMu.Lock()
	defer m.batchMu.Unlock()
	if m.batch >= 0 {
		counters, err := m.dumpBatch()
		if err == nil {
			m.batch = 1
			return counters, nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) || m.batch == 1 {
			return nil, err
		}
		m.batch = -1
	}
	return m.dumpIterate()
}

// batchChunk is the number of keys per batch lookup.
const batchChunk = 256

func (m *Maps) dumpBatch() ([]counter, error) {
	vm := m.coll.Maps["verdicts"]
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("counting CPUs: %w", err)
	}
	if len(m.kbuf) != batchChunk || len(m.vbuf) != batchChunk*ncpu {
		m.kbuf = make([]xfrmVerdictVerdictKey, batchChunk)
		m.vbuf = make([]xfrmVerdictVerdictValue, batchChunk*ncpu)
	}
	counters := make([]counter, 0, m.lastLen)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := vm.BatchLookup(&cursor, m.kbuf, m.vbuf, nil)
		for i := range n {
			c := counter{key: m.kbuf[i]}
			c.add(m.vbuf[i*ncpu : (i+1)*ncpu])
			counters = append(counters, c)
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			m.lastLen = len(counters)
			return counters, nil
		}
		if err != nil {
			return nil, fmt.Errorf("batch lookup of verdicts: %w", err)
		}
	}
}

func (m *Maps) dumpIterate() ([]counter, error) {
	var (
		counters []counter
		k        xfrmVerdictVerdictKey
		v        []xfrmVerdictVerdictValue // reused by Next
	)
	it := m.coll.Maps["verdicts"].Iterate()
	for it.Next(&k, &v) {
		c := counter{key: k}
		c.add(v)
		counters = append(counters, c)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterating verdicts: %w", err)
	}
	return counters, nil
}

// Errors returns the accounting errors the programs counted, by kind
// (map_full is the map overflow: a new key that did not fit).
func (m *Maps) Errors() (map[string]uint64, error) {
	out := make(map[string]uint64, len(errorNames))
	em := m.coll.Maps["verdict_errors"]
	for i, name := range errorNames {
		var perCPU []uint64
		if err := em.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("reading verdict_errors[%s]: %w", name, err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		out[name] = sum
	}
	return out, nil
}

// Set writes entries into the counter map, each on CPU 0 (the other CPUs'
// slots zero). For tests and tools that need real maps with known contents;
// the BPF programs are the only writers in production.
func (m *Maps) Set(entries []Entry) error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("counting CPUs: %w", err)
	}
	for _, e := range entries {
		k, err := entryKey(e)
		if err != nil {
			return err
		}
		v := make([]xfrmVerdictVerdictValue, ncpu)
		v[0] = xfrmVerdictVerdictValue{Packets: e.Packets, Bytes: e.Bytes}
		if err := m.coll.Maps["verdicts"].Put(k, v); err != nil {
			return fmt.Errorf("writing verdict %+v: %w", e, err)
		}
	}
	return nil
}

func entryKey(e Entry) (xfrmVerdictVerdictKey, error) {
	var k xfrmVerdictVerdictKey
	for n, name := range directionNames {
		if name == e.Direction {
			k.Direction = n
		}
	}
	k.Result = 255
	for n, name := range resultNames {
		if name == e.Result {
			k.Result = uint8(n)
		}
	}
	if k.Direction == 0 || k.Result == 255 {
		return k, fmt.Errorf("unknown direction %q or result %q", e.Direction, e.Result)
	}
	switch {
	case e.Peer.Is4():
		k.Family = 4
		a := e.Peer.As4()
		copy(k.Peer[:], a[:])
	case e.Peer.Is6():
		k.Family = 6
		k.Peer = e.Peer.As16()
	}
	return k, nil
}

// SetError sets an accounting error counter (CPU 0), for tests.
func (m *Maps) SetError(kind string, value uint64) error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("counting CPUs: %w", err)
	}
	for i, name := range errorNames {
		if name == kind {
			v := make([]uint64, ncpu)
			v[0] = value
			return m.coll.Maps["verdict_errors"].Put(uint32(i), v)
		}
	}
	return fmt.Errorf("unknown error kind %q", kind)
}
