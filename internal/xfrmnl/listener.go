package xfrmnl

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Counts is what a Listener has seen since it started.
type Counts struct {
	Events map[Event]uint64
	// Overruns counts the times the kernel dropped notifications because
	// the socket's buffer was full (ENOBUFS); each one triggered a resync.
	Overruns uint64
	// Resyncs counts the state re-dumps after an overrun or a flush.
	Resyncs uint64
}

type saKey struct {
	dst   netip.Addr
	spi   uint32
	proto uint8
	mark  uint32
}

type policyKey struct {
	index uint32
	dir   uint8
}

// Listener counts the lifecycle events of one namespace, from the moment it
// starts until Close, in a goroutine of its own.
//
// Notifications are lost when the socket buffer overflows. The listener
// then dumps the SAs and policies again and counts the difference from what
// it knew as added and deleted, so a rekey during a burst is not missed. It
// tracks which SAs and policies exist for that, and counts an add or delete
// notification only when it changes that set: a notification queued before
// a resync that already counted its change is not counted twice. Soft and
// hard expiries cannot be recovered from a dump; the overrun counter says
// when some may be missing.
type Listener struct {
	nsPath string
	conn   *Conn
	logger *slog.Logger
	done   chan struct{}
	// gate is held by tests to stall the reader and provoke an overrun.
	gate sync.Mutex

	mu     sync.Mutex
	counts Counts
	sas    map[saKey]bool
	pols   map[policyKey]bool
	finals []SA // removed SAs with their last counters, oldest first
}

// maxFinals bounds the removed SAs kept until TakeFinals; beyond it the
// oldest are dropped (a consumer that never comes must not grow us).
const maxFinals = 4096

// Listen subscribes to the XFRM event groups in the namespace at nsPath (""
// for our own), takes the current SAs and policies as the baseline and
// starts counting. rcvBuf sets the socket buffer in bytes (0 keeps the
// system default).
func Listen(nsPath string, rcvBuf int, logger *slog.Logger) (*Listener, error) {
	conn, err := Dial(nsPath, EventGroups)
	if err != nil {
		return nil, err
	}
	if rcvBuf > 0 {
		if err := conn.SetReadBuffer(rcvBuf); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("setting event socket buffer: %w", err)
		}
	}
	l := &Listener{
		nsPath: nsPath, conn: conn, logger: logger, done: make(chan struct{}),
		counts: Counts{Events: map[Event]uint64{}},
	}
	// Subscribed first, dumped second: a change between the two shows up
	// as a notification and is then judged against the baseline.
	if err := l.resync(false); err != nil {
		_ = conn.Close()
		return nil, err
	}
	go l.run()
	return l, nil
}

// Counts returns a copy of the counts so far.
func (l *Listener) Counts() Counts {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.counts
	c.Events = make(map[Event]uint64, len(l.counts.Events))
	for k, v := range l.counts.Events {
		c.Events[k] = v
	}
	return c
}

// Close stops the listener and waits for its goroutine.
func (l *Listener) Close() error {
	err := l.conn.Close()
	<-l.done
	return err
}

func (l *Listener) run() {
	defer close(l.done)
	for {
		msgs, err := l.conn.receive()
		l.gate.Lock()
		l.gate.Unlock() //nolint:staticcheck // an empty section: it only waits for a test
		switch {
		case errors.Is(err, os.ErrClosed):
			return
		case errors.Is(err, unix.ENOBUFS):
			l.mu.Lock()
			l.counts.Overruns++
			l.mu.Unlock()
			l.logger.Warn("xfrm event socket overrun: notifications lost, re-reading state", "netns", l.nsPath)
			l.resyncOrLog(true)
			continue
		case err != nil:
			// Nothing else is expected; do not spin on a persistent error.
			l.logger.Error("reading xfrm events", "netns", l.nsPath, "err", err)
			time.Sleep(time.Second)
			continue
		}
		flushed := false
		for _, m := range msgs {
			n, ok, err := ParseNotification(m.typ, m.data)
			if err != nil {
				l.logger.Warn("undecodable xfrm event", "netns", l.nsPath, "type", m.typ, "err", err)
				continue
			}
			if ok {
				flushed = l.apply(n) || flushed
			}
		}
		l.conn.wipe()
		if flushed {
			l.resyncOrLog(false)
		}
	}
}

