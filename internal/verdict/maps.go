// Package verdict loads the XFRM verdict BPF programs (bpf/xfrm_verdict.bpf.c),
// attaches them with fentry or kprobes, and reads their counters. It knows
// nothing about Prometheus.
package verdict

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/ipsec-exporter/ipsec_exporter/internal/bpfmap"
)

// Label values of the BPF side's numbers (enum verdict_dir, verdict_result
// and verdict_error in bpf/xfrm_verdict.h, generated into
// xfrmverdict_x86_bpfel.go by bpf2go -type). The names are stable label
// values; bpf/README.md ties each result to its XFRM MIB counter and errno.
// TestEnumsHaveNames checks against the object's BTF that every value the C
// defines has its name here.
var (
	directionNames = map[xfrmVerdictVerdictDir]string{
		xfrmVerdictVerdictDirDIR_ENCRYPT: "encrypt",
		xfrmVerdictVerdictDirDIR_DECRYPT: "decrypt",
	}
	resultNames = map[xfrmVerdictVerdictResult]string{
		xfrmVerdictVerdictResultRESULT_OK:            "ok",
		xfrmVerdictVerdictResultRESULT_INTEGRITY:     "integrity",
		xfrmVerdictVerdictResultRESULT_PROTO_ERROR:   "proto_error",
		xfrmVerdictVerdictResultRESULT_REPLAY:        "replay",
		xfrmVerdictVerdictResultRESULT_EXPIRED:       "expired",
		xfrmVerdictVerdictResultRESULT_NO_STATE:      "no_state",
		xfrmVerdictVerdictResultRESULT_MODE_ERROR:    "mode_error",
		xfrmVerdictVerdictResultRESULT_INVALID_STATE: "invalid_state",
		xfrmVerdictVerdictResultRESULT_HEADER_ERROR:  "header_error",
		xfrmVerdictVerdictResultRESULT_REJECTED:      "rejected",
		xfrmVerdictVerdictResultRESULT_SEQ_OVERFLOW:  "seq_overflow",
		xfrmVerdictVerdictResultRESULT_OUTPUT_ERROR:  "output_error",
	}
	// internalResults are numbers of the C side that are not results.
	internalResults = map[xfrmVerdictVerdictResult]string{
		xfrmVerdictVerdictResultRESULT_NONE: "none",
	}
	// errorNames index the verdict_errors array.
	errorNames = map[xfrmVerdictVerdictError]string{
		xfrmVerdictVerdictErrorERR_MAP_FULL:       "map_full",
		xfrmVerdictVerdictErrorERR_STACK_FULL:     "stack_full",
		xfrmVerdictVerdictErrorERR_STALE_FRAME:    "stale_frame",
		xfrmVerdictVerdictErrorERR_UNMATCHED_EXIT: "unmatched_exit",
		xfrmVerdictVerdictErrorERR_PENDING_MISS:   "pending_miss",
	}
)

// Results lists every result name, for documentation and tests.
func Results() []string { return sortedNames(resultNames) }

// ErrorKinds lists the kinds of accounting errors the BPF side counts.
func ErrorKinds() []string { return sortedNames(errorNames) }

// sortedNames lists a name table in the order of its numbers.
func sortedNames[N ~uint32](table map[N]string) []string {
	nums := make([]N, 0, len(table))
	for n := range table {
		nums = append(nums, n)
	}
	slices.Sort(nums)
	out := make([]string, len(nums))
	for i, n := range nums {
		out[i] = table[n]
	}
	return out
}

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
	objs     xfrmVerdictMaps
	verdicts *bpfmap.Reader[xfrmVerdictVerdictKey, xfrmVerdictVerdictValue]
	lastLen  int // keys at the last read: the next read's capacity
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
	if err := bpfmap.RemoveMemlock(); err != nil {
		return nil, err
	}
	if mapSize == 0 {
		return nil, errors.New("verdict map size must be positive")
	}
	spec = spec.Copy()
	spec.Maps[xfrmVerdictMapVerdicts].MaxEntries = mapSize
	m := &Maps{}
	if err := spec.LoadAndAssign(&m.objs, nil); err != nil {
		return nil, fmt.Errorf("creating BPF maps: %w", err)
	}
	m.verdicts = bpfmap.NewReader[xfrmVerdictVerdictKey, xfrmVerdictVerdictValue](m.objs.Verdicts)
	return m, nil
}

