package xfrmnl

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
)

// Counts is what a Listener has seen since it started.
type Counts struct {
	Events map[Event]uint64
	// Overruns counts the times the kernel reported dropped notifications
	// (ENOBUFS: the socket's buffer was full); each one triggers a resync.
	Overruns uint64
	// Lost counts the notifications the kernel dropped. The adds and
	// deletes among them are recovered by the resync that follows (an SA
	// added and deleted again within the gap excepted); the other events
	// they carried (expiries, acquires, updates) are missing from Events.
	Lost uint64
	// Resyncs counts the state re-dumps after an overrun.
	Resyncs uint64
}

// saKey is what the kernel tells SAs apart by. No pointers: a set of
// 50,000 is not scanned by the garbage collector.
type saKey struct {
	dst   [16]byte
	spi   uint32
	mark  uint32
	proto uint8
}

type policyKey struct {
	index uint32
	dir   uint8
}

// Listener counts the lifecycle events of one namespace, from the moment it
// starts until Close, in a goroutine of its own: every event the kernel
// announces, so the counts are the kernel's own event stream.
//
// It also tracks which SAs and policies exist, from dumps made on its own
// subscribed socket: the kernel queues the dump's replies and the
// notifications on one socket in the order they happen, so an SA added
// while the dump runs is either in a reply that comes after its
// notification, or not in the dump at all, and an SA deleted before the
// dump reached it is simply not listed. A flush removes every SA (or
// policy) of its kind from the set, as the kernel does, without a dump.
//
// The set is what recovers an overrun: when the socket's buffer overflows,
// the kernel drops notifications (counted in Lost) and reports ENOBUFS. The
// listener then dumps again and counts what appeared as added and what
// vanished as deleted, so a rekey during a burst is not missed. An SA added
// and deleted within the gap, and the expiries there, cannot be recovered:
// Lost says how many notifications were dropped.
type Listener struct {
	ns     netnsx.Namespace
	conn   *Conn
	logger *slog.Logger
	done   chan struct{}
	// gate is held by tests to stall the reader and provoke an overrun.
	gate sync.Mutex

	// Owned by the goroutine that reads the socket (Listen, then run).
	sas       map[saKey]bool
	pols      map[policyKey]uint8 // the policy's type, for flushes
	dump      *dumpState          // the dump in progress, nil when none
	resyncDue bool                // an overrun happened: dump when the queue is drained
	drops     uint32              // the socket's drop counter when last read

	mu     sync.Mutex
	counts Counts
	finals []SA // removed SAs with their last counters, oldest first

	observers observers
}

// dumpState is one SA dump followed by one policy dump.
type dumpState struct {
	seq    uint32
	kind   uint16 // msgGetSA, then msgGetPolicy
	resync bool   // after an overrun; else the first dump
	count  bool   // count what is found that the set lacks as added
	// What the dump listed (a resync's only: the first dump infers
	// nothing from what it did not list), and what notifications changed
	// while it ran (those are newer than the dump's replies for the same
	// object).
	seenSAs, touchedSAs   map[saKey]bool
	seenPols, touchedPols map[policyKey]bool
	// What this dump counted as added: their notifications, should they
	// come after the reply, are not counted again.
	countedSAs  map[saKey]bool
	countedPols map[policyKey]bool
	// A flush during the dump: replies for what it removed may still be
	// queued (the dump read the object before the flush removed it).
	flushedSAs  func(saKey) bool
	flushedPols func(policyKey, uint8) bool
}

// ListenOptions configure a Listener.
type ListenOptions struct {
	// RcvBuf sets the socket buffer in bytes (0 keeps the system
	// default).
	RcvBuf int
	// CountExisting counts the SAs and policies the first dump finds as
	// added: for a namespace that appeared while the exporter watched,
	// which started empty, so all it holds was added since.
	CountExisting bool
	Logger        *slog.Logger
}

// maxDrain bounds the datagrams read before a resync starts.
const maxDrain = 1024

// maxFinals bounds the removed SAs kept until TakeFinals; beyond it the
// oldest are dropped (a consumer that never comes must not grow us).
const maxFinals = 4096

