// Package netnsxtest makes network namespaces for tests, the way `ip netns
// add` and `ip netns del` do: a fresh namespace bind-mounted on a file of a
// directory, and unmounted and removed again. It needs root; without it the
// tests that use it are skipped.
package netnsxtest

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
)

// New creates a fresh network namespace mounted at dir/name and removes it
// when the test ends. An empty dir means a new temporary directory.
func New(t testing.TB, dir, name string) netnsx.Namespace {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, name)
	if err := Add(path); err != nil {
		t.Fatalf("creating namespace %s: %v", path, err)
	}
	t.Cleanup(func() { _ = Delete(path) })
	ns, err := netnsx.At(path)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// Recreate deletes the namespace mounted at ns.Path and mounts a fresh one
// there, as `ip netns del` and `ip netns add` of one name do, and returns
// the fresh one. The cleanup New registered removes it too.
func Recreate(t testing.TB, ns netnsx.Namespace) netnsx.Namespace {
	t.Helper()
	if err := Delete(ns.Path); err != nil {
		t.Fatal(err)
	}
	if err := Add(ns.Path); err != nil {
		t.Fatal(err)
	}
	again, err := netnsx.At(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	return again
}

// Add creates a fresh network namespace mounted at path, as `ip netns add`
// does: the file first, then the mount.
func Add(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	_ = f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer func() { _ = orig.Close() }()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err = unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
		// Back to where it was; if that fails the thread stays locked
		// and ends with the goroutine instead of serving others.
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		_ = os.Remove(path)
		return err
	}
	return nil
}

// Delete unmounts the namespace at path and removes the file, as `ip netns
// del` does. The namespace itself ends when nothing holds it any more.
func Delete(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return err
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// Handle opens a netlink handle (XFRM and ROUTE) inside the namespace,
// closed when the test ends.
func Handle(t testing.TB, ns netnsx.Namespace) *netlink.Handle {
	t.Helper()
	f, err := ns.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	h, err := netlink.NewHandleAt(netns.NsHandle(f.Fd()), unix.NETLINK_XFRM, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}
