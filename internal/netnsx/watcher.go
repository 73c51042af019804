package netnsx

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Watcher keeps the list of namespaces to read (the exporter's own and the
// named ones in a directory) and tells subscribers as they appear and go,
// so a namespace can be followed from the moment it appears rather than from
// the first scrape that lists it.
//
// It rescans the directory when the kernel says something may have changed:
// inotify on the directory (files created, deleted, renamed) and a poll of
// /proc/self/mountinfo, which wakes on every mount and unmount of the
// exporter's mount namespace (`ip netns add` creates the file, then mounts
// the namespace on it; `ip netns del` unmounts, then deletes). Refresh
// rescans on demand (a scrape calls it), so the list is right even where
// neither works (a directory that does not exist yet, a symbolic link to
// /proc/PID/ns/net whose process ended).
//
// Entries that are not namespaces (plain or empty files that CNI plugins and
// containerd leave, FIFOs, directories) are skipped and counted, and never
// opened; a namespace the exporter may not enter (no CAP_SYS_ADMIN) is
// logged once, skipped and counted, never handed to a reader.
type Watcher struct {
	cfg    Config
	logger *slog.Logger
	own    Namespace

	scanMu sync.Mutex    // one scan at a time: subscribers see changes in order
	scans  atomic.Uint64 // scans started, for Refresh's coalescing
	subs   map[int]func(Change)
	nextID int
	denied map[ID]bool // namespaces we may not enter (logged once each)
	warned bool        // the first denied namespace was logged at warning level

	mu    sync.Mutex // guards the results of the last scan
	cur   []Namespace
	stats Stats

	inotify  int // -1 without; the directory watch is added when it exists
	watchDir int // inotify watch descriptor of cfg.Dir, -1 when none
	mounts   int // /proc/self/mountinfo, -1 without
	wake     int // eventfd that ends the watch loop
	done     chan struct{}
}

// Config selects the namespaces a Watcher follows.
type Config struct {
	// Dir holds the named namespaces; "" means only the exporter's own.
	// A directory that does not exist yet is not an error.
	Dir string
	// Names, when not empty, selects only these names from Dir.
	Names  []string
	Logger *slog.Logger
}

// Change is what a rescan found. Removed come first: a name deleted and
// created again is one Removed and one Added with another ID.
type Change struct {
	Removed []Namespace
	Added   []Namespace
	// Fresh is set when Added appeared while the watcher ran, so they
	// started empty: all their SAs and policies were added since. It is
	// false for those there at start-up and for a subscriber's first call.
	Fresh bool
}

// Skip reasons: why an entry of the directory is not read.
const (
	SkipNotNamespace = "not_namespace" // not an nsfs mount: plain, empty, FIFO, directory, dangling link
	SkipPermission   = "permission"    // the exporter may not enter it (CAP_SYS_ADMIN)
	SkipDuplicate    = "duplicate"     // another name of a namespace already read
	SkipError        = "error"         // could not be examined (the error is logged at debug)
)

// SkipReasons lists every reason, so each can be reported from the start.
var SkipReasons = []string{SkipNotNamespace, SkipPermission, SkipDuplicate, SkipError}

// Stats describes the last scan and the changes since start.
type Stats struct {
	Namespaces int            // read now, the exporter's own included
	Skipped    map[string]int // entries of the directory not read now, by reason
	Appeared   uint64         // namespaces that appeared after start
	Vanished   uint64         // namespaces that went away
	// Following is false when directory changes cannot be followed as
	// they happen (no inotify or mountinfo poll): they are then seen at
	// the next Refresh only.
	Following bool
}

// NewWatcher scans once and starts following cfg.Dir. It fails only when
// the exporter's own namespace cannot be read.
func NewWatcher(cfg Config) (*Watcher, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	own, err := Own()
	if err != nil {
		return nil, err
	}
	w := &Watcher{
		cfg: cfg, logger: cfg.Logger, own: own,
		subs: map[int]func(Change){}, denied: map[ID]bool{},
		inotify: -1, watchDir: -1, mounts: -1, wake: -1,
		done: make(chan struct{}),
	}
	following := false
	if cfg.Dir != "" {
		following = w.openWatches()
	}
	w.scan(false)
	w.mu.Lock()
	w.stats.Following = following || cfg.Dir == ""
	w.mu.Unlock()
	if following {
		go w.loop()
	} else {
		close(w.done)
	}
	return w, nil
}

// Namespaces returns the namespaces to read now: the exporter's own first,
// then the named ones by name.
func (w *Watcher) Namespaces() []Namespace {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.cur)
}

// Stats returns the state of the last scan.
func (w *Watcher) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.Skipped = make(map[string]int, len(w.stats.Skipped))
	for k, v := range w.stats.Skipped {
		s.Skipped[k] = v
	}
	return s
}

