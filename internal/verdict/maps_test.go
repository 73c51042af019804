package verdict

import (
	"errors"
	"io/fs"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestMapsRoundTrip(t *testing.T) {
	m := newTestMaps(t, 8)
	want := []Entry{
		{Direction: "encrypt", Result: "ok", Peer: netip.MustParseAddr("10.0.0.2"), Packets: 5, Bytes: 420},
		{Direction: "decrypt", Result: "integrity", Peer: netip.MustParseAddr("fd00::2"), Packets: 3, Bytes: 300},
	}
	if err := m.Set(want); err != nil {
		t.Fatalf("Set: %v", err)
	}
	got, err := m.Read()
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	sortEntries(got)
	sortEntries(want)
	if !slices.Equal(got, want) {
		t.Errorf("Read = %+v, want %+v", got, want)
	}
	if m.batch != 1 {
		t.Errorf("batch lookups not used on a kernel that has them (batch=%d)", m.batch)
	}
	// The iteration fallback reads the same.
	m.batch = -1
	got, err = m.Read()
	if err != nil {
		t.Fatalf("Read by iteration: %v", err)
	}
	sortEntries(got)
	if !slices.Equal(got, want) {
		t.Errorf("Read by iteration = %+v, want %+v", got, want)
	}
	if m.MaxEntries() != 8 {
		t.Errorf("MaxEntries = %d, want 8", m.MaxEntries())
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

func TestErrorsCounters(t *testing.T) {
	m := newTestMaps(t, 8)
	if err := m.SetError("map_full", 7); err != nil {
		t.Fatal(err)
	}
	errs, err := m.Errors()
	if err != nil {
		t.Fatal(err)
	}
	if errs["map_full"] != 7 || errs["stack_full"] != 0 || len(errs) != len(ErrorKinds()) {
		t.Errorf("Errors = %v", errs)
	}
}

func TestResultNamesAreStable(t *testing.T) {
	// Label values are an API: changing one breaks dashboards and alerts.
	want := "ok integrity proto_error replay expired no_state mode_error invalid_state header_error rejected seq_overflow output_error"
	if got := strings.Join(Results(), " "); got != want {
		t.Errorf("Results() = %q, want %q", got, want)
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