// replacements are the maps every program of the object shares.
func (m *Maps) replacements() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		xfrmVerdictMapVerdicts:       m.objs.Verdicts,
		xfrmVerdictMapVerdictErrors:  m.objs.VerdictErrors,
		xfrmVerdictMapFrames:         m.objs.Frames,
		xfrmVerdictMapPendingEncrypt: m.objs.PendingEncrypt,
		xfrmVerdictMapLookupScratch:  m.objs.LookupScratch,
	}
}

// MaxEntries is the capacity of the counter map.
func (m *Maps) MaxEntries() uint32 { return m.objs.Verdicts.MaxEntries() }

// Close releases the maps.
func (m *Maps) Close() error { return m.objs.Close() }

// Read returns every counter, summed over CPUs.
func (m *Maps) Read() ([]Entry, error) {
	entries := make([]Entry, 0, m.lastLen)
	err := m.verdicts.Each(func(k xfrmVerdictVerdictKey, perCPU []xfrmVerdictVerdictValue) {
		e := Entry{
			Direction: nameOf(directionNames, xfrmVerdictVerdictDir(k.Direction)),
			Result:    nameOf(resultNames, xfrmVerdictVerdictResult(k.Result)),
			Peer:      peerAddr(k.Family, k.Peer),
		}
		for _, v := range perCPU {
			e.Packets += v.Packets
			e.Bytes += v.Bytes
		}
		entries = append(entries, e)
	})
	if err != nil {
		return nil, fmt.Errorf("reading verdicts: %w", err)
	}
	m.lastLen = len(entries)
	return entries, nil
}

// nameOf is the label value of a number, or unknown_N for a number this
// build does not know (a newer object than its Go side).
func nameOf[N ~uint32](table map[N]string, n N) string {
	if name, ok := table[n]; ok {
		return name
	}
	return fmt.Sprintf("unknown_%d", n)
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

// Errors returns the accounting errors the programs counted, by kind
// (map_full is the map overflow: a new key that did not fit).
func (m *Maps) Errors() (map[string]uint64, error) {
	out := make(map[string]uint64, len(errorNames))
	for kind, name := range errorNames {
		n, err := bpfmap.SumUint64(m.objs.VerdictErrors, uint32(kind))
		if err != nil {
			return nil, err
		}
		out[name] = n
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
		if err := m.objs.Verdicts.Put(k, v); err != nil {
			return fmt.Errorf("writing verdict %+v: %w", e, err)
		}
	}
	return nil
}

// numberOf is the inverse of a name table.
func numberOf[N ~uint32](table map[N]string, name string) (N, bool) {
	for n, s := range table {
		if s == name {
			return n, true
		}
	}
	return 0, false
}

func entryKey(e Entry) (xfrmVerdictVerdictKey, error) {
	var k xfrmVerdictVerdictKey
	dir, okDir := numberOf(directionNames, e.Direction)
	result, okResult := numberOf(resultNames, e.Result)
	if !okDir || !okResult {
		return k, fmt.Errorf("unknown direction %q or result %q", e.Direction, e.Result)
	}
	k.Direction, k.Result = uint8(dir), uint8(result)
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
	n, ok := numberOf(errorNames, kind)
	if !ok {
		return fmt.Errorf("unknown error kind %q", kind)
	}
	v := make([]uint64, ncpu)
	v[0] = value
	return m.objs.VerdictErrors.Put(uint32(n), v)
}