// apply counts one notification and reports whether it was a flush (after
// which the tracked sets are re-read).
func (l *Listener) apply(n Notification) (flushed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	count := true
	switch n.Event {
	case EventSAAdded:
		k := keyOfSA(n.SA)
		count = !l.sas[k]
		l.sas[k] = true
	case EventSADeleted:
		k := keyOfSA(n.SA)
		count = l.sas[k]
		delete(l.sas, k)
		l.keepFinal(n.SA)
	case EventSAUpdated:
		l.sas[keyOfSA(n.SA)] = true // an update may create the SA
	case EventSAHardExpired:
		delete(l.sas, keyOfSA(n.SA))
		l.keepFinal(n.SA)
	case EventPolicyAdded:
		k := keyOfPolicy(n.Policy)
		count = !l.pols[k]
		l.pols[k] = true
	case EventPolicyDeleted:
		k := keyOfPolicy(n.Policy)
		count = l.pols[k]
		delete(l.pols, k)
	case EventPolicyUpdated:
		l.pols[keyOfPolicy(n.Policy)] = true
	case EventPolicyHardExpired:
		delete(l.pols, keyOfPolicy(n.Policy))
	case EventSAFlushed, EventPolicyFlushed:
		flushed = true
	}
	if count {
		l.counts.Events[n.Event]++
	}
	return flushed
}

// keepFinal remembers an SA the kernel removed, as its notification
// describes it: with the counters it had at the end.
func (l *Listener) keepFinal(sa *SA) {
	if len(l.finals) == maxFinals {
		l.finals = append(l.finals[:0], l.finals[1:]...)
	}
	l.finals = append(l.finals, *sa)
}

// TakeFinals returns the SAs removed (deleted, or hard-expired) since the
// last call, each with its final counters, and forgets them. Whoever sums
// counters over SAs uses them to count what an SA carried up to its end.
func (l *Listener) TakeFinals() []SA {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.finals
	l.finals = nil
	return f
}

func (l *Listener) resyncOrLog(count bool) {
	if err := l.resync(count); err != nil {
		l.logger.Error("re-reading xfrm state", "netns", l.nsPath, "err", err)
	}
}

// resync dumps SAs and policies; with count set, it counts what appeared as
// added and what vanished as deleted.
func (l *Listener) resync(count bool) error {
	c, err := Dial(l.nsPath, 0)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	sas, err := c.SAs()
	if err != nil {
		return err
	}
	pols, err := c.Policies()
	if err != nil {
		return err
	}
	newSAs := make(map[saKey]bool, len(sas))
	for i := range sas {
		newSAs[keyOfSA(&sas[i])] = true
	}
	newPols := make(map[policyKey]bool, len(pols))
	for i := range pols {
		newPols[keyOfPolicy(&pols[i])] = true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sas != nil {
		l.counts.Resyncs++
	}
	if count {
		l.counts.Events[EventSAAdded] += uint64(countMissing(newSAs, l.sas))
		l.counts.Events[EventSADeleted] += uint64(countMissing(l.sas, newSAs))
		l.counts.Events[EventPolicyAdded] += uint64(countMissing(newPols, l.pols))
		l.counts.Events[EventPolicyDeleted] += uint64(countMissing(l.pols, newPols))
	}
	l.sas, l.pols = newSAs, newPols
	return nil
}

// countMissing counts the keys of a that b lacks.
func countMissing[K comparable](a, b map[K]bool) int {
	n := 0
	for k := range a {
		if !b[k] {
			n++
		}
	}
	return n
}

func keyOfSA(sa *SA) saKey {
	return saKey{dst: sa.Dst, spi: sa.SPI, proto: sa.Proto, mark: sa.Mark & sa.MarkMask}
}

func keyOfPolicy(p *Policy) policyKey {
	return policyKey{index: p.Index, dir: p.Dir}
}
