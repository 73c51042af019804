// Package verdict loads the XFRM verdict BPF programs (bpf/xfrm_verdict.bpf.c),
// attaches them with fentry or kprobes, and reads their counters. It knows
// nothing about Prometheus.
package verdict

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/ipsec-exporter/ipsec_exporter/internal/bpfmap"
	"github.com/ipsec-exporter/ipsec_exporter/internal/pin"
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
	// internalResults are numbers of the C side that are not exported
	// results: retracted is subtracted from ok (Read), none is no hint.
	internalResults = map[xfrmVerdictVerdictResult]string{
		xfrmVerdictVerdictResultRESULT_RETRACTED: "retracted",
		xfrmVerdictVerdictResultRESULT_NONE:      "none",
	}
	// errorNames index the verdict_errors array.
	errorNames = map[xfrmVerdictVerdictError]string{
		xfrmVerdictVerdictErrorERR_MAP_FULL: "map_full",
	}
)

// Results lists every result name, for documentation and tests.
func Results() []string { return sortedNames(resultNames) }

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
	objs    xfrmVerdictMaps
	counts  *bpfmap.Reader[uint32, xfrmVerdictVerdictValue] // verdict_counts, by counter number
	keys    *bpfmap.Reader[uint32, xfrmVerdictVerdictKey]   // verdict_keys, by counter number
	peerSet *ebpf.MapSpec                                   // the known-peer set's spec: each replacement is a new map of it

	peersMu   sync.Mutex
	peers     int    // addresses in the current known-peer set
	peersLeft uint64 // addresses left out of replacements because the set was full (a counter)

	mu       sync.Mutex
	lastLen  int                      // keys at the last read: the next read's capacity
	sums     []verdictCounter         // per counter number, reused from read to read
	exported map[okKey]verdictCounter // the ok last returned per key (never goes down)
}

// okKey is a verdict key without its result: where an ok and its
// retractions meet.
type okKey struct {
	direction string
	peer      netip.Addr
}

type verdictCounter struct{ packets, bytes uint64 }

// DefaultMapSize is the default number of {direction, peer, result} keys.
const DefaultMapSize = 16384

// The bounds of the counter table's size (bpf/verdict_counters.h). The
// kernel allocates it when the maps are created: 16 bytes per key and
// possible CPU for the counts, 20 for the key, 128 for its four index slots
// (the default: 256 KiB per CPU plus 2.3 MiB; 262144 keys: 4 MiB per CPU
// plus 37 MiB). 0 keys is no table at all.
const (
	MinMapSize = 1
	MaxMapSize = 262144
)

// indexSize is the number of index slots for mapSize keys: a power of two,
// at least four times the keys, so that a key is found within INDEX_PROBES
// slots of its hash even when every counter is in use (at twice, 16 probes
// ran out at 94% of 16384 random keys: TestTableFillsToCapacity).
func indexSize(mapSize uint32) uint32 {
	n := uint32(2)
	for n < 4*mapSize {
		n *= 2
	}
	return n
}

// sizeTable gives spec's counter table room for mapSize keys: the map sizes
// and the constants the programs probe with.
func sizeTable(spec *ebpf.CollectionSpec, mapSize uint32) error {
	spec.Maps[xfrmVerdictMapVerdictCounts].MaxEntries = mapSize
	spec.Maps[xfrmVerdictMapVerdictKeys].MaxEntries = mapSize
	spec.Maps[xfrmVerdictMapVerdictIndex].MaxEntries = indexSize(mapSize)
	if err := spec.Variables[xfrmVerdictVarCounterCapacity].Set(mapSize); err != nil {
		return fmt.Errorf("setting the verdict table's capacity: %w", err)
	}
	if err := spec.Variables[xfrmVerdictVarIndexMask].Set(indexSize(mapSize) - 1); err != nil {
		return fmt.Errorf("setting the verdict table's index size: %w", err)
	}
	return nil
}

// NewMaps creates the maps of the verdict object, with room for mapSize
// counter keys.
func NewMaps(mapSize uint32) (*Maps, error) {
	spec, err := loadXfrmVerdict()
	if err != nil {
		return nil, fmt.Errorf("reading embedded BPF object: %w", err)
	}
	return newMaps(spec, mapSize, "", nil)
}

// countingMaps hold what the programs counted: they are pinned with
// --bpf.pin-path. The others hold state of packets in flight, scratch
// space, the known-peer set, which the next exporter rebuilds, or (.bss)
// variables that only carry the enums' types into the BTF
// (TestEveryMapDecided).
var (
	countingMaps = []string{xfrmVerdictMapVerdictCounts, xfrmVerdictMapVerdictKeys, xfrmVerdictMapVerdictIndex,
		xfrmVerdictMapVerdictUsed, xfrmVerdictMapVerdictErrors}
	transientMaps = []string{xfrmVerdictMapDecryptState, xfrmVerdictMapPendingEncrypt, xfrmVerdictMapBundleScratch,
		xfrmVerdictMapAddressScratch, xfrmVerdictMapKnownPeers, ".bss", ".rodata"}
)

