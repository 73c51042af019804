package verdict

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/ipsec-exporter/ipsec_exporter/internal/bpfmap"
)

// cEnum returns the values of a C enum from the object's BTF: the numbers
// the programs write, independent of the Go name tables.
func cEnum(t *testing.T, name string) map[string]uint32 {
	t.Helper()
	spec, err := loadXfrmVerdict()
	if err != nil {
		t.Fatal(err)
	}
	var e *btf.Enum
	if err := spec.Types.TypeByName(name, &e); err != nil {
		t.Fatalf("enum %s not in the object's BTF: %v", name, err)
	}
	out := map[string]uint32{}
	for _, v := range e.Values {
		out[v.Name] = uint32(v.Value)
	}
	return out
}

// Every number the C side defines has its label value, and the label value
// is the C name's own (RESULT_PROTO_ERROR is proto_error): a number added
// or renumbered in bpf/xfrm_verdict.h without its Go name fails here.
func TestEnumsHaveNames(t *testing.T) {
	check := func(enum, prefix string, name func(uint32) (string, bool)) {
		for c, n := range cEnum(t, enum) {
			got, ok := name(n)
			want := strings.ToLower(strings.TrimPrefix(c, prefix))
			if !ok {
				t.Errorf("%s %s = %d has no name", enum, c, n)
			} else if got != want {
				t.Errorf("%s %s = %d is named %q, want %q", enum, c, n, got, want)
			}
		}
	}
	check("verdict_dir", "DIR_", func(n uint32) (string, bool) {
		s, ok := directionNames[xfrmVerdictVerdictDir(n)]
		return s, ok
	})
	check("verdict_result", "RESULT_", func(n uint32) (string, bool) {
		if s, ok := internalResults[xfrmVerdictVerdictResult(n)]; ok {
			return s, true
		}
		s, ok := resultNames[xfrmVerdictVerdictResult(n)]
		return s, ok
	})
	check("verdict_error", "ERR_", func(n uint32) (string, bool) {
		if n == uint32(xfrmVerdictVerdictErrorERR_MAX) {
			return "max", true // the array's size, not a kind
		}
		s, ok := errorNames[xfrmVerdictVerdictError(n)]
		return s, ok
	})
}

// Keys written with the C side's numbers (from the object's BTF, not from
// the Go tables) read back with their label values and summed values, by
// batch lookup and by iteration.
func TestMapsReadNamesCNumbers(t *testing.T) {
	m := newTestMaps(t, 8)
	dirs, results := cEnum(t, "verdict_dir"), cEnum(t, "verdict_result")
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	put := func(dir, result string, family uint8, peer netip.Addr, perCPU ...xfrmVerdictVerdictValue) {
		k := xfrmVerdictVerdictKey{Direction: uint8(dirs[dir]), Result: uint8(results[result]), Family: family}
		copy(k.Peer[:], peer.AsSlice())
		v := make([]xfrmVerdictVerdictValue, ncpu)
		copy(v, perCPU)
		addCounter(t, m, k, v)
	}
	put("DIR_ENCRYPT", "RESULT_OK", 4, netip.MustParseAddr("10.0.0.2"), xfrmVerdictVerdictValue{Packets: 5, Bytes: 420})
	put("DIR_DECRYPT", "RESULT_SEQ_OVERFLOW", 6, netip.MustParseAddr("fd00::2"),
		xfrmVerdictVerdictValue{Packets: 3, Bytes: 300}, xfrmVerdictVerdictValue{Packets: 1, Bytes: 1})
	want := []Entry{
		{Direction: "encrypt", Result: "ok", Peer: netip.MustParseAddr("10.0.0.2"), Packets: 5, Bytes: 420},
		{Direction: "decrypt", Result: "seq_overflow", Peer: netip.MustParseAddr("fd00::2"), Packets: 3, Bytes: 300},
	}
	if ncpu > 1 {
		want[1].Packets, want[1].Bytes = 4, 301
	}
	sortEntries(want)
	for _, via := range []string{"batch", "iteration"} {
		m.counts = bpfmap.NewReader[uint32, xfrmVerdictVerdictValue](m.objs.VerdictCounts)
		m.keys = bpfmap.NewReader[uint32, xfrmVerdictVerdictKey](m.objs.VerdictKeys)
		if via == "iteration" {
			m.counts.ForceIteration()
			m.keys.ForceIteration()
		}
		got, err := m.Read()
		if err != nil {
			t.Fatalf("Read by %s: %v", via, err)
		}
		sortEntries(got)
		if !slices.Equal(got, want) {
			t.Errorf("Read by %s = %+v, want %+v", via, got, want)
		}
	}
	if m.MaxEntries() != 8 {
		t.Errorf("MaxEntries = %d, want 8", m.MaxEntries())
	}
}

