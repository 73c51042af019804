// Package netnsx finds the network namespaces the exporter watches and runs
// code inside one of them.
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
	"sort"

	"golang.org/x/sys/unix"
)

// Target is one namespace to read.
type Target struct {
	Name string // "" for the exporter's own namespace
	Path string // "" for the exporter's own namespace
}

// List returns the exporter's own namespace followed by the named ones found
// in dir, sorted. When only is not empty, just those names are taken from
// dir; a listed name that is absent is skipped (namespaces come and go). An
// empty dir means "only our own namespace"; a missing dir is not an error.
func List(dir string, only []string) ([]Target, error) {
	targets := []Target{{}}
	if dir == "" {
		return targets, nil
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return targets, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	wanted := map[string]bool{}
	for _, name := range only {
		wanted[name] = true
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() || (len(wanted) > 0 && !wanted[e.Name()]) {
			continue
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, name := range names {
		targets = append(targets, Target{Name: name, Path: filepath.Join(dir, name)})
	}
	return targets, nil
}

// Do runs fn with its OS thread inside the namespace at path; a path of ""
// runs fn directly, in our own namespace. Sockets fn opens stay in that
// namespace after Do returns; files fn opens under /proc/thread-self/net
// show that namespace (/proc/self/net would show the process's main thread's
// namespace instead).
//
// fn runs on a fresh goroutine locked to its thread. If switching back fails,
// the thread is left locked, so the runtime ends it with the goroutine
// instead of reusing a thread in the wrong namespace.
func Do(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
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
		target, err := os.Open(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening namespace: %w", err)
			return
		}
		defer func() { _ = target.Close() }()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering namespace %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leaving namespace %s: %w", path, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ReadFile reads a file inside the namespace; for a path under /proc/net it
// reads the namespace's own copy.
func ReadFile(t Target, path string) ([]byte, error) {
	var data []byte
	err := Do(t.Path, func() error {
		p := path
		if t.Path != "" {
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

// ErrNotNamespace marks a path that is not a namespace file (a plain or
// empty file that CNI plugins leave in the directory, a FIFO).
var ErrNotNamespace = errors.New("not a network namespace")

// nsfsMagic is NSFS_MAGIC (include/uapi/linux/magic.h).
const nsfsMagic = 0x6e736673

// Inode identifies the namespace of t: the inode of its nsfs file, which
// changes when a namespace is deleted and another created under the same
// name. It neither opens nor reads the file, so a FIFO cannot block it.
func Inode(t Target) (uint64, error) {
	path := t.Path
	if path == "" {
		path = "/proc/self/ns/net"
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return 0, err
	}
	if fs.Type != nsfsMagic {
		return 0, fmt.Errorf("%s: %w", path, ErrNotNamespace)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}