func newMaps(spec *ebpf.CollectionSpec, mapSize uint32, pins pin.Dir, logger *slog.Logger) (*Maps, error) {
	if err := bpfmap.RemoveMemlock(); err != nil {
		return nil, err
	}
	if mapSize < MinMapSize || mapSize > MaxMapSize {
		return nil, fmt.Errorf("verdict map size %d out of bounds [%d, %d]", mapSize, MinMapSize, MaxMapSize)
	}
	spec = spec.Copy()
	if err := sizeTable(spec, mapSize); err != nil {
		return nil, err
	}
	pinOpts, reset, err := pins.Maps(spec, countingMaps...)
	if err != nil {
		return nil, err
	}
	if len(reset) > 0 && logger != nil {
		logger.Warn("pinned verdict counters reset: their layout changed, so the counts start again at 0", "maps", reset, "pin_path", string(pins))
	}
	// Maps an earlier version pinned and this one does not have (the
	// counter hash map before the table) would only hold memory.
	if gone, err := pins.Prune(append(slices.Clone(countingMaps), linksDir)); err != nil {
		return nil, err
	} else if len(gone) > 0 && logger != nil {
		logger.Info("unpinned verdict maps the programs in use do not have", "maps", gone, "pin_path", string(pins))
	}
	m := &Maps{}
	if err := spec.LoadAndAssign(&m.objs, &ebpf.CollectionOptions{Maps: pinOpts}); err != nil {
		return nil, fmt.Errorf("creating BPF maps: %w", err)
	}
	m.counts = bpfmap.NewReader[uint32, xfrmVerdictVerdictValue](m.objs.VerdictCounts)
	m.keys = bpfmap.NewReader[uint32, xfrmVerdictVerdictKey](m.objs.VerdictKeys)
	m.peerSet = spec.Maps[xfrmVerdictMapKnownPeers].InnerMap.Copy()
	return m, nil
}

// KnownPeersMax is the capacity of the known-peer set (KNOWN_PEERS_MAX in
// bpf/xfrm_verdict.h).
const KnownPeersMax = 16384

// SetKnownPeers makes peers the node's known IPsec peers: a failure whose
// peer comes from the packet (decrypt no_state and header_error, encrypt
// no_state) is counted under its own peer only when that peer is in the
// set, else under the unknown peer (bpf/README.md, "Peers"). The whole set
// is replaced at once: the programs see the old set or the new one, never a
// mix. Addresses beyond KnownPeersMax are left out and counted
// (KnownPeers).
func (m *Maps) SetKnownPeers(peers []netip.Addr) (err error) {
	set, err := ebpf.NewMap(m.peerSet)
	if err != nil {
		return fmt.Errorf("creating a known-peer set: %w", err)
	}
	// known_peers holds its own reference to the installed set.
	defer func() { err = errors.Join(err, set.Close()) }()
	seen := map[netip.Addr]bool{}
	var left uint64
	for _, p := range peers {
		p = p.Unmap()
		if !p.IsValid() || seen[p] {
			continue
		}
		if len(seen) == KnownPeersMax {
			left++
			continue
		}
		seen[p] = true
		k := xfrmVerdictKnownPeerKey{Addr: netip.AddrFrom16(p.As16()).As16()}
		if err := set.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("adding known peer %s: %w", p, err)
		}
	}
	if err := m.objs.KnownPeers.Put(uint32(0), set); err != nil {
		return fmt.Errorf("installing the known-peer set: %w", err)
	}
	m.peersMu.Lock()
	m.peers, m.peersLeft = len(seen), m.peersLeft+left
	m.peersMu.Unlock()
	return nil
}

// KnownPeers returns the size of the current known-peer set and how many
// addresses all replacements so far left out because it was full.
func (m *Maps) KnownPeers() (size int, leftOut uint64) {
	m.peersMu.Lock()
	defer m.peersMu.Unlock()
	return m.peers, m.peersLeft
}

// replacements are the maps every program of the object shares.
func (m *Maps) replacements() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		xfrmVerdictMapVerdictCounts:  m.objs.VerdictCounts,
		xfrmVerdictMapVerdictKeys:    m.objs.VerdictKeys,
		xfrmVerdictMapVerdictIndex:   m.objs.VerdictIndex,
		xfrmVerdictMapVerdictUsed:    m.objs.VerdictUsed,
		xfrmVerdictMapVerdictErrors:  m.objs.VerdictErrors,
		xfrmVerdictMapDecryptState:   m.objs.DecryptState,
		xfrmVerdictMapPendingEncrypt: m.objs.PendingEncrypt,
		xfrmVerdictMapBundleScratch:  m.objs.BundleScratch,
		xfrmVerdictMapAddressScratch: m.objs.AddressScratch,
		xfrmVerdictMapKnownPeers:     m.objs.KnownPeers,
	}
}

// MaxEntries is the capacity of the counter table: the number of keys.
func (m *Maps) MaxEntries() uint32 { return m.objs.VerdictCounts.MaxEntries() }

// Close releases the maps.
func (m *Maps) Close() error { return m.objs.Close() }

