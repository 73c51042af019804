// Package peers keeps the node's known IPsec peers, per watched network
// namespace: the remote addresses of the namespace's SAs and policies (read
// with internal/xfrmnl, which never decodes a key), remembered for a while
// after the last of them goes, and the addresses that are always known (the
// peer-names file, an IKE daemon's configured connections).
//
// A peer must stay known after its tunnel dies: when dead peer detection
// clears a peer, the daemon removes its SAs and policies, and the traffic to
// it then leaves in plaintext. That is the very moment the wire program's
// unprotected-traffic counter exists for, so a peer whose SAs and policies
// are gone stays known for Config.ForgetAfter.
//
// Subscribers (the wire program's peer map, the verdict programs'
// known-peer map) receive the whole current set on every change, coalesced.
package peers

import (
	"errors"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
)

// Config configures a Tracker.
type Config struct {
	// ForgetAfter is how long a peer stays known after its last SA and
	// policy are gone; 0 forgets it at once.
	ForgetAfter time.Duration
	// NamesFile is the peer-names file ("" for none): its addresses are
	// always known, its names are Names().
	NamesFile string
	// Coalesce is how long changes are gathered before subscribers hear
	// of them (default 100 ms): a burst of SA events is one update.
	Coalesce time.Duration
	// NamesCheck is how often the peer-names file is checked for changes
	// between calls of Names (default 10 s).
	NamesCheck time.Duration
	Logger     *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Peer is one known peer of a namespace.
type Peer struct {
	Addr netip.Addr
	// GoneSince is when the namespace's last SA and policy naming the
	// peer went: the peer is remembered until GoneSince + ForgetAfter.
	// Zero while it has some, or when it is only configured.
	GoneSince time.Time
	// Configured: the peer-names file or a configured source (an IKE
	// daemon's connections) names it, so it is known for as long as they
	// do.
	Configured bool
}

// Remembered tells whether the peer is known only because it had SAs or
// policies a short while ago.
func (p Peer) Remembered() bool { return !p.GoneSince.IsZero() && !p.Configured }

// Set is every known peer, by namespace label ("" for the exporter's own),
// each namespace's peers sorted by address.
type Set struct {
	Netns map[string][]Peer
}

// All is the union of every namespace's peers, sorted: what a program that
// sees every namespace at once (the verdict programs) needs.
func (s Set) All() []netip.Addr {
	seen := map[netip.Addr]bool{}
	for _, ps := range s.Netns {
		for _, p := range ps {
			seen[p.Addr] = true
		}
	}
	return slices.SortedFunc(maps.Keys(seen), netip.Addr.Compare)
}

// Tracker keeps the known peers. It is safe for concurrent use.
type Tracker struct {
	cfg    Config
	logger *slog.Logger

	mu         sync.Mutex
	namespaces map[string]*namespace   // by label
	configured map[string][]netip.Addr // by source
	names      map[netip.Addr]string   // from NamesFile
	namesVer   namesVersion            // of the names file as last read
	namesBad   namesVersion            // a version that did not parse (logged once)
	published  map[string][]Peer       // the last set handed to subscribers
	subs       map[int]func(Set)       // by subscription number
	nextSub    int

	pubMu sync.Mutex // serialises publications, so subscribers see sets in order
	// dirty holds the labels of namespaces whose followers reported a
	// change; its own lock, since followers report while the tracker may
	// hold mu to stop them.
	dirtyMu sync.Mutex
	dirty   map[string]bool
	kick    chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
}

// namespace is one watched namespace.
type namespace struct {
	ns       netnsx.Namespace
	follower *follower // nil while it cannot be followed
	warned   bool      // the failure to follow it was logged
	watched  bool      // in the last Watch; an unwatched one stays until its peers are forgotten
	current  map[netip.Addr]bool
	gone     map[netip.Addr]time.Time
	local    map[netip.Addr]bool
}

// namesFileSource is the configured source of the peer-names file.
const namesFileSource = "peer-names file"

// New starts a tracker. A peer-names file that cannot be read is an
// error; later changes that do not parse are logged and the last good
// names kept.
func New(cfg Config) (*Tracker, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Coalesce <= 0 {
		cfg.Coalesce = 100 * time.Millisecond
	}
	if cfg.NamesCheck <= 0 {
		cfg.NamesCheck = 10 * time.Second
	}
	t := &Tracker{
		cfg: cfg, logger: cfg.Logger,
		namespaces: map[string]*namespace{},
		configured: map[string][]netip.Addr{},
		subs:       map[int]func(Set){},
		dirty:      map[string]bool{},
		kick:       make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	if cfg.NamesFile != "" {
		names, v, err := readNames(cfg.NamesFile)
		if err != nil {
			return nil, err
		}
		t.setNames(names, v)
	}
	t.wg.Add(1)
	go t.run()
	return t, nil
}

// Close stops following every namespace.
func (t *Tracker) Close() {
	select {
	case <-t.done:
		return
	default:
	}
	close(t.done)
	t.wg.Wait()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ns := range t.namespaces {
		if ns.follower != nil {
			ns.follower.Close()
			ns.follower = nil
		}
	}
}

// Watch makes the tracker follow exactly these namespaces (as listed now:
// call it again when they change). A namespace recreated under the same
// name (another ID) is followed anew; the peers of one that is no longer
// watched are remembered like peers whose SAs went.
func (t *Tracker) Watch(namespaces []netnsx.Namespace) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Now()
	for _, ns := range t.namespaces {
		ns.watched = false
	}
	for _, n := range namespaces {
		ns := t.namespaces[n.Name]
		if ns == nil {
			ns = &namespace{gone: map[netip.Addr]time.Time{}}
			t.namespaces[n.Name] = ns
		}
		ns.watched = true
		if ns.follower != nil && ns.ns == n {
			continue
		}
		if ns.follower != nil {
			t.logger.Info("namespace recreated; following the new one", "netns", n.Name)
			t.stopLocked(ns, now)
		}
		ns.ns = n
		name := n.Name
		f, err := startFollower(n, t.logger, func() { t.changed(name) })
		if err != nil {
			if !ns.warned && !errors.Is(err, netnsx.ErrGone) {
				t.logger.Warn("cannot follow the SAs and policies of a namespace; its peers are not known (retried when namespaces change)",
					"netns", n.Name, "err", err)
				ns.warned = true
			}
			continue
		}
		ns.follower, ns.warned = f, false
	}
	for _, ns := range t.namespaces {
		if !ns.watched && ns.follower != nil {
			t.stopLocked(ns, now)
		}
	}
	t.poke()
}

// stopLocked stops following ns; what it knew is remembered from now.
func (t *Tracker) stopLocked(ns *namespace, now time.Time) {
	t.pullLocked(ns, now)
	ns.follower.Close()
	ns.follower = nil
	for a := range ns.current {
		ns.gone[a] = now
	}
	ns.current = nil
}

// changed is called by a follower when its addresses changed. It only
// marks the namespace: the follower may be reporting from inside Watch.
func (t *Tracker) changed(label string) {
	t.dirtyMu.Lock()
	t.dirty[label] = true
	t.dirtyMu.Unlock()
	t.poke()
}

// pullDirtyLocked takes the addresses of every namespace that reported a
// change.
func (t *Tracker) pullDirtyLocked(now time.Time) {
	t.dirtyMu.Lock()
	labels := t.dirty
	t.dirty = map[string]bool{}
	t.dirtyMu.Unlock()
	for label := range labels {
		if ns := t.namespaces[label]; ns != nil {
			t.pullLocked(ns, now)
		}
	}
}

// pullLocked takes a namespace's new addresses from its follower: those
// that went are remembered from now, those that came (back) are current.
func (t *Tracker) pullLocked(ns *namespace, now time.Time) {
	if ns.follower == nil {
		return
	}
	remote, local := ns.follower.snapshot()
	for a := range ns.current {
		if !remote[a] {
			ns.gone[a] = now
		}
	}
	for a := range remote {
		delete(ns.gone, a)
	}
	ns.current, ns.local = remote, local
}

// SetConfigured replaces the always-known peers of one source (for
// example "strongswan": the remote addresses of an IKE daemon's configured
// connections). They are known in every watched namespace until the source
// sets them otherwise; an empty list removes the source.
func (t *Tracker) SetConfigured(source string, addrs []netip.Addr) {
	t.mu.Lock()
	if len(addrs) == 0 {
		delete(t.configured, source)
	} else {
		out := make([]netip.Addr, 0, len(addrs))
		for _, a := range addrs {
			out = append(out, a.Unmap())
		}
		t.configured[source] = out
	}
	t.mu.Unlock()
	t.poke()
}

// Names returns the peer-names file's names (nil without a file),
// re-reading the file first if it changed.
func (t *Tracker) Names() map[netip.Addr]string {
	t.checkNames()
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.names
}

// checkNames re-reads the peer-names file when its version changed. A file
// that no longer reads keeps the last good names, logged once per version.
func (t *Tracker) checkNames() {
	if t.cfg.NamesFile == "" {
		return
	}
	v, err := statNames(t.cfg.NamesFile)
	t.mu.Lock()
	unchanged := err == nil && (v == t.namesVer || v == t.namesBad)
	t.mu.Unlock()
	if unchanged {
		return
	}
	names, v, err := readNames(t.cfg.NamesFile)
	if err != nil {
		t.mu.Lock()
		logged := v == t.namesBad && v != (namesVersion{})
		t.namesBad = v
		t.mu.Unlock()
		if !logged {
			t.logger.Error("peer-names file changed but cannot be used; keeping the previous names", "file", t.cfg.NamesFile, "err", err)
		}
		return
	}
	t.setNames(names, v)
	t.logger.Info("peer names reloaded", "file", t.cfg.NamesFile, "peers", len(names))
	t.poke()
}

func (t *Tracker) setNames(names map[netip.Addr]string, v namesVersion) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.names, t.namesVer, t.namesBad = names, v, namesVersion{}
	addrs := slices.Collect(maps.Keys(names))
	if len(addrs) == 0 {
		delete(t.configured, namesFileSource)
	} else {
		t.configured[namesFileSource] = addrs
	}
}

