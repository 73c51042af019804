package scenario

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netns is a named network namespace (visible to `ip netns exec NAME`),
// deleted when the test ends.
type Netns struct {
	Name string
	// NL is a netlink handle in the namespace, opened with the ROUTE and XFRM
	// families (the default handle lacks XFRM: "protocol not supported").
	NL     *netlink.Handle
	handle netns.NsHandle
}

var nsCounter atomic.Int64

// NewNetns creates a namespace whose name starts with prefix, with lo up.
func NewNetns(t TB, prefix string) *Netns {
	t.Helper()
	var (
		name string
		h    netns.NsHandle
		err  error
	)
	// Names count up per test binary; the next package's binary starts at 1
	// again, so skip names a leaked namespace still holds.
	for range 100 {
		name = fmt.Sprintf("%s%d", prefix, nsCounter.Add(1))
		if h, err = newNamed(name); !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	n := &Netns{Name: name, handle: h}
	t.Cleanup(func() {
		if n.NL != nil {
			n.NL.Close()
		}
		n.handle.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	n.NL, err = netlink.NewHandleAt(h, unix.NETLINK_ROUTE, unix.NETLINK_XFRM)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	lo, err := n.NL.LinkByName("lo")
	if err != nil {
		t.Fatalf("%s: lo: %v", name, err)
	}
	if err := n.NL.LinkSetUp(lo); err != nil {
		t.Fatalf("%s: lo up: %v", name, err)
	}
	return n
}

// newNamed creates a named namespace without leaving this thread in it.
func newNamed(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		return 0, err
	}
	// NewNamed switches this thread into the new namespace, also when it
	// fails after unsharing: switch back in every case.
	h, err := netns.NewNamed(name)
	if serr := netns.Set(orig); serr != nil {
		// This thread is stuck in the new namespace: keep it locked so the
		// runtime throws it away instead of reusing it.
		runtime.LockOSThread()
		if err == nil {
			h.Close()
		}
		return 0, serr
	}
	return h, err
}

// Handle is the namespace's file descriptor handle.
func (n *Netns) Handle() netns.NsHandle { return n.handle }

// Path is the namespace's bind mount, for `ip netns exec` or setns.
func (n *Netns) Path() string { return "/run/netns/" + n.Name }

// Do runs f on an OS thread switched into the namespace. Sockets created in
// f stay in the namespace and may be used after Do returns.
func (n *Netns) Do(f func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: %w", n.Name, err)
	}
	defer orig.Close()
	if err := netns.Set(n.handle); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: %w", n.Name, err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime ends it with this goroutine.
		return fmt.Errorf("netns %s: restore: %w", n.Name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// ReadFile reads a file as seen from inside the namespace; use it for
// /proc/net/... files (read through /proc/thread-self/net, since
// /proc/self/net shows the main thread's namespace).
func (n *Netns) ReadFile(path string) ([]byte, error) {
	var b []byte
	err := n.Do(func() error {
		var err error
		b, err = os.ReadFile(path)
		return err
	})
	return b, err
}
