package xfrmnl

import (
	"log/slog"
	"sync"
	"time"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
)

// Observer follows the SAs and policies of the namespaces a Listeners
// follows, on the listeners' sockets (no socket of its own): OnDump gives
// the whole state of a namespace, then OnNotification each change since,
// in the kernel's order. OnDump comes again after an overrun (notifications
// were lost: the observer's view is replaced). A flush comes as its
// notification (Event sa_flushed with FlushProto, policy_flushed with
// FlushType). Calls for one namespace come one at a time; calls for
// different namespaces may come at once. An observer must not call back into
// the Listeners from them.
type Observer interface {
	OnDump(ns netnsx.Namespace, sas []SA, pols []Policy)
	OnNotification(ns netnsx.Namespace, n Notification)
}

// maxPending bounds the notifications kept for an observer while its dump
// runs; beyond it the dump starts again.
const maxPending = 1 << 16

// observed is one observer of one listener.
type observed struct {
	o       Observer
	gen     int            // the dump in flight; a newer one voids older ones
	pending []Notification // what came while the dump ran
	live    bool           // the dump was delivered: notifications go straight through
}

// observers are a listener's observers and the dumps made for them.
type observers struct {
	ns     netnsx.Namespace
	logger *slog.Logger

	mu     sync.Mutex
	list   []*observed
	closed bool
	wg     sync.WaitGroup
	// gate is held by tests to hold a dump's delivery back while changes
	// come.
	gate sync.Mutex
}

// add starts following for o: notifications from now on are kept until a
// dump of the namespace, made on a socket of its own after this call, is
// delivered; replaying them on that dump's state converges to the
// kernel's, whichever of the two saw a change first.
func (s *observers) add(o Observer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	ob := &observed{o: o}
	s.list = append(s.list, ob)
	s.dumpLocked(ob)
}

func (s *observers) remove(o Observer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, ob := range s.list {
		if ob.o == o {
			s.list = append(s.list[:i], s.list[i+1:]...)
			return
		}
	}
}

// dumpLocked starts a dump for ob.
func (s *observers) dumpLocked(ob *observed) {
	ob.gen++
	ob.pending, ob.live = nil, false
	gen := ob.gen
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		sas, pols, err := s.dump()
		for try := 1; err != nil && try < 3; try++ {
			time.Sleep(time.Duration(try) * time.Second)
			sas, pols, err = s.dump()
		}
		s.gate.Lock()
		s.gate.Unlock() //nolint:staticcheck // an empty section: it only waits for a test
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed || ob.gen != gen {
			return
		}
		if err != nil {
			s.logger.Warn("no SA and policy dump for an observer; its view of the namespace stays empty", "netns", s.ns.Name, "err", err)
		}
		ob.o.OnDump(s.ns, sas, pols)
		for _, n := range ob.pending {
			ob.o.OnNotification(s.ns, n)
		}
		ob.pending, ob.live = nil, true
	}()
}

func (s *observers) dump() ([]SA, []Policy, error) {
	c, err := Dial(s.ns, 0)
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = c.Close() }()
	sas, err := c.SAs()
	if err != nil {
		return nil, nil, err
	}
	pols, err := c.Policies()
	if err != nil {
		return nil, nil, err
	}
	return sas, pols, nil
}

// notify hands a notification to every observer.
func (s *observers) notify(n Notification) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ob := range s.list {
		switch {
		case ob.live:
			ob.o.OnNotification(s.ns, n)
		case len(ob.pending) < maxPending:
			ob.pending = append(ob.pending, n)
		default:
			s.dumpLocked(ob) // too much came meanwhile: start again
		}
	}
}

// lost replaces every observer's view: notifications were dropped.
func (s *observers) lost() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ob := range s.list {
		s.dumpLocked(ob)
	}
}

// close ends the deliveries and waits for the dumps in flight.
func (s *observers) close() {
	s.mu.Lock()
	s.closed = true
	s.list = nil
	s.mu.Unlock()
	s.wg.Wait()
}