// ok is what passed: the programs' ok minus its retractions, and it never
// goes down, also when a read falls between an ok and its retraction.
func TestMapsReadSubtractsRetracted(t *testing.T) {
	m := newTestMaps(t, 8)
	dirs, results := cEnum(t, "verdict_dir"), cEnum(t, "verdict_result")
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	peer := netip.MustParseAddr("10.0.0.2")
	// count adds to a key's total through a counter of its own: the
	// reader sums a key's counters.
	count := func(result string, packets, bytes uint64) {
		k := xfrmVerdictVerdictKey{Direction: uint8(dirs["DIR_ENCRYPT"]), Result: uint8(results[result]), Family: 4}
		copy(k.Peer[:], peer.AsSlice())
		v := make([]xfrmVerdictVerdictValue, ncpu)
		v[0] = xfrmVerdictVerdictValue{Packets: packets, Bytes: bytes}
		addCounter(t, m, k, v)
	}
	read := func() []Entry {
		got, err := m.Read()
		if err != nil {
			t.Fatal(err)
		}
		sortEntries(got)
		return got
	}
	ok := func(packets, bytes uint64) Entry {
		return Entry{Direction: "encrypt", Result: "ok", Peer: peer, Packets: packets, Bytes: bytes}
	}
	count("RESULT_OK", 10, 1000)
	count("RESULT_RETRACTED", 2, 200)
	count("RESULT_PROTO_ERROR", 2, 220)
	want := []Entry{ok(8, 800), {Direction: "encrypt", Result: "proto_error", Peer: peer, Packets: 2, Bytes: 220}}
	sortEntries(want)
	if got := read(); !slices.Equal(got, want) {
		t.Errorf("Read = %+v, want %+v", got, want)
	}
	// A retraction whose ok was read before: ok stays at 8 until the
	// next packets make up for it.
	count("RESULT_RETRACTED", 1, 100) // 3 in all
	if got := read(); got[0] != ok(8, 800) {
		t.Errorf("after a late retraction ok = %+v, want it kept at 8 packets 800 bytes", got[0])
	}
	count("RESULT_OK", 2, 200) // 12 in all
	if got := read(); got[0] != ok(9, 900) {
		t.Errorf("after two more ok ok = %+v, want 9 packets 900 bytes", got[0])
	}
}

func TestMapsManyKeysAcrossBatches(t *testing.T) {
	m := newTestMaps(t, 1000)
	var in []Entry
	for i := range 700 {
		in = append(in, Entry{Direction: "decrypt", Result: "ok",
			Peer: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), Packets: uint64(i + 1), Bytes: 1})
	}
	if err := m.Set(in); err != nil {
		t.Fatalf("Set: %v", err)
	}
	got, err := m.Read()
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(got) != len(in) {
		t.Fatalf("Read returned %d entries, want %d", len(got), len(in))
	}
	var sum uint64
	for _, e := range got {
		sum += e.Packets
	}
	if want := uint64(700 * 701 / 2); sum != want {
		t.Errorf("sum of packets = %d, want %d", sum, want)
	}
}

// An error counter written at the C side's index (from the object's BTF,
// not from errorNames) reads back under its name, summed over CPUs; every
// other kind the C side has reads 0.
func TestErrorsCounters(t *testing.T) {
	m := newTestMaps(t, 8)
	kinds := cEnum(t, "verdict_error")
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	v := make([]uint64, ncpu)
	v[0], v[ncpu-1] = 7, 7 // one CPU: 7, more: 14
	if err := m.objs.VerdictErrors.Put(kinds["ERR_MAP_FULL"], v); err != nil {
		t.Fatal(err)
	}
	errs, err := m.Errors()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"map_full": 7 * uint64(min(ncpu, 2))}
	for c := range kinds {
		if name := strings.ToLower(strings.TrimPrefix(c, "ERR_")); c != "ERR_MAX" && name != "map_full" {
			want[name] = 0
		}
	}
	if !maps.Equal(errs, want) {
		t.Errorf("Errors = %v, want %v", errs, want)
	}
}

