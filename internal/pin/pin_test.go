package pin_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ipsec-exporter/ipsec_exporter/internal/pin"
	"github.com/ipsec-exporter/ipsec_exporter/internal/pin/pintest"
)

func TestCheck(t *testing.T) {
	bpffs := string(pintest.Dir(t))
	for _, c := range []struct {
		dir, want string // want: a part of the error, "" for none
	}{
		{"relative/dir", "must be an absolute path"},
		{t.TempDir(), "not on a BPF filesystem"},
		{filepath.Join(t.TempDir(), "absent", "deeper"), "not on a BPF filesystem"},
		{bpffs, ""},
		{filepath.Join(bpffs, "ipsec_exporter", "not", "yet"), ""},
	} {
		err := pin.Check(c.dir)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("Check(%q): %v", c.dir, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("Check(%q) = %v, want an error saying %q", c.dir, err, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(bpffs, "ipsec_exporter")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Check created the directory (stat: %v)", err)
	}
}

// counters loads a spec with one counting map and one other, pinned in d,
// and returns the counting map's value at key 1 before it writes add there.
func counters(t *testing.T, d pin.Dir, maxEntries uint32, add uint64) (before uint64, reset []string) {
	t.Helper()
	spec := &ebpf.CollectionSpec{Maps: map[string]*ebpf.MapSpec{
		"counts":  {Name: "counts", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: maxEntries},
		"scratch": {Name: "scratch", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1},
	}}
	opts, reset, err := d.Maps(spec, "counts")
	if err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Maps: opts})
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	if err := coll.Maps["counts"].Lookup(uint32(1), &before); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatal(err)
	}
	if err := coll.Maps["counts"].Put(uint32(1), before+add); err != nil {
		t.Fatal(err)
	}
	return before, reset
}

func TestMapsContinueAndReset(t *testing.T) {
	d := pintest.Dir(t).Join("object")
	if before, reset := counters(t, d, 8, 100); before != 0 || reset != nil {
		t.Fatalf("first load: %d, reset %v; want 0, none", before, reset)
	}
	if before, reset := counters(t, d, 8, 100); before != 100 || reset != nil {
		t.Fatalf("second load: %d, reset %v; want 100 from the first, none", before, reset)
	}
	if _, err := os.Stat(filepath.Join(string(d), "scratch")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a map not named was pinned (stat: %v)", err)
	}
	// Another size is another layout: the counters start again, and say so.
	before, reset := counters(t, d, 16, 100)
	if before != 0 || len(reset) != 1 || !strings.HasPrefix(reset[0], "counts") {
		t.Fatalf("load with a new size: %d, reset %v; want 0, counts reset", before, reset)
	}
	if before, reset := counters(t, d, 16, 1); before != 100 || reset != nil {
		t.Fatalf("load after the reset: %d, reset %v; want 100, none", before, reset)
	}
}

// A set of maps is reset together: when one of them changed, the others'
// pins go too, though they still fit (a table's fill level kept beside a
// new, empty table would point past its end).
func TestMapsResetTogether(t *testing.T) {
	d := pintest.Dir(t).Join("object")
	load := func(tableSize uint32) (level uint64, reset []string) {
		spec := &ebpf.CollectionSpec{Maps: map[string]*ebpf.MapSpec{
			"table": {Name: "table", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: tableSize},
			"level": {Name: "level", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1},
		}}
		opts, reset, err := d.Maps(spec, "table", "level")
		if err != nil {
			t.Fatal(err)
		}
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Maps: opts})
		if err != nil {
			t.Fatal(err)
		}
		defer coll.Close()
		if err := coll.Maps["level"].Lookup(uint32(0), &level); err != nil {
			t.Fatal(err)
		}
		if err := coll.Maps["level"].Put(uint32(0), level+5); err != nil {
			t.Fatal(err)
		}
		return level, reset
	}
	if level, reset := load(8); level != 0 || reset != nil {
		t.Fatalf("first load: level %d, reset %v", level, reset)
	}
	if level, reset := load(8); level != 5 || reset != nil {
		t.Fatalf("same layout: level %d, reset %v; want 5, none", level, reset)
	}
	level, reset := load(16)
	if level != 0 || len(reset) != 2 || !strings.HasPrefix(reset[0], "table (") || reset[1] != "level (with the others)" {
		t.Errorf("table resized: level %d, reset %q; want 0, table and level", level, reset)
	}
}

func TestZeroDirPinsNothing(t *testing.T) {
	var d pin.Dir
	opts, reset, err := d.Maps(&ebpf.CollectionSpec{}, "absent")
	if err != nil || opts.PinPath != "" || reset != nil {
		t.Errorf("zero Dir: %v %q %v", err, opts.PinPath, reset)
	}
	if d.Join("x").Enabled() {
		t.Error("a subdirectory of the zero Dir pins")
	}
}
