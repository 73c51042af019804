package verdict

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
)

// The counter table (bpf/verdict_counters.h) run by a real BPF program in
// the host's kernel: tableTest's TC program counts the key it is handed,
// through the same verdict_counter() the verdict programs call, into the
// maps of a Maps, which reads them back.

// tableCounter loads the test program on a new table of size keys.
func tableCounter(t *testing.T, size uint32) (*Maps, func(e Entry) bool) {
	t.Helper()
	m := newTestMaps(t, size)
	spec, err := loadTableTest()
	if err != nil {
		t.Fatal(err)
	}
	if err := sizeTable(spec, size); err != nil {
		t.Fatal(err)
	}
	r := m.replacements()
	var objs tableTestObjects
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		xfrmVerdictMapVerdictCounts: r[xfrmVerdictMapVerdictCounts],
		xfrmVerdictMapVerdictKeys:   r[xfrmVerdictMapVerdictKeys],
		xfrmVerdictMapVerdictIndex:  r[xfrmVerdictMapVerdictIndex],
		xfrmVerdictMapVerdictUsed:   r[xfrmVerdictMapVerdictUsed],
	}})
	if err != nil {
		t.Fatalf("loading the table's test program: %v", err)
	}
	t.Cleanup(func() { _ = objs.Close() })
	count := func(e Entry) bool {
		t.Helper()
		k, err := entryKey(e)
		if err != nil {
			t.Fatal(err)
		}
		// An Ethernet header of type 0x88b5 (local experimental: the
		// kernel parses nothing behind it), the key, the bytes.
		data := make([]byte, 14+24)
		data[12], data[13] = 0x88, 0xb5
		req := data[14:]
		req[0], req[1], req[2] = k.Direction, k.Family, k.Result
		copy(req[4:20], k.Peer[:])
		binary.LittleEndian.PutUint32(req[20:], uint32(e.Bytes))
		ret, err := objs.CountKey.Run(&ebpf.RunOptions{Data: data})
		if err != nil {
			t.Fatalf("running the table's test program on %x: %v", data, err)
		}
		if ret > 1 {
			t.Fatalf("the test program could not read its request (%d)", ret)
		}
		return ret == 1
	}
	return m, count
}

func readSorted(t *testing.T, m *Maps) []Entry {
	t.Helper()
	got, err := m.Read()
	if err != nil {
		t.Fatal(err)
	}
	sortEntries(got)
	return got
}

// Each key counts into its own counter, packets and bytes exact, IPv4 and
// IPv6, and keys that differ only in one field stay apart.
func TestTableCountsEachKey(t *testing.T) {
	m, count := tableCounter(t, 64)
	a, b := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("2001:db8::7")
	sent := []Entry{
		{Direction: "encrypt", Result: "integrity", Peer: a, Bytes: 100},
		{Direction: "decrypt", Result: "integrity", Peer: a, Bytes: 10},
		{Direction: "decrypt", Result: "replay", Peer: a, Bytes: 1},
		{Direction: "decrypt", Result: "replay", Peer: b, Bytes: 1000},
		{Direction: "decrypt", Result: "header_error", Bytes: 3}, // the unknown peer
	}
	want := map[Entry]Entry{}
	for i := range 7 {
		for j, e := range sent {
			if j > i { // the later keys get fewer packets
				continue
			}
			if !count(e) {
				t.Fatalf("%+v refused by a table with room", e)
			}
			key := e
			key.Bytes = 0
			w := want[key]
			w, w.Packets, w.Bytes = e, w.Packets+1, w.Bytes+e.Bytes
			want[key] = w
		}
	}
	var wantList []Entry
	for _, w := range want {
		wantList = append(wantList, w)
	}
	sortEntries(wantList)
	if got := readSorted(t, m); !slices.Equal(got, wantList) {
		t.Errorf("Read = %+v\nwant %+v", got, wantList)
	}
}

// A full table refuses new keys and only those: the keys it holds go on
// counting, and Read returns exactly capacity keys.
func TestTableRefusesWhenFull(t *testing.T) {
	const size = 50
	m, count := tableCounter(t, size)
	peer := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}) }
	accepted := 0
	for i := range size + 13 {
		if count(Entry{Direction: "decrypt", Result: "ok", Peer: peer(i), Bytes: 1}) {
			accepted++
		}
	}
	if accepted != size {
		t.Errorf("%d of %d new keys accepted by a table of %d", accepted, size+13, size)
	}
	for i := range size {
		if !count(Entry{Direction: "decrypt", Result: "ok", Peer: peer(i), Bytes: 1}) {
			t.Errorf("key %d, held by the full table, refused", i)
		}
	}
	got := readSorted(t, m)
	if len(got) != size {
		t.Fatalf("Read returned %d keys, want %d", len(got), size)
	}
	for _, e := range got {
		if e.Packets != 2 || e.Bytes != 2 {
			t.Errorf("%+v: want 2 packets, 2 bytes", e)
		}
	}
}

// Every key fits up to the capacity, whatever the capacity and however the
// keys look (sequential gateway peers, random IPv6, one peer's results), and
// is found again: the index never runs out of probes first.
func TestTableFillsToCapacity(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := map[string]func(i int) Entry{
		"sequential IPv4": func(i int) Entry {
			return Entry{Direction: "encrypt", Result: "ok", Peer: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})}
		},
		"random IPv6": func(int) Entry {
			var a [16]byte
			for j := range a {
				a[j] = byte(rng.Uint32())
			}
			a[0] = 0x20
			return Entry{Direction: "decrypt", Result: "replay", Peer: netip.AddrFrom16(a)}
		},
		"results and directions": func(i int) Entry {
			dirs, results := []string{"encrypt", "decrypt"}, Results()
			p := i / (len(dirs) * len(results))
			return Entry{Direction: dirs[i%2], Result: results[(i/2)%len(results)],
				Peer: netip.AddrFrom4([4]byte{192, 0, byte(p >> 8), byte(p)})}
		},
	}
	for _, size := range []uint32{1, 7, 1000, DefaultMapSize} {
		for name, key := range keys {
			t.Run(fmt.Sprintf("%d %s", size, name), func(t *testing.T) { fillTable(t, size, key) })
		}
	}
	// The largest table once (half a million program runs).
	t.Run(fmt.Sprintf("%d random IPv6", MaxMapSize), func(t *testing.T) { fillTable(t, MaxMapSize, keys["random IPv6"]) })
}

// fillTable adds size keys made by key to a table of size keys and counts
// each once more.
func fillTable(t *testing.T, size uint32, key func(int) Entry) {
	m, count := tableCounter(t, size)
	made := make([]Entry, size)
	for i := range made {
		made[i] = key(i)
		made[i].Bytes = 1
		if !count(made[i]) {
			t.Fatalf("key %d of %d refused", i+1, size)
		}
	}
	for i, e := range made {
		if !count(e) {
			t.Fatalf("key %d not found again", i)
		}
	}
	if got := readSorted(t, m); len(got) != int(size) {
		t.Errorf("Read returned %d keys, want %d", len(got), size)
	}
}