// Subscribe calls fn with the current set, and again after every change
// until the returned cancel is called. Calls come one at a time, in order,
// from the tracker's goroutine (the first from the caller's); fn must not
// block for long or call back into the tracker's Subscribe.
func (t *Tracker) Subscribe(fn func(Set)) (cancel func()) {
	t.pubMu.Lock()
	defer t.pubMu.Unlock()
	t.mu.Lock()
	id := t.nextSub
	t.nextSub++
	t.subs[id] = fn
	now := t.cfg.Now()
	t.pullDirtyLocked(now)
	set := t.setLocked(now)
	t.mu.Unlock()
	fn(set)
	return func() {
		t.mu.Lock()
		delete(t.subs, id)
		t.mu.Unlock()
	}
}

// Current returns the set as it is now.
func (t *Tracker) Current() Set {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Now()
	t.pullDirtyLocked(now)
	return t.setLocked(now)
}

func (t *Tracker) poke() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// run publishes changes, coalesced, forgets remembered peers when their
// time is up, and checks the peer-names file now and then.
func (t *Tracker) run() {
	defer t.wg.Done()
	names := time.NewTicker(t.cfg.NamesCheck)
	defer names.Stop()
	forget := time.NewTimer(time.Hour)
	defer forget.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-names.C:
			t.checkNames()
			continue
		case <-forget.C:
		case <-t.kick:
			select {
			case <-time.After(t.cfg.Coalesce):
			case <-t.done:
				return
			}
			// Kicks during the wait are covered by this publication.
			select {
			case <-t.kick:
			default:
			}
		}
		next := t.publish()
		forget.Reset(next)
	}
}