// Read returns every counter, summed over CPUs. The programs count an ok
// where the kernel counts the packet into its SA, and a "retracted" ok when
// a later step drops the packet; ok is what passed: ok minus retracted. A
// read that falls between an ok and its retraction returns the ok, and the
// next reads keep ok where it was until the packets that follow make up
// the difference, so the counter never goes down (bpf/README.md,
// "Counting").
func (m *Maps) Read() ([]Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	raw, err := m.raw()
	if err != nil {
		return nil, err
	}
	retracted := map[okKey]Entry{}
	entries := make([]Entry, 0, len(raw))
	for _, e := range raw {
		if e.Result == internalResults[xfrmVerdictVerdictResultRESULT_RETRACTED] {
			retracted[okKey{e.Direction, e.Peer}] = e
		} else {
			entries = append(entries, e)
		}
	}
	if m.exported == nil {
		m.exported = map[okKey]verdictCounter{}
	}
	for i, e := range entries {
		if e.Result != resultNames[xfrmVerdictVerdictResultRESULT_OK] {
			continue
		}
		key := okKey{e.Direction, e.Peer}
		r, last := retracted[key], m.exported[key]
		entries[i].Packets = max(last.packets, e.Packets-min(r.Packets, e.Packets))
		entries[i].Bytes = max(last.bytes, e.Bytes-min(r.Bytes, e.Bytes))
		m.exported[key] = verdictCounter{entries[i].Packets, entries[i].Bytes}
	}
	return entries, nil
}

// raw returns every key as the programs wrote it, internal results
// included, summed over CPUs and over the counters a key has (two programs
// adding a new key at once can give it two, bpf/verdict_counters.h).
func (m *Maps) raw() ([]Entry, error) {
	var used uint64
	if err := m.objs.VerdictUsed.Lookup(uint32(0), &used); err != nil {
		return nil, fmt.Errorf("reading the verdict table's size: %w", err)
	}
	n := int(min(used, uint64(m.MaxEntries())))
	// The counts first, the keys after: a counter whose count is not zero
	// had its key written before it was counted.
	if cap(m.sums) < n {
		m.sums = make([]verdictCounter, n)
	}
	sums := m.sums[:n]
	clear(sums)
	err := m.counts.EachFirst(n, func(i uint32, perCPU []xfrmVerdictVerdictValue) {
		if int(i) >= n {
			return
		}
		for _, v := range perCPU {
			sums[i].packets += v.Packets
			sums[i].bytes += v.Bytes
		}
	})
	if err != nil {
		return nil, fmt.Errorf("reading verdict counts: %w", err)
	}
	entries := make([]Entry, 0, m.lastLen)
	at := make(map[xfrmVerdictVerdictKey]int, m.lastLen)
	err = m.keys.EachFirst(n, func(i uint32, key []xfrmVerdictVerdictKey) {
		if int(i) >= n || sums[i] == (verdictCounter{}) {
			return // not counted yet: its key may still be being written
		}
		k := key[0]
		if j, seen := at[k]; seen {
			entries[j].Packets += sums[i].packets
			entries[j].Bytes += sums[i].bytes
			return
		}
		result := xfrmVerdictVerdictResult(k.Result)
		e := Entry{
			Direction: nameOf(directionNames, xfrmVerdictVerdictDir(k.Direction)),
			Result:    nameOf(resultNames, result),
			Peer:      peerAddr(k.Family, k.Peer),
			Packets:   sums[i].packets,
			Bytes:     sums[i].bytes,
		}
		if name, ok := internalResults[result]; ok {
			e.Result = name
		}
		at[k] = len(entries)
		entries = append(entries, e)
	})
	if err != nil {
		return nil, fmt.Errorf("reading verdict keys: %w", err)
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

// Set adds entries to the counter table, each as a counter of its own on
// CPU 0 (the other CPUs' slots zero), as a program that added the key
// would. It does not index them: a program that counts the same key later
// adds a counter of its own, which Read sums with this one. For tests and
// tools that need real maps with known contents; the BPF programs are the
// only writers in production.
func (m *Maps) Set(entries []Entry) error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("counting CPUs: %w", err)
	}
	var used uint64
	if err := m.objs.VerdictUsed.Lookup(uint32(0), &used); err != nil {
		return fmt.Errorf("reading the verdict table's size: %w", err)
	}
	for _, e := range entries {
		k, err := entryKey(e)
		if err != nil {
			return err
		}
		if used >= uint64(m.MaxEntries()) {
			return fmt.Errorf("writing verdict %+v: the table's %d counters are in use", e, m.MaxEntries())
		}
		n := uint32(used)
		v := make([]xfrmVerdictVerdictValue, ncpu)
		v[0] = xfrmVerdictVerdictValue{Packets: e.Packets, Bytes: e.Bytes}
		if err := m.objs.VerdictKeys.Put(n, k); err != nil {
			return fmt.Errorf("writing verdict key %+v: %w", e, err)
		}
		if err := m.objs.VerdictCounts.Put(n, v); err != nil {
			return fmt.Errorf("writing verdict %+v: %w", e, err)
		}
		used++
		if err := m.objs.VerdictUsed.Put(uint32(0), used); err != nil {
			return fmt.Errorf("writing the verdict table's size: %w", err)
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
