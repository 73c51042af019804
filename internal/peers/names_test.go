package peers

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseNames(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		in      string
		want    map[netip.Addr]string
		wantErr bool
	}{
		{in: "10.0.0.2: a\n\"fd00::2\": b\n", want: map[netip.Addr]string{a("10.0.0.2"): "a", a("fd00::2"): "b"}},
		{in: "fd00::2: b\n", want: map[netip.Addr]string{a("fd00::2"): "b"}},
		{in: "10.0.0.2 a\n  # comment\n\nfd00:0:0::2 b # trailing\n", want: map[netip.Addr]string{a("10.0.0.2"): "a", a("fd00::2"): "b"}},
		{in: "::ffff:10.0.0.3 c\n", want: map[netip.Addr]string{a("10.0.0.3"): "c"}},
		{in: "", want: map[netip.Addr]string{}},
		{in: "10.0.0.2 a extra\n", wantErr: true},
		{in: "node-a 10.0.0.2\n", wantErr: true},
		{in: "10.0.0.300: a\n", wantErr: true},
		{in: "10.0.0.2 bad\xffname\n", wantErr: true},
		{in: "10.0.0.2 " + strings.Repeat("n", MaxNameLength+1) + "\n", wantErr: true},
	} {
		got, err := parseNames([]byte(tc.in))
		if (err != nil) != tc.wantErr {
			t.Errorf("parseNames(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && !maps.Equal(got, tc.want) {
			t.Errorf("parseNames(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestReadNamesRefuses: what is not a regular file of bounded size is
// refused at once, without reading it or blocking on it: a missing file,
// /dev/zero (which reads forever), a FIFO (whose open would wait for a
// writer), a directory, and a file over the bound (a million lines).
func TestReadNamesRefuses(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	var b strings.Builder
	for i := range 1_000_000 {
		fmt.Fprintf(&b, "10.%d.%d.%d n%d\n", i>>16&255, i>>8&255, i&255, i)
	}
	if err := os.WriteFile(big, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path    string
		wantErr error
	}{
		{filepath.Join(dir, "absent"), os.ErrNotExist},
		{"/dev/zero", ErrNotRegular},
		{fifo, ErrNotRegular},
		{dir, ErrNotRegular},
		{big, nil},
	} {
		start := time.Now()
		_, _, err := readNames(tc.path)
		if err == nil {
			t.Errorf("%s: read, want an error", tc.path)
			continue
		}
		if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: %v, want %v", tc.path, err, tc.wantErr)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: refused after %v", tc.path, d)
		}
		t.Logf("%s: %v", filepath.Base(tc.path), err)
	}
	// A missing file is an error at start.
	if _, err := New(Config{NamesFile: filepath.Join(dir, "absent")}); err == nil {
		t.Error("a missing peer-names file is not an error at start")
	}
}

// TestNamesReload: a rewritten file (in the other format) is picked up, a
// broken rewrite keeps the last good names, a file replaced by a FIFO too.
func TestNamesReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peers.yaml")
	if err := os.WriteFile(path, []byte("10.0.0.2: node-b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tr := newTracker(t, Config{NamesFile: path})
	want := map[netip.Addr]string{netip.MustParseAddr("10.0.0.2"): "node-b"}
	if got := tr.Names(); !maps.Equal(got, want) {
		t.Fatalf("names %v, want %v", got, want)
	}
	later := time.Now().Add(2 * time.Second)
	rewrite := func(content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		later = later.Add(2 * time.Second)
		if err := os.Chtimes(path, later, later); err != nil {
			t.Fatal(err)
		}
	}
	rewrite("# peers\n10.0.0.2 node-b2\nfd00:0::2 node-c\n")
	want = map[netip.Addr]string{netip.MustParseAddr("10.0.0.2"): "node-b2", netip.MustParseAddr("fd00::2"): "node-c"}
	if got := tr.Names(); !maps.Equal(got, want) {
		t.Errorf("after the rewrite: %v, want %v", got, want)
	}
	if got := tr.Current().All(); len(got) != 0 {
		t.Errorf("peers %v in no watched namespace, want none", got)
	}
	rewrite("not an address at all\n")
	if got := tr.Names(); !maps.Equal(got, want) {
		t.Errorf("after a broken rewrite: %v, want the last good %v", got, want)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := tr.Names(); !maps.Equal(got, want) {
		t.Errorf("after replacing the file by a FIFO: %v, want the last good %v", got, want)
	}
}