// Refresh rescans the directory now, unless a scan that started after this
// call has completed meanwhile (concurrent callers share one scan).
// Subscribers are called before it returns. It must not be called from a
// subscriber.
func (w *Watcher) Refresh() {
	before := w.scans.Load()
	w.scanMu.Lock()
	defer w.scanMu.Unlock()
	if w.scans.Load() > before {
		return
	}
	w.scanLocked(true)
}

// Subscribe calls fn with every change from now on; the first call, before
// Subscribe returns, has every namespace watched now as Added. Calls are
// made one at a time, in order, from whichever goroutine scans: fn should
// return quickly (start slow work elsewhere) and must not call Refresh,
// Subscribe or the returned cancel. After cancel returns, fn is not called
// again.
func (w *Watcher) Subscribe(fn func(Change)) (cancel func()) {
	w.scanMu.Lock()
	defer w.scanMu.Unlock()
	id := w.nextID
	w.nextID++
	w.subs[id] = fn
	fn(Change{Added: w.Namespaces()})
	return func() {
		w.scanMu.Lock()
		defer w.scanMu.Unlock()
		delete(w.subs, id)
	}
}

// Close stops following the directory.
func (w *Watcher) Close() error {
	if w.wake >= 0 {
		var one [8]byte
		one[0] = 1
		_, _ = unix.Write(w.wake, one[:])
	}
	<-w.done
	for _, fd := range []int{w.inotify, w.mounts, w.wake} {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
	}
	w.inotify, w.mounts, w.wake = -1, -1, -1
	return nil
}

func (w *Watcher) scan(fresh bool) {
	w.scanMu.Lock()
	defer w.scanMu.Unlock()
	w.scanLocked(fresh)
}

// entry is one file of the directory as a scan found it.
type entry struct {
	ns     Namespace
	reason string // "" when it is a namespace to read
}

func (w *Watcher) scanLocked(fresh bool) {
	w.scans.Add(1)
	if w.inotify >= 0 && w.watchDir < 0 {
		w.addDirWatch() // the directory may exist by now
	}
	entries := w.list()
	seen := map[ID]bool{w.own.ID: true}
	next := []Namespace{w.own}
	skipped := map[string]int{}
	for _, e := range entries {
		if e.reason == "" && seen[e.ns.ID] {
			e.reason = SkipDuplicate
		}
		if e.reason == "" && !w.enterable(e.ns) {
			e.reason = SkipPermission
		}
		if e.reason != "" {
			skipped[e.reason]++
			continue
		}
		seen[e.ns.ID] = true
		next = append(next, e.ns)
	}
	for id := range w.denied {
		if !slices.ContainsFunc(entries, func(e entry) bool { return e.ns.ID == id }) {
			delete(w.denied, id) // gone: if it comes back, it is logged again
		}
	}

	w.mu.Lock()
	prev := w.cur
	w.cur = next
	ch := Change{Fresh: fresh}
	for _, n := range prev {
		if !slices.Contains(next, n) {
			ch.Removed = append(ch.Removed, n)
		}
	}
	for _, n := range next {
		if !slices.Contains(prev, n) {
			ch.Added = append(ch.Added, n)
		}
	}
	if prev != nil {
		// Counted by ID: a namespace read under another of its names (a scan
		// that ran while the first name was still being mounted) is the same
		// namespace under a new label, neither gone nor new.
		w.stats.Appeared += uint64(countNotIn(ch.Added, prev))
		w.stats.Vanished += uint64(countNotIn(ch.Removed, next))
	}
	w.stats.Namespaces = len(next)
	w.stats.Skipped = skipped
	w.mu.Unlock()

	if len(ch.Added) == 0 && len(ch.Removed) == 0 {
		return
	}
	for _, n := range ch.Removed {
		w.logger.Debug("network namespace gone", "netns", n.Name, "id", n.ID.String())
	}
	for _, n := range ch.Added {
		w.logger.Debug("network namespace found", "netns", n.Name, "id", n.ID.String(), "fresh", fresh)
	}
	ids := make([]int, 0, len(w.subs))
	for id := range w.subs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		w.subs[id](ch)
	}
}

// countNotIn counts the namespaces of ns whose ID is not in other.
func countNotIn(ns, other []Namespace) int {
	n := 0
	for _, x := range ns {
		if !slices.ContainsFunc(other, func(o Namespace) bool { return o.ID == x.ID }) {
			n++
		}
	}
	return n
}

// list examines the directory's entries (the selected ones), sorted by
// name. It opens none of them.
func (w *Watcher) list() []entry {
	if w.cfg.Dir == "" {
		return nil
	}
	dirents, err := os.ReadDir(w.cfg.Dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			w.logger.Warn("listing network namespaces", "dir", w.cfg.Dir, "err", err)
		}
		return nil
	}
	var entries []entry
	for _, d := range dirents {
		name := d.Name()
		if len(w.cfg.Names) > 0 && !slices.Contains(w.cfg.Names, name) {
			continue
		}
		path := filepath.Join(w.cfg.Dir, name)
		id, err := Identify(path)
		e := entry{ns: Namespace{Name: name, Path: path, ID: id}}
		switch {
		case err == nil:
		case errors.Is(err, ErrGone):
			continue // deleted since the listing
		case errors.Is(err, ErrNotNamespace):
			e.reason = SkipNotNamespace
		default:
			w.logger.Debug("cannot examine a network namespace file", "path", path, "err", err)
			e.reason = SkipError
		}
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b entry) int { return cmp.Compare(a.ns.Name, b.ns.Name) })
	return entries
}

