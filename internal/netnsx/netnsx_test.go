package netnsx_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx/netnsxtest"
)

// TestDoAndReadFile enters a fresh namespace, whose loopback is down and
// whose /proc/net differs from ours, and checks that the calling thread is
// back in our namespace afterwards.
func TestDoAndReadFile(t *testing.T) {
	n := netnsxtest.New(t, "", "ns")
	id := n.ID
	own, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	if err := n.Do(func() error {
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside == own || inside != id.String() {
		t.Errorf("Do ran in %s, want %s (ours is %s)", inside, id, own)
	}
	if back, _ := os.Readlink("/proc/thread-self/ns/net"); back != own {
		t.Errorf("after Do the caller is in %s, not %s", back, own)
	}
	// Our devices list has more than lo; the fresh namespace only lo.
	theirs, err := n.ReadFile("/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	if c := strings.Count(string(theirs), ":"); c != 1 {
		t.Errorf("fresh namespace shows %d devices in /proc/net/dev:\n%s", c, theirs)
	}
	ownNS, err := netnsx.Own()
	if err != nil || ownNS.ID.String() != own {
		t.Errorf("Own() = %v %v, want %s", ownNS, err, own)
	}
}

// TestNamespaceGone: a namespace that is no longer at its path, or whose
// name now holds another namespace, is ErrGone, and a file that is not a
// namespace is never entered.
func TestNamespaceGone(t *testing.T) {
	dir := t.TempDir()
	old := netnsxtest.New(t, dir, "zz")
	path := old.Path
	if err := old.Do(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := netnsxtest.Delete(path); err != nil {
		t.Fatal(err)
	}
	if err := old.Do(func() error { return nil }); !errors.Is(err, netnsx.ErrGone) {
		t.Errorf("deleted namespace: %v, want ErrGone", err)
	}
	if err := netnsxtest.Add(path); err != nil {
		t.Fatal(err)
	}
	ran := false
	if err := old.Do(func() error { ran = true; return nil }); !errors.Is(err, netnsx.ErrGone) || ran {
		t.Errorf("namespace recreated under the same name: %v (ran %v), want ErrGone", err, ran)
	}
	if err := (netnsx.Namespace{Name: "zz", Path: path}).Do(func() error { return nil }); err != nil {
		t.Errorf("the new one, entered without an ID: %v", err)
	}
	for name := range notNamespaces(t, dir) {
		p := filepath.Join(dir, name)
		if _, err := netnsx.Identify(p); !errors.Is(err, netnsx.ErrNotNamespace) {
			t.Errorf("Identify(%s): %v, want ErrNotNamespace", name, err)
		}
		done := make(chan error, 1)
		go func() { done <- (netnsx.Namespace{Name: name, Path: p}).Do(func() error { return nil }) }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("entered %s", name)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("entering %s blocks", name)
		}
	}
}

// notNamespaces fills dir with what CNI plugins, containerd and accidents
// leave in a namespace directory: an empty file, a plain one, a FIFO, a
// directory, a link to nothing. The values say what each is.
func notNamespaces(t *testing.T, dir string) map[string]string {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644))
	must(os.WriteFile(filepath.Join(dir, "plain"), []byte("cni state\n"), 0o644))
	must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	must(os.Mkdir(filepath.Join(dir, "subdir"), 0o755))
	must(os.Symlink(filepath.Join(dir, "nothing"), filepath.Join(dir, "dangling")))
	return map[string]string{"empty": "empty file", "plain": "plain file", "fifo": "FIFO", "subdir": "directory", "dangling": "link to nothing"}
}
