package verdict

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/ipsec-exporter/ipsec_exporter/internal/pin/pintest"
)

// TestEveryMapDecided makes a map added to the object say whether it holds
// counts (pinned with --bpf.pin-path) or not.
func TestEveryMapDecided(t *testing.T) {
	spec, err := loadXfrmVerdict()
	if err != nil {
		t.Fatal(err)
	}
	for name := range spec.Maps {
		if !slices.Contains(countingMaps, name) && !slices.Contains(transientMaps, name) {
			t.Errorf("map %s is in neither countingMaps nor transientMaps", name)
		}
	}
}

// TestPinnedCountersContinue: maps created again in the same pin directory
// hold what the first ones counted; with another size they start at 0.
func TestPinnedCountersContinue(t *testing.T) {
	pins := pintest.Dir(t).Join("verdict")
	spec, err := loadXfrmVerdict()
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{{Direction: "decrypt", Result: "ok", Peer: netip.MustParseAddr("192.0.2.1"), Packets: 300, Bytes: 30000}}
	m, err := newMaps(spec, 64, pins, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Set(want); err != nil {
		t.Fatal(err)
	}
	if err := m.SetError("map_full", 7); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	m, err = newMaps(spec, 64, pins, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Read()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("after reloading: %+v, want %+v", got, want)
	}
	if errs, err := m.Errors(); err != nil || errs["map_full"] != 7 {
		t.Errorf("accounting errors after reloading: %v %v, want map_full 7", errs, err)
	}
	_ = m.Close()

	// The table is one set of maps: its fill level starts again with it,
	// so the one counter of a table of size 1 is free again.
	m, err = newMaps(spec, 1, pins, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got, err := m.Read(); err != nil || len(got) != 0 {
		t.Errorf("after a size change: %+v %v, want no counters (reset)", got, err)
	}
	if err := m.Set(want); err != nil {
		t.Errorf("after a size change the table has no room: %v", err)
	}
}
