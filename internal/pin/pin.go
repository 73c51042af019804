// Package pin keeps BPF maps and links on bpffs (--bpf.pin-path), so that a
// restarted or upgraded exporter continues from the counters and programs
// the previous one left. Each loader says which of its maps hold counts;
// everything else (per-packet state, scratch space, sets the exporter
// rebuilds) is created anew by every process.
package pin

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Check reports whether dir can be the pin path: an absolute path whose
// nearest existing ancestor (the directory itself once it exists) is on a
// BPF filesystem. Only bpffs keeps a BPF object alive by a file; anywhere
// else pinning fails at the first map. Nothing is created.
func Check(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("must be an absolute path on a BPF filesystem (bpffs, e.g. /sys/fs/bpf/ipsec_exporter), got %q", dir)
	}
	dir = filepath.Clean(dir)
	for p := dir; ; p = filepath.Dir(p) {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if err == nil {
			if uint32(st.Type) != unix.BPF_FS_MAGIC {
				return fmt.Errorf("%s is not on a BPF filesystem (mount one: mount -t bpf bpf /sys/fs/bpf)", p)
			}
			if info, err := os.Stat(p); p == dir && (err != nil || !info.IsDir()) {
				return fmt.Errorf("%s is not a directory", p)
			}
			return nil
		}
		if !errors.Is(err, unix.ENOENT) || p == "/" {
			return fmt.Errorf("checking %s: %w", p, err)
		}
	}
}

// Dir is the directory of one set of pins. The zero Dir pins nothing: every
// method is then a no-op, so loaders call them unconditionally.
type Dir string

// Enabled says whether objects are pinned.
func (d Dir) Enabled() bool { return d != "" }

// Join is the subdirectory of d named by elem (each one path element).
func (d Dir) Join(elem ...string) Dir {
	if !d.Enabled() {
		return ""
	}
	return Dir(filepath.Join(append([]string{string(d)}, elem...)...))
}

// Maps pins the named maps of spec by name in d: a later load finds them
// there and shares them instead of creating new ones. The named maps are
// one set, read together (a table in several maps, its fill level in
// another): when a pinned one no longer fits its spec (the layout or size
// changed), every pinned map of the set is unpinned, and their names
// returned, so that the caller logs the reset of its counters. Pass the
// options to the collection's load.
func (d Dir) Maps(spec *ebpf.CollectionSpec, names ...string) (ebpf.MapOptions, []string, error) {
	if !d.Enabled() {
		return ebpf.MapOptions{}, nil, nil
	}
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return ebpf.MapOptions{}, nil, fmt.Errorf("creating pin directory: %w", err)
	}
	var pinned []string
	why := map[string]error{}
	for _, name := range names {
		ms := spec.Maps[name]
		if ms == nil {
			return ebpf.MapOptions{}, nil, fmt.Errorf("no map %q to pin", name)
		}
		ms.Pinning = ebpf.PinByName
		old, err := ebpf.LoadPinnedMap(filepath.Join(string(d), ms.Name), nil)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		pinned = append(pinned, name)
		if err == nil {
			err = ms.Compatible(old)
			_ = old.Close()
		}
		if err != nil { // incompatible, or not a map at all
			why[name] = err
		}
	}
	if len(why) == 0 {
		return ebpf.MapOptions{PinPath: string(d)}, nil, nil
	}
	// The counters cannot continue: none of the set's maps can.
	var reset []string
	for _, name := range pinned {
		path := filepath.Join(string(d), spec.Maps[name].Name)
		if err := os.Remove(path); err != nil {
			return ebpf.MapOptions{}, nil, fmt.Errorf("unpinning %s: %w", path, err)
		}
		if err := why[name]; err != nil {
			reset = append(reset, fmt.Sprintf("%s (%v)", name, err))
		} else {
			reset = append(reset, name+" (with the others)")
		}
	}
	return ebpf.MapOptions{PinPath: string(d)}, reset, nil
}

// Link returns the link pinned as name, or nil when there is none.
func (d Dir) Link(name string) (link.Link, error) {
	if !d.Enabled() {
		return nil, nil
	}
	l, err := link.LoadPinnedLink(filepath.Join(string(d), name), nil)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading pinned link %s: %w", name, err)
	}
	return l, nil
}

// PinLink pins l as name, in place of the link pinned there before: that
// one is detached once no process holds it (a previous exporter that still
// runs keeps it until it exits).
func (d Dir) PinLink(name string, l link.Link) error {
	if !d.Enabled() {
		return nil
	}
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return fmt.Errorf("creating pin directory: %w", err)
	}
	path := filepath.Join(string(d), name)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unpinning the previous link %s: %w", name, err)
	}
	if err := l.Pin(path); err != nil {
		return fmt.Errorf("pinning link %s: %w", name, err)
	}
	return nil
}

// Remove unpins name: a link detaches and a map is freed once no process
// or program holds it.
func (d Dir) Remove(name string) error {
	if !d.Enabled() {
		return nil
	}
	if err := os.Remove(filepath.Join(string(d), name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// RemoveAll unpins everything in d, and d.
func (d Dir) RemoveAll() error {
	if !d.Enabled() {
		return nil
	}
	return os.RemoveAll(string(d))
}

// Prune unpins every entry of d (pins and subdirectories) whose name is not
// in keep, and returns the names it removed.
func (d Dir) Prune(keep []string) ([]string, error) {
	if !d.Enabled() {
		return nil, nil
	}
	entries, err := os.ReadDir(string(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		if slices.Contains(keep, e.Name()) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(string(d), e.Name())); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}