// Listen subscribes to the XFRM event groups in the namespace, reads its
// SAs and policies once and starts counting. It returns when that first
// dump is done.
func Listen(ns netnsx.Namespace, opts ListenOptions) (*Listener, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	conn, err := Dial(ns, EventGroups)
	if err != nil {
		return nil, err
	}
	if opts.RcvBuf > 0 {
		if err := conn.SetReadBuffer(opts.RcvBuf); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("setting event socket buffer: %w", err)
		}
	}
	l := &Listener{
		ns: ns, conn: conn, logger: opts.Logger, done: make(chan struct{}),
		sas: map[saKey]bool{}, pols: map[policyKey]uint8{},
		counts:    Counts{Events: map[Event]uint64{}},
		observers: observers{ns: ns, logger: opts.Logger},
	}
	if err := l.startDump(false, opts.CountExisting); err != nil {
		_ = conn.Close()
		return nil, err
	}
	for l.dump != nil {
		if err := l.receive(); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("reading xfrm state: %w", err)
		}
	}
	go l.run()
	return l, nil
}

// Namespace is the namespace the listener follows.
func (l *Listener) Namespace() netnsx.Namespace { return l.ns }

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

// Close stops the listener and waits for its goroutine. Its socket no
// longer holds the namespace.
func (l *Listener) Close() error {
	err := l.conn.Close()
	<-l.done
	l.observers.close()
	return err
}

// Observe makes o follow this listener's namespace (see Observer).
func (l *Listener) Observe(o Observer) { l.observers.add(o) }

// Unobserve stops o following it.
func (l *Listener) Unobserve(o Observer) { l.observers.remove(o) }

func (l *Listener) run() {
	defer close(l.done)
	for {
		err := l.receive()
		switch {
		case errors.Is(err, os.ErrClosed):
			return
		case err != nil:
			// Nothing else is expected; do not spin on a persistent error.
			l.logger.Error("reading xfrm events", "netns", l.ns.Name, "err", err)
			time.Sleep(time.Second)
		}
	}
}

// receive reads and applies one datagram, and starts a resync when one is
// due and nothing older is queued.
func (l *Listener) receive() error {
	msgs, err := l.conn.receive()
	l.gate.Lock()
	l.gate.Unlock() //nolint:staticcheck // an empty section: it only waits for a test
	if errors.Is(err, unix.ENOBUFS) {
		l.overrun()
		return nil
	}
	if err != nil {
		return err
	}
	err = l.apply(msgs)
	l.conn.wipe()
	if err != nil {
		return err
	}
	if l.resyncDue && l.dump == nil {
		return l.drainAndResync()
	}
	return nil
}

// overrun records an ENOBUFS: notifications were dropped.
func (l *Listener) overrun() {
	drops, err := l.conn.drops()
	l.mu.Lock()
	l.counts.Overruns++
	if err == nil {
		l.counts.Lost += uint64(drops - l.drops)
		l.drops = drops
	}
	l.mu.Unlock()
	l.logger.Warn("xfrm event socket overrun: notifications lost, re-reading state", "netns", l.ns.Name)
	l.resyncDue = true
	l.observers.lost()
}

// drainAndResync applies what is still queued (older than the drops, as the
// kernel drops every notification while the queue is full) and then dumps.
// Dumping on an empty queue leaves room for the dump's first reply; on a
// queue that never empties (events keep coming) it dumps after a while
// anyway: the kernel then sends the dump's replies as room is made.
func (l *Listener) drainAndResync() error {
	for range maxDrain {
		msgs, err := l.conn.receiveQueued()
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if errors.Is(err, unix.ENOBUFS) {
			l.overrun()
			continue
		}
		if err != nil {
			return err
		}
		err = l.apply(msgs)
		l.conn.wipe()
		if err != nil {
			return err
		}
	}
	l.resyncDue = false
	return l.startDump(true, true)
}

func (l *Listener) startDump(resync, count bool) error {
	seq, err := l.conn.send(msgGetSA, true, nil)
	if err != nil {
		return err
	}
	l.dump = &dumpState{seq: seq, kind: msgGetSA, resync: resync, count: count,
		seenSAs: map[saKey]bool{}, touchedSAs: map[saKey]bool{}, countedSAs: map[saKey]bool{},
		seenPols: map[policyKey]bool{}, touchedPols: map[policyKey]bool{}, countedPols: map[policyKey]bool{}}
	return nil
}