// enterable tries a namespace not read yet once: entering one needs
// CAP_SYS_ADMIN, which the documented deployment does not grant. The
// answer is kept while the namespace exists.
func (w *Watcher) enterable(n Namespace) bool {
	if w.denied[n.ID] {
		return false
	}
	w.mu.Lock()
	known := slices.Contains(w.cur, n)
	w.mu.Unlock()
	if known {
		return true
	}
	err := n.Do(func() error { return nil })
	if err == nil || !errors.Is(err, unix.EPERM) {
		// Gone since the listing: the next scan drops it. Anything
		// else shows when a reader enters it.
		return true
	}
	w.denied[n.ID] = true
	if !w.warned {
		w.warned = true
		w.logger.Warn("cannot enter a network namespace (entering one needs CAP_SYS_ADMIN): skipped, and so is every other one the exporter may not enter (ipsec_netns_skipped{reason=\"permission\"} counts them)",
			"netns", n.Name, "err", err)
	} else {
		w.logger.Debug("cannot enter a network namespace: skipped", "netns", n.Name, "err", err)
	}
	return false
}

// openWatches sets up inotify on the directory (added later if it does not
// exist yet) and the mountinfo poll; it reports whether changes can be
// followed at all.
func (w *Watcher) openWatches() bool {
	var err error
	if w.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		w.logger.Warn("cannot follow network namespaces as they come and go; they are looked for at each scrape", "err", err)
		w.wake = -1
		return false
	}
	if w.inotify, err = unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK); err != nil {
		w.logger.Debug("no inotify: namespace files are looked for on mounts and at each scrape", "err", err)
		w.inotify = -1
	} else {
		w.addDirWatch()
	}
	if w.mounts, err = unix.Open("/proc/self/mountinfo", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		w.logger.Debug("no mount table to poll: namespaces are looked for on directory changes and at each scrape", "err", err)
		w.mounts = -1
	}
	if w.inotify < 0 && w.mounts < 0 {
		_ = unix.Close(w.wake)
		w.wake = -1
		w.logger.Warn("cannot follow network namespaces as they come and go; they are looked for at each scrape")
		return false
	}
	return true
}

// dirEvents are the inotify events after which the directory is rescanned.
const dirEvents = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

func (w *Watcher) addDirWatch() {
	wd, err := unix.InotifyAddWatch(w.inotify, w.cfg.Dir, dirEvents)
	if err != nil {
		return // not there yet: tried again at every scan
	}
	w.watchDir = wd
}

// loop rescans whenever the directory or the mount table changes, until
// Close.
func (w *Watcher) loop() {
	defer close(w.done)
	fds := []unix.PollFd{{Fd: int32(w.wake), Events: unix.POLLIN}}
	if w.mounts >= 0 {
		// mountinfo is always readable; a change of the mount table
		// shows as POLLPRI (and POLLERR), once per change.
		fds = append(fds, unix.PollFd{Fd: int32(w.mounts), Events: unix.POLLPRI})
	}
	if w.inotify >= 0 {
		fds = append(fds, unix.PollFd{Fd: int32(w.inotify), Events: unix.POLLIN})
	}
	buf := make([]byte, 16<<10)
	for {
		for i := range fds {
			fds[i].Revents = 0
		}
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			w.logger.Warn("following network namespaces stopped; they are looked for at each scrape", "err", err)
			w.mu.Lock()
			w.stats.Following = false
			w.mu.Unlock()
			return
		}
		if fds[0].Revents != 0 {
			return
		}
		if w.inotify >= 0 {
			w.drainInotify(buf)
		}
		w.Refresh()
	}
}

// drainInotify reads every queued inotify event; their content does not
// matter (a rescan follows), except that the directory's watch is gone when
// the directory itself is.
func (w *Watcher) drainInotify(buf []byte) {
	for {
		n, err := unix.Read(w.inotify, buf)
		if n <= 0 || err != nil {
			return
		}
		// struct inotify_event: s32 wd, u32 mask, u32 cookie, u32 len,
		// then len bytes of name.
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			wd := int(int32(binary.NativeEndian.Uint32(buf[off:])))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			if mask&unix.IN_IGNORED != 0 {
				w.scanMu.Lock()
				if wd == w.watchDir {
					w.watchDir = -1 // removed with the directory: added again when it is back
				}
				w.scanMu.Unlock()
			}
			off += unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(buf[off+12:]))
		}
	}
}

func (n Namespace) String() string {
	if n.Path == "" {
		return fmt.Sprintf("own network namespace (%s)", n.ID)
	}
	return fmt.Sprintf("network namespace %q (%s)", n.Name, n.ID)
}
