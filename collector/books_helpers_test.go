package collector

import (
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Helpers of the kernel-books collector tests (sa, policy, events,
// xfrm_stat).

// booksProm adapts a Collector for testutil; an Update error fails t.
type booksProm struct {
	t *testing.T
	c Collector
}

func (a booksProm) Describe(chan<- *prometheus.Desc) {}
func (a booksProm) Collect(ch chan<- prometheus.Metric) {
	if err := a.c.Update(ch); err != nil {
		a.t.Errorf("Update: %v", err)
	}
}

func booksLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// booksNamespace makes a directory holding one fresh named network
// namespace, as `ip netns add` would under /var/run/netns, and returns the
// directory and the namespace's path. Needs root.
func booksNamespace(t *testing.T, name string) (dir, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	dir = t.TempDir()
	path = filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(path, unix.MNT_DETACH) })
	return dir, path
}

// booksNetlink opens a netlink handle (XFRM, ROUTE) in the namespace at path.
func booksNetlink(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ns.Close() }()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_XFRM, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// booksFDs counts this process's open file descriptors.
func booksFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

type booksMetric = dto.Metric