// apply handles one datagram: replies to the dump in progress and
// notifications, in the order the kernel queued them.
func (l *Listener) apply(msgs []message) error {
	for _, m := range msgs {
		// Notifications carry the port of whoever asked for the change
		// (0 for the kernel's own: expiries, acquires); replies to our
		// dumps carry ours, and we never ask for a change.
		if m.port != l.conn.port {
			l.notified(m)
			continue
		}
		d := l.dump
		if d == nil || m.seq != d.seq {
			continue // a late reply to an abandoned request
		}
		if err := l.replied(m); err != nil {
			return err
		}
	}
	return nil
}

// replied handles one reply to the dump in progress.
func (l *Listener) replied(m message) error {
	d := l.dump
	switch m.typ {
	case unix.NLMSG_DONE:
		if m.flags&unix.NLM_F_DUMP_INTR != 0 {
			// The kernel says the dump is not consistent: do it again.
			// What notifications changed since it began stays newer.
			if err := l.startDump(d.resync, d.count); err != nil {
				return err
			}
			l.dump.touchedSAs, l.dump.touchedPols = d.touchedSAs, d.touchedPols
			l.dump.countedSAs, l.dump.countedPols = d.countedSAs, d.countedPols
			return nil
		}
		return l.dumpDone()
	case unix.NLMSG_ERROR:
		if len(m.data) < 4 || ne.Uint32(m.data) == 0 {
			return nil
		}
		l.dump = nil
		l.resyncDue = true // tried again after the next notification
		return fmt.Errorf("xfrm dump %#x: %w", d.kind, syscall.Errno(-int32(ne.Uint32(m.data))))
	case msgNewSA:
		sa, err := ParseSA(m.data)
		if err != nil {
			l.logger.Warn("undecodable SA in a dump", "netns", l.ns.Name, "err", err)
			return nil
		}
		l.listedSA(keyOfSA(&sa))
	case msgNewPolicy:
		p, err := ParsePolicy(m.data)
		if err != nil {
			l.logger.Warn("undecodable policy in a dump", "netns", l.ns.Name, "err", err)
			return nil
		}
		l.listedPolicy(keyOfPolicy(&p), p.Type)
	}
	return nil
}

func (l *Listener) notified(m message) {
	n, ok, err := ParseNotification(m.typ, m.data)
	if err != nil {
		l.logger.Warn("undecodable xfrm event", "netns", l.ns.Name, "type", m.typ, "err", err)
		return
	}
	if ok {
		l.count(n)
		l.observers.notify(n)
	}
}

// listedSA takes one SA of a dump.
func (l *Listener) listedSA(k saKey) {
	d := l.dump
	if d.touchedSAs[k] || (d.flushedSAs != nil && d.flushedSAs(k)) {
		return // a notification since is newer than this reply
	}
	if d.resync {
		d.seenSAs[k] = true
	}
	if !l.sas[k] {
		l.sas[k] = true
		if d.count && !larval(k) {
			l.add(EventSAAdded, 1)
			d.countedSAs[k] = true
		}
	}
}

// larval tells the kernel's acquire placeholders (SPI 0) apart: they come
// and go without an add or delete notification (an acquire makes one, its
// expiry is a hard expire), so a dump does not count them either.
func larval(k saKey) bool { return k.spi == 0 }

func (l *Listener) listedPolicy(k policyKey, typ uint8) {
	d := l.dump
	if d.touchedPols[k] || (d.flushedPols != nil && d.flushedPols(k, typ)) {
		return
	}
	if d.resync {
		d.seenPols[k] = true
	}
	if _, ok := l.pols[k]; !ok {
		l.pols[k] = typ
		if d.count {
			l.add(EventPolicyAdded, 1)
			d.countedPols[k] = true
		}
	}
}

// dumpDone ends the SA dump by starting the policy dump, and the policy dump
// by counting, after an overrun, what vanished unseen as deleted.
func (l *Listener) dumpDone() error {
	d := l.dump
	if d.kind == msgGetSA {
		seq, err := l.conn.send(msgGetPolicy, true, nil)
		if err != nil {
			l.dump = nil
			return err
		}
		d.seq, d.kind = seq, msgGetPolicy
		return nil
	}
	l.dump = nil
	if !d.resync {
		return nil
	}
	for k := range l.sas {
		if !d.seenSAs[k] && !d.touchedSAs[k] {
			delete(l.sas, k)
			if !larval(k) {
				l.add(EventSADeleted, 1)
			}
		}
	}
	for k := range l.pols {
		if !d.seenPols[k] && !d.touchedPols[k] {
			delete(l.pols, k)
			l.add(EventPolicyDeleted, 1)
		}
	}
	l.mu.Lock()
	l.counts.Resyncs++
	l.mu.Unlock()
	return nil
}

