package collector

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/ipsec-exporter/ipsec_exporter/internal/xfrmnl"
)

// One XFRM event listener per namespace, shared by the collectors that need
// one: events (lifecycle counters) and sa (the final counters of removed
// SAs, so per-peer totals include what an SA carried after the last
// scrape). A listener runs while some collector holds it; a namespace that
// is gone has its listener closed, since the socket would keep the
// namespace alive.

type listenerRegistry struct {
	mu     sync.Mutex
	byName map[string]*sharedListener
	rcvBuf func() int
	listen func(path string, rcvBuf int, logger *slog.Logger) (*xfrmnl.Listener, error)
}

type sharedListener struct {
	l     *xfrmnl.Listener
	users map[string]bool
}

// listeners is the exporter's registry.
var listeners = newListenerRegistry()

func newListenerRegistry() *listenerRegistry {
	return &listenerRegistry{
		byName: map[string]*sharedListener{},
		rcvBuf: func() int { return *eventsRcvBuf },
		listen: xfrmnl.Listen,
	}
}

// sync makes user hold a listener for exactly the given namespaces: it
// starts the missing ones and lets go of the others. It returns the
// listeners the user holds, by netns label, and the errors of those that
// could not start.
func (r *listenerRegistry) sync(user string, targets []netnsTarget, logger *slog.Logger) (map[string]*xfrmnl.Listener, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	held := map[string]*xfrmnl.Listener{}
	var errs []error
	for _, t := range targets {
		s := r.byName[t.Name]
		if s == nil {
			l, err := r.listen(t.Path, r.rcvBuf(), logger)
			if err != nil {
				errs = append(errs, fmt.Errorf("netns %q: %w", t.Name, err))
				continue
			}
			s = &sharedListener{l: l, users: map[string]bool{}}
			r.byName[t.Name] = s
		}
		s.users[user] = true
		held[t.Name] = s.l
	}
	for name, s := range r.byName {
		if _, ok := held[name]; !ok && s.users[user] {
			r.releaseLocked(name, user)
		}
	}
	return held, errs
}

// releaseAll lets go of every listener user holds.
func (r *listenerRegistry) releaseAll(user string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name := range r.byName {
		r.releaseLocked(name, user)
	}
}

func (r *listenerRegistry) releaseLocked(name, user string) {
	s := r.byName[name]
	if s == nil || !s.users[user] {
		return
	}
	delete(s.users, user)
	if len(s.users) == 0 {
		_ = s.l.Close()
		delete(r.byName, name)
	}
}
