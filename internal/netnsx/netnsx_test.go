package netnsx

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestList(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"vpn", "blue", "red"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	names := func(ts []Target) string {
		var s []string
		for _, tg := range ts {
			s = append(s, tg.Name+"="+tg.Path)
		}
		return strings.Join(s, " ")
	}
	all, err := List(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(all), "= blue="+dir+"/blue red="+dir+"/red vpn="+dir+"/vpn"; got != want {
		t.Errorf("List: %s, want %s", got, want)
	}
	some, _ := List(dir, []string{"vpn", "absent"})
	if got, want := names(some), "= vpn="+dir+"/vpn"; got != want {
		t.Errorf("List with names: %s, want %s", got, want)
	}
	for _, d := range []string{"", filepath.Join(dir, "missing")} {
		own, err := List(d, nil)
		if err != nil || names(own) != "=" {
			t.Errorf("List(%q): %s %v, want only our own", d, names(own), err)
		}
	}
}

// TestDoAndReadFile enters a fresh namespace, whose loopback is down and
// whose /proc/net differs from ours, and checks that the calling thread is
// back in our namespace afterwards.
func TestDoAndReadFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	path := filepath.Join(t.TempDir(), "ns")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Unmount(path, unix.MNT_DETACH) }()

	own, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	if err := Do(path, func() error {
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside == own {
		t.Errorf("Do ran in our own namespace %s", own)
	}
	// Our devices list has more than lo; the fresh namespace only lo.
	theirs, err := ReadFile(Target{Name: "x", Path: path}, "/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(theirs), ":"); n != 1 {
		t.Errorf("fresh namespace shows %d devices in /proc/net/dev:\n%s", n, theirs)
	}
	if err := Do(filepath.Join(t.TempDir(), "absent"), func() error { return nil }); err == nil {
		t.Error("no error for a missing namespace file")
	}
	if err := Do("/proc/self/status", func() error { return nil }); err == nil {
		t.Error("no error for a file that is not a namespace")
	}
}
