// Package netnsx finds the network namespaces the exporter reads, follows
// them as they come and go (Watcher), and runs code inside one of them.
//
// A namespace is identified by itself, not by its name: by the device and
// inode of its nsfs file (ID), what `ls -iL /var/run/netns/NAME` and
// `readlink /proc/PID/ns/net` show. A name deleted and created again
// (`ip netns del zz; ip netns add zz`) is another namespace with another ID.
//
// Convention: the exporter's own namespace is named "" (the metrics carry
// netns=""), every other one by its file name under the namespace directory
// (/var/run/netns, where `ip netns add` puts them).
package netnsx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrGone means the namespace is no longer at its path: deleted, unmounted,
// or replaced by another namespace of the same name. Readers skip it: a
// namespace that vanished between listing and reading is no failure.
var ErrGone = errors.New("network namespace gone")

// ID identifies a network namespace: the device and inode of its nsfs file.
type ID struct {
	Dev, Ino uint64
}

func (id ID) String() string { return fmt.Sprintf("net:[%d]", id.Ino) }

// Namespace is one network namespace to read.
type Namespace struct {
	Name string // "" for the exporter's own
	Path string // "" for the exporter's own
	ID   ID     // zero: not checked when entering (a namespace made by hand)
}

// ownPath shows the namespace of the calling thread. Every thread that is
// not locked by Do is in the exporter's own namespace; the process's main
// thread may not be (/proc/self/ns/net shows the main thread's, and Go runs
// goroutines on it too).
const ownPath = "/proc/thread-self/ns/net"

// Own returns the exporter's own namespace with its ID.
func Own() (Namespace, error) {
	var st unix.Stat_t
	if err := unix.Stat(ownPath, &st); err != nil {
		return Namespace{}, fmt.Errorf("reading own network namespace: %w", err)
	}
	return Namespace{ID: ID{Dev: st.Dev, Ino: st.Ino}}, nil
}

// At returns the namespace mounted at path, named after the file.
func At(path string) (Namespace, error) {
	id, err := Identify(path)
	if err != nil {
		return Namespace{}, err
	}
	return Namespace{Name: filepath.Base(path), Path: path, ID: id}, nil
}

// Open opens the namespace's nsfs file, for setns or for a library that
// takes a namespace descriptor (the caller closes it). An open descriptor
// keeps the namespace alive: hold it only as long as the namespace is
// watched. The path must be an nsfs file of the expected ID, checked before
// opening (a FIFO or a device there is never opened) and again on the open
// descriptor (the path may change in between); otherwise the error is
// ErrGone.
func (n Namespace) Open() (*os.File, error) {
	if n.Path == "" {
		return os.Open(ownPath)
	}
	if _, err := Identify(n.Path); err != nil {
		if errors.Is(err, ErrNotNamespace) {
			// Unmounted (`ip netns del` unmounts first), or never was.
			return nil, fmt.Errorf("%w: %w", ErrGone, err)
		}
		return nil, err
	}
	// O_NONBLOCK: should a FIFO have taken the file's place since the
	// check, opening it does not wait for a writer.
	fd, err := unix.Open(n.Path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%w: %s: %w", ErrGone, n.Path, err)
		}
		return nil, fmt.Errorf("opening namespace %s: %w", n.Path, err)
	}
	id, err := identifyFd(fd, n.Path)
	if err == nil && n.ID != (ID{}) && id != n.ID {
		err = fmt.Errorf("%w: %s is now %s, not %s", ErrGone, n.Path, id, n.ID)
	}
	if err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), n.Path), nil
}

// Identify returns the ID of the namespace file at path, following symbolic
// links (`ln -s /proc/PID/ns/net /var/run/netns/NAME` is a common way to name
// a container's namespace). It never opens the file. A path that is not an
// nsfs file (a plain or empty file, a FIFO, a directory, a link to nothing)
// gives ErrNotNamespace; a missing one ErrGone.
//
// One stat tells it all: every namespace file is on the kernel's one nsfs
// superblock, so its device is that of our own namespace's file. (A stat
// and a statfs could straddle the mount that `ip netns add` makes right
// after creating the file, and pair the empty file's inode with nsfs.)
func Identify(path string) (ID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			if unix.Lstat(path, &st) == nil {
				return ID{}, fmt.Errorf("%w: %s is a link to nothing", ErrNotNamespace, path)
			}
			return ID{}, fmt.Errorf("%w: %s: %w", ErrGone, path, err)
		}
		return ID{}, fmt.Errorf("reading %s: %w", path, err)
	}
	return idOfStat(path, &st)
}

// ErrNotNamespace means a path is not a namespace file.
var ErrNotNamespace = errors.New("not a network namespace")

// nsfsDev is the device of the nsfs superblock.
var nsfsDev = sync.OnceValues(func() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(ownPath, &st); err != nil {
		return 0, fmt.Errorf("reading own network namespace: %w", err)
	}
	return st.Dev, nil
})

func idOfStat(path string, st *unix.Stat_t) (ID, error) {
	dev, err := nsfsDev()
	if err != nil {
		return ID{}, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Dev != dev {
		// `ip netns add` creates the file first and mounts the namespace
		// on it next: a new namespace looks like this for a moment.
		return ID{}, fmt.Errorf("%w: %s is not an nsfs mount", ErrNotNamespace, path)
	}
	return ID{Dev: st.Dev, Ino: st.Ino}, nil
}

func identifyFd(fd int, path string) (ID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return ID{}, fmt.Errorf("reading namespace %s: %w", path, err)
	}
	id, err := idOfStat(path, &st)
	if errors.Is(err, ErrNotNamespace) {
		return ID{}, fmt.Errorf("%w: %w", ErrGone, err)
	}
	return id, err
}

// Do runs fn with its OS thread inside the namespace; in the exporter's own
// (Path "") it runs fn directly. Sockets fn opens stay in that namespace
// after Do returns; files fn opens under /proc/thread-self/net show that
// namespace (/proc/self/net would show the process's main thread's
// namespace instead). Entering needs CAP_SYS_ADMIN: without it the error
// wraps unix.EPERM.
//
// fn runs on a fresh goroutine locked to its thread. If switching back fails,
// the thread is left locked, so the runtime ends it with the goroutine
// instead of reusing a thread in the wrong namespace.
func (n Namespace) Do(fn func() error) error {
	if n.Path == "" {
		return fn()
	}
	target, err := n.Open()
	if err != nil {
		return err
	}
	defer func() { _ = target.Close() }()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening own namespace: %w", err)
			return
		}
		defer func() { _ = orig.Close() }()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering namespace %s: %w", n.Path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leaving namespace %s: %w", n.Path, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ReadFile reads a file inside the namespace; for a path under /proc/net it
// reads the namespace's own copy.
func (n Namespace) ReadFile(path string) ([]byte, error) {
	var data []byte
	err := n.Do(func() error {
		p := path
		if n.Path != "" {
			if rel, err := filepath.Rel("/proc/net", path); err == nil && filepath.IsLocal(rel) {
				p = filepath.Join("/proc/thread-self/net", rel)
			}
		}
		var err error
		data, err = os.ReadFile(p)
		return err
	})
	return data, err
}