// publish hands the set to the subscribers if it changed, and returns how
// long until the next remembered peer is to be forgotten.
func (t *Tracker) publish() time.Duration {
	t.pubMu.Lock()
	defer t.pubMu.Unlock()
	t.mu.Lock()
	now := t.cfg.Now()
	t.pullDirtyLocked(now)
	next := t.forgetLocked(now)
	set := t.setLocked(now)
	same := equalSets(set.Netns, t.published)
	t.published = set.Netns
	subs := slices.Collect(maps.Values(t.subs))
	t.mu.Unlock()
	if !same {
		for _, fn := range subs {
			fn(set)
		}
	}
	return next
}

// forgetLocked drops the remembered peers whose time is up, and the
// namespaces no longer watched once nothing of them is left; it returns
// the time until the next one is due (an hour when none is).
func (t *Tracker) forgetLocked(now time.Time) time.Duration {
	next := time.Hour
	for label, ns := range t.namespaces {
		for a, since := range ns.gone {
			left := since.Add(t.cfg.ForgetAfter).Sub(now)
			if left <= 0 {
				delete(ns.gone, a)
				continue
			}
			next = min(next, left)
		}
		if !ns.watched && ns.follower == nil && len(ns.gone) == 0 {
			delete(t.namespaces, label)
		}
	}
	return next
}

// setLocked builds the set: per namespace, its current and remembered
// addresses and every configured one, except its own addresses.
func (t *Tracker) setLocked(now time.Time) Set {
	configured := map[netip.Addr]bool{}
	for _, addrs := range t.configured {
		for _, a := range addrs {
			configured[a] = true
		}
	}
	set := Set{Netns: make(map[string][]Peer, len(t.namespaces))}
	for label, ns := range t.namespaces {
		if !ns.watched && len(ns.gone) == 0 {
			continue
		}
		byAddr := map[netip.Addr]Peer{}
		for a := range ns.current {
			byAddr[a] = Peer{Addr: a}
		}
		for a, since := range ns.gone {
			if since.Add(t.cfg.ForgetAfter).After(now) {
				byAddr[a] = Peer{Addr: a, GoneSince: since}
			}
		}
		if ns.watched {
			for a := range configured {
				p := byAddr[a]
				p.Addr, p.Configured = a, true
				byAddr[a] = p
			}
		}
		peers := make([]Peer, 0, len(byAddr))
		for a, p := range byAddr {
			if !ns.local[a] {
				peers = append(peers, p)
			}
		}
		slices.SortFunc(peers, func(x, y Peer) int { return x.Addr.Compare(y.Addr) })
		set.Netns[label] = peers
	}
	return set
}

func equalSets(a, b map[string][]Peer) bool {
	if len(a) != len(b) {
		return false
	}
	for label, pa := range a {
		pb, ok := b[label]
		if !ok || !slices.Equal(pa, pb) {
			return false
		}
	}
	return true
}