// count applies one notification to the tracked sets and counts it. Every
// event the kernel announces counts, so the counts are the kernel's own
// event stream: a delete of an SA never announced as added (an SPI a key
// manager allocated, XFRM_MSG_ALLOCSPI, which the kernel does not announce,
// and deleted when its negotiation failed) counts too. The one add not
// counted is one whose SA the dump running now listed and counted already
// (the dump's walk saw it before its notification was queued).
func (l *Listener) count(n Notification) {
	d := l.dump
	switch n.Event {
	case EventSAAdded, EventSAUpdated:
		k := keyOfSA(n.SA)
		l.sas[k] = true // an update may create the SA
		if d != nil {
			d.touchedSAs[k] = true
			if n.Event == EventSAAdded && d.countedSAs[k] {
				return
			}
		}
	case EventSADeleted, EventSAHardExpired:
		k := keyOfSA(n.SA)
		delete(l.sas, k)
		if d != nil {
			d.touchedSAs[k] = true
		}
		l.keepFinal(n.SA)
	case EventPolicyAdded, EventPolicyUpdated:
		k := keyOfPolicy(n.Policy)
		l.pols[k] = n.Policy.Type
		if d != nil {
			d.touchedPols[k] = true
			if n.Event == EventPolicyAdded && d.countedPols[k] {
				return
			}
		}
	case EventPolicyDeleted, EventPolicyHardExpired:
		k := keyOfPolicy(n.Policy)
		delete(l.pols, k)
		if d != nil {
			d.touchedPols[k] = true
		}
	case EventSAFlushed:
		flushed := func(k saKey) bool { return flushesSA(n.FlushProto, k.proto) }
		for k := range l.sas {
			if flushed(k) {
				delete(l.sas, k)
			}
		}
		if d != nil {
			d.flushedSAs = flushed
		}
	case EventPolicyFlushed:
		flushed := func(k policyKey, typ uint8) bool { return flushesPolicy(n.FlushType, k.dir, typ) }
		for k, typ := range l.pols {
			if flushed(k, typ) {
				delete(l.pols, k)
			}
		}
		if d != nil {
			d.flushedPols = flushed
		}
	}
	l.add(n.Event, 1)
}

// IPSEC_PROTO_ANY in struct xfrm_usersa_flush.
const ipsecProtoAny = 255

// flushesSA tells whether a flush of proto removes an SA of saProto, as
// xfrm_state_flush decides (xfrm_id_proto_match). The kernel's own tunnel
// states for IPcomp (IPIP, IPv6-in-IPv6) are never flushed while in use.
func flushesSA(proto, saProto uint8) bool {
	switch {
	case saProto == unix.IPPROTO_IPIP || saProto == unix.IPPROTO_IPV6:
		return false
	case proto == 0 || proto == saProto:
		return true
	case proto == ipsecProtoAny:
		return saProto == unix.IPPROTO_ESP || saProto == unix.IPPROTO_AH || saProto == unix.IPPROTO_COMP
	}
	return false
}

// flushesPolicy tells whether a flush of policy type typ removes a policy,
// as xfrm_policy_flush decides: same type, not a per-socket one.
func flushesPolicy(typ, dir, polType uint8) bool {
	return polType == typ && dir < socketPolicyBase
}

func (l *Listener) add(e Event, n uint64) {
	l.mu.Lock()
	l.counts.Events[e] += n
	l.mu.Unlock()
}

// keepFinal remembers an SA the kernel removed, as its notification
// describes it: with the counters it had at the end.
func (l *Listener) keepFinal(sa *SA) {
	l.mu.Lock()
	defer l.mu.Unlock()
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

func keyOfSA(sa *SA) saKey {
	return saKey{dst: sa.Dst.As16(), spi: sa.SPI, proto: sa.Proto, mark: sa.Mark & sa.MarkMask}
}

func keyOfPolicy(p *Policy) policyKey {
	return policyKey{index: p.Index, dir: p.Dir}
}
