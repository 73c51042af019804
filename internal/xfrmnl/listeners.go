package xfrmnl

import (
	"errors"
	"log/slog"
	"sync"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
)

// Listeners keeps one Listener per namespace a netnsx.Watcher watches,
// keyed by the namespace itself: started the moment the watcher sees the
// namespace (a namespace that appeared while watched has everything found
// in it counted as added, for it started empty), closed when it goes, so
// the listener's socket does not keep a deleted namespace alive. A name
// deleted and created again gets a new listener for the new namespace.
type Listeners struct {
	opts   ListenOptions
	cancel func()
	wg     sync.WaitGroup

	mu        sync.Mutex
	byID      map[netnsx.ID]*followed
	ended     []Ended
	observers []Observer
	closed    bool
}

type followed struct {
	ns   netnsx.Namespace
	l    *Listener
	err  error // why it did not start
	gone bool  // the namespace went while the listener was starting
}

// Ended is a listener closed because its namespace went, with its counts
// at the end.
type Ended struct {
	Namespace netnsx.Namespace
	Counts    Counts
}

// maxEnded bounds the ended listeners kept until TakeEnded.
const maxEnded = 4096

// Follow starts a listener for every namespace w watches now, before it
// returns, and for every one that appears later, at once. opts apply to
// each (CountExisting is set for those that appear later).
func Follow(w *netnsx.Watcher, opts ListenOptions) *Listeners {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ls := &Listeners{opts: opts, byID: map[netnsx.ID]*followed{}}
	ls.cancel = w.Subscribe(ls.changed)
	return ls
}

// changed runs in the watcher's scan. Listeners for namespaces there at
// start-up are started in it, so the first scrape has them; those that
// appear later start on their own goroutine, so a big first dump does not
// hold up the watcher.
func (ls *Listeners) changed(c netnsx.Change) {
	for _, ns := range c.Removed {
		ls.remove(ns)
	}
	for _, ns := range c.Added {
		ls.mu.Lock()
		if ls.closed {
			ls.mu.Unlock()
			return
		}
		f := &followed{ns: ns}
		ls.byID[ns.ID] = f
		ls.wg.Add(1)
		ls.mu.Unlock()
		if c.Fresh {
			go ls.start(f, true)
		} else {
			ls.start(f, false)
		}
	}
}

func (ls *Listeners) start(f *followed, fresh bool) {
	defer ls.wg.Done()
	opts := ls.opts
	opts.CountExisting = fresh
	l, err := Listen(f.ns, opts)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if f.gone || ls.closed {
		if l != nil {
			_ = l.Close()
		}
		return
	}
	f.l, f.err = l, err
	if l != nil {
		for _, o := range ls.observers {
			l.Observe(o)
		}
	}
	if err != nil && !errors.Is(err, netnsx.ErrGone) {
		ls.opts.Logger.Warn("no xfrm event listener for a namespace: its events are not counted", "netns", f.ns.Name, "err", err)
	}
}

func (ls *Listeners) remove(ns netnsx.Namespace) {
	ls.mu.Lock()
	f := ls.byID[ns.ID]
	if f == nil || f.ns != ns {
		ls.mu.Unlock()
		return
	}
	delete(ls.byID, ns.ID)
	f.gone = true
	l := f.l
	ls.mu.Unlock()
	if l == nil {
		return // still starting: start closes it
	}
	_ = l.Close()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if len(ls.ended) == maxEnded {
		ls.ended = append(ls.ended[:0], ls.ended[1:]...)
	}
	ls.ended = append(ls.ended, Ended{Namespace: ns, Counts: l.Counts()})
}

// Get returns the listener of a namespace: nil while it starts, or with the
// error that stopped it from starting.
func (ls *Listeners) Get(id netnsx.ID) (*Listener, error) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	f := ls.byID[id]
	if f == nil {
		return nil, nil
	}
	return f.l, f.err
}

// TakeEnded returns the listeners closed because their namespace went
// since the last call, oldest first, and forgets them: whoever reports
// counts per namespace name keeps them, so a name's counts do not fall when
// its namespace is deleted and created again, and the last events of a
// namespace torn down between two scrapes are still reported.
func (ls *Listeners) TakeEnded() []Ended {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	e := ls.ended
	ls.ended = nil
	return e
}

// Observe makes o follow every namespace, those that appear later too (see
// Observer); cancel stops it.
func (ls *Listeners) Observe(o Observer) (cancel func()) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.observers = append(ls.observers, o)
	for _, f := range ls.byID {
		if f.l != nil {
			f.l.Observe(o)
		}
	}
	return func() {
		ls.mu.Lock()
		defer ls.mu.Unlock()
		for i, x := range ls.observers {
			if x == o {
				ls.observers = append(ls.observers[:i], ls.observers[i+1:]...)
				break
			}
		}
		for _, f := range ls.byID {
			if f.l != nil {
				f.l.Unobserve(o)
			}
		}
	}
}

// Close stops following and closes every listener.
func (ls *Listeners) Close() error {
	ls.cancel()
	ls.mu.Lock()
	ls.closed = true
	var open []*Listener
	for _, f := range ls.byID {
		f.gone = true
		if f.l != nil {
			open = append(open, f.l)
		}
	}
	ls.byID = map[netnsx.ID]*followed{}
	ls.mu.Unlock()
	ls.wg.Wait()
	var first error
	for _, l := range open {
		if err := l.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