func TestResultNamesAreStable(t *testing.T) {
	// Label values are an API: changing one breaks dashboards and alerts.
	want := "ok integrity proto_error replay expired no_state mode_error invalid_state header_error rejected seq_overflow output_error"
	if got := strings.Join(Results(), " "); got != want {
		t.Errorf("Results() = %q, want %q", got, want)
	}
}

// addCounter adds key to the table with its own counter holding perCPU,
// the way a program adds a new key (bpf/verdict_counters.h) but without
// an index slot.
func addCounter(t *testing.T, m *Maps, key xfrmVerdictVerdictKey, perCPU []xfrmVerdictVerdictValue) {
	t.Helper()
	var used uint64
	if err := m.objs.VerdictUsed.Lookup(uint32(0), &used); err != nil {
		t.Fatal(err)
	}
	n := uint32(used)
	if err := m.objs.VerdictKeys.Put(n, key); err != nil {
		t.Fatal(err)
	}
	if err := m.objs.VerdictCounts.Put(n, perCPU); err != nil {
		t.Fatal(err)
	}
	if err := m.objs.VerdictUsed.Put(uint32(0), used+1); err != nil {
		t.Fatal(err)
	}
}

func sortEntries(e []Entry) {
	slices.SortFunc(e, func(a, b Entry) int {
		return strings.Compare(a.Direction+a.Result+a.Peer.String(), b.Direction+b.Result+b.Peer.String())
	})
}

// newTestMaps creates real maps. Without the right to create BPF maps
// (not root, no CAP_BPF) the test is skipped and says so; every other
// failure fails it.
func newTestMaps(t *testing.T, size uint32) *Maps {
	t.Helper()
	m, err := NewMaps(size)
	if errors.Is(err, fs.ErrPermission) {
		t.Skipf("creating BPF maps needs root or CAP_BPF: %v", err)
	}
	if err != nil {
		t.Fatalf("NewMaps: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// installedPeers reads the set the programs consult through known_peers.
func installedPeers(t *testing.T, m *Maps) map[netip.Addr]bool {
	t.Helper()
	var id ebpf.MapID
	if err := m.objs.KnownPeers.Lookup(uint32(0), &id); err != nil {
		t.Fatalf("known_peers[0]: %v", err)
	}
	set, err := ebpf.NewMapFromID(id)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	out := map[netip.Addr]bool{}
	var k xfrmVerdictKnownPeerKey
	var v uint8
	it := set.Iterate()
	for it.Next(&k, &v) {
		out[netip.AddrFrom16(k.Addr)] = true
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSetKnownPeersReplacesTheSet(t *testing.T) {
	m := newTestMaps(t, 8)
	a, b, c := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::2"), netip.MustParseAddr("10.0.0.3")
	if err := m.SetKnownPeers([]netip.Addr{a, b, a}); err != nil {
		t.Fatal(err)
	}
	// IPv4 as IPv4-mapped IPv6, as the programs look it up.
	want := map[netip.Addr]bool{netip.AddrFrom16(a.As16()): true, b: true}
	if got := installedPeers(t, m); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("installed set %v, want %v", got, want)
	}
	if err := m.SetKnownPeers([]netip.Addr{c}); err != nil {
		t.Fatal(err)
	}
	if got := installedPeers(t, m); len(got) != 1 || !got[netip.AddrFrom16(c.As16())] {
		t.Errorf("after replacing with %s: installed %v", c, got)
	}
	if n, left := m.KnownPeers(); n != 1 || left != 0 {
		t.Errorf("KnownPeers = %d, %d left out; want 1, 0", n, left)
	}
}

func TestSetKnownPeersCountsWhatDoesNotFit(t *testing.T) {
	m := newTestMaps(t, 8)
	peers := make([]netip.Addr, KnownPeersMax+3)
	for i := range peers {
		peers[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	if err := m.SetKnownPeers(peers); err != nil {
		t.Fatal(err)
	}
	if n, left := m.KnownPeers(); n != KnownPeersMax || left != 3 {
		t.Errorf("KnownPeers = %d, %d left out; want %d, 3", n, left, KnownPeersMax)
	}
	if got := len(installedPeers(t, m)); got != KnownPeersMax {
		t.Errorf("%d peers installed, want %d", got, KnownPeersMax)
	}
}
