package netnsx_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx/netnsxtest"
)

// recorder keeps what a subscriber was told.
type recorder struct {
	mu      sync.Mutex
	changes []netnsx.Change
}

func (r *recorder) record(c netnsx.Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, c)
}

func (r *recorder) snapshot() []netnsx.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.changes)
}

// waitFor waits until cond holds for the changes so far, without ever
// calling Refresh: only the watcher's own following can make it true.
func (r *recorder) waitFor(t *testing.T, what string, cond func([]netnsx.Change) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		ok := cond(r.changes)
		r.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("%s: not seen within 5s; changes %v", what, r.changes)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func added(cs []netnsx.Change, name string, fresh bool) (netnsx.Namespace, bool) {
	for _, c := range cs {
		for _, n := range c.Added {
			if n.Name == name && c.Fresh == fresh {
				return n, true
			}
		}
	}
	return netnsx.Namespace{}, false
}

func removed(cs []netnsx.Change, n netnsx.Namespace) bool {
	for _, c := range cs {
		if slices.Contains(c.Removed, n) {
			return true
		}
	}
	return false
}

func names(ns []netnsx.Namespace) string {
	var s []string
	for _, n := range ns {
		s = append(s, n.Name)
	}
	return strings.Join(s, ",")
}

// TestWatcherFollows: namespaces that appear, go, and come back under the
// same name are seen as they happen (inotify and the mount table, no
// Refresh), each keyed by its own ID; entries that are not namespaces are
// skipped and counted without being opened; another name of a namespace
// already read is read once.
func TestWatcherFollows(t *testing.T) {
	dir := t.TempDir()
	a := netnsxtest.New(t, dir, "a").Path
	notNamespaces(t, dir)
	if err := os.Symlink(a, filepath.Join(dir, "a-alias")); err != nil {
		t.Fatal(err)
	}
	w, err := netnsx.NewWatcher(netnsx.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	if got := names(w.Namespaces()); got != ",a" {
		t.Fatalf("namespaces %q, want own and a", got)
	}
	st := w.Stats()
	if want := map[string]int{netnsx.SkipNotNamespace: 5, netnsx.SkipDuplicate: 1}; fmt.Sprint(st.Skipped) != fmt.Sprint(want) || !st.Following || st.Namespaces != 2 {
		t.Errorf("stats %+v, want skipped %v, following, 2 namespaces", st, want)
	}
	var r recorder
	cancel := w.Subscribe(r.record)
	defer cancel()
	first := r.snapshot()
	if len(first) != 1 || names(first[0].Added) != ",a" || first[0].Fresh {
		t.Fatalf("first call %+v, want every namespace, not fresh", first)
	}
	oldA := first[0].Added[1]

	// A new one, found by the watcher itself.
	netnsxtest.New(t, dir, "b")
	r.waitFor(t, "b added", func(cs []netnsx.Change) bool { _, ok := added(cs, "b", true); return ok })

	// a deleted and created again, with nothing in between that lists it.
	if err := netnsxtest.Delete(a); err != nil {
		t.Fatal(err)
	}
	if err := netnsxtest.Add(a); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "a replaced", func(cs []netnsx.Change) bool {
		n, ok := added(cs, "a", true)
		return ok && n.ID != oldA.ID && removed(cs, oldA)
	})
	if got := names(w.Namespaces()); got != ",a,b" {
		t.Errorf("namespaces %q, want own, a, b", got)
	}
	// An empty file is a namespace in the making until it is mounted.
	c := filepath.Join(dir, "c")
	if err := os.WriteFile(c, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "c skipped", func([]netnsx.Change) bool { return w.Stats().Skipped[netnsx.SkipNotNamespace] == 6 })
	if err := os.Remove(c); err != nil {
		t.Fatal(err)
	}
	netnsxtest.New(t, dir, "c")
	r.waitFor(t, "c added", func(cs []netnsx.Change) bool { _, ok := added(cs, "c", true); return ok })
	st = w.Stats()
	if st.Appeared != 3 || st.Vanished != 1 || st.Skipped[netnsx.SkipNotNamespace] != 5 || st.Skipped[netnsx.SkipDuplicate] != 1 {
		t.Errorf("stats %+v, want 3 appeared (b, a again, c), 1 vanished, 5 not namespaces, a-alias a duplicate; changes %+v", st, r.snapshot())
	}
	cancel()
	netnsxtest.New(t, dir, "d")
	w.Refresh()
	if _, ok := added(r.snapshot(), "d", true); ok {
		t.Error("a cancelled subscriber was called")
	}
}

// TestWatcherSelection: --collector.netns.name picks names; a directory
// that does not exist yet is followed once it does.
func TestWatcherSelection(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "netns")
	w, err := netnsx.NewWatcher(netnsx.Config{Dir: dir, Names: []string{"vpn", "absent"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	if got := names(w.Namespaces()); got != "" {
		t.Fatalf("namespaces %q, want only our own", got)
	}
	var r recorder
	defer w.Subscribe(r.record)()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	netnsxtest.New(t, dir, "other")
	netnsxtest.New(t, dir, "vpn")
	r.waitFor(t, "vpn added", func(cs []netnsx.Change) bool { _, ok := added(cs, "vpn", true); return ok })
	if got := names(w.Namespaces()); got != ",vpn" {
		t.Errorf("namespaces %q, want own and vpn", got)
	}
	if n := w.Stats().Skipped; len(n) != 0 {
		t.Errorf("skipped %v: a name not selected is not a skipped entry", n)
	}
}

// TestWatcherOwnOnly: no directory, only the exporter's own namespace.
func TestWatcherOwnOnly(t *testing.T) {
	w, err := netnsx.NewWatcher(netnsx.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	own, _ := netnsx.Own()
	if ns := w.Namespaces(); len(ns) != 1 || ns[0] != own {
		t.Errorf("namespaces %v, want %v", ns, own)
	}
}
