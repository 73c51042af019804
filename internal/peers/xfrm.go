package peers

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/xfrmnl"
)

// follower keeps the peer addresses of one namespace's SAs and policies in
// step with the kernel: one dump when it starts, then the kernel's
// notifications applied one by one, and a new dump only when notifications
// were lost (the socket overran) or a flush emptied a table. A burst of
// events therefore costs what the events say, never a re-dump each; a
// remote-access gateway with 50,000 SAs is dumped once.
//
// It reads through internal/xfrmnl, which never decodes an SA's keys and
// wipes its receive buffer after each message.
type follower struct {
	ns     netnsx.Namespace
	logger *slog.Logger
	// changed tells the tracker that the set of addresses changed; it
	// must not block (the tracker reads snapshot later, coalescing).
	changed func()

	events *xfrmnl.Conn
	done   chan struct{}
	wg     sync.WaitGroup
	dumps  atomic.Int64 // full dumps of SAs and policies so far

	mu    sync.Mutex
	sas   map[saKey][2]netip.Addr
	pols  map[policyKey][]netip.Addr
	refs  map[netip.Addr]int // how many SAs and policies name each address
	local map[netip.Addr]bool
	dirty bool // an address came or went since the last snapshot
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

// Resync pacing: after an overrun the state is dumped again, but not more
// often than this, however fast the kernel overruns the socket.
const minResyncInterval = time.Second

// eventBuffer is the receive buffer of the notification socket: room for
// some thousands of notifications between two reads before an overrun.
const eventBuffer = 4 << 20

func startFollower(ns netnsx.Namespace, logger *slog.Logger, changed func()) (*follower, error) {
	f := &follower{ns: ns, logger: logger, changed: changed, done: make(chan struct{})}
	events, err := xfrmnl.Dial(ns, xfrmnl.ChangeGroups)
	if err != nil {
		return nil, err
	}
	// Not fatal: the default buffer only makes overruns more likely.
	_ = events.SetReadBuffer(eventBuffer)
	f.events = events

	h, err := nsHandle(ns)
	if err != nil {
		_ = events.Close()
		return nil, err
	}
	addrs := make(chan netlink.AddrUpdate, 64)
	err = netlink.AddrSubscribeWithOptions(addrs, f.done, netlink.AddrSubscribeOptions{
		Namespace:         &h,
		ReceiveBufferSize: 1 << 20,
		ErrorCallback: func(err error) {
			select {
			case <-f.done:
			default:
				logger.Debug("local address updates", "netns", ns.Name, "err", err)
			}
		},
	})
	_ = h.Close() // the subscription's socket is in the namespace now
	if err != nil {
		_ = events.Close()
		close(f.done)
		return nil, fmt.Errorf("following local addresses: %w", err)
	}
	// Subscribed first, dumped second: a change in between arrives as a
	// notification and is applied to the dump (set semantics make a
	// repeated add or delete harmless).
	if err := f.resync(); err != nil {
		f.Close()
		return nil, err
	}
	f.wg.Add(2)
	go func() {
		defer f.wg.Done()
		f.readEvents()
	}()
	go func() {
		defer f.wg.Done()
		for range addrs {
			// An address change is rare; re-list them all.
			if err := f.readLocal(); err != nil {
				logger.Debug("listing local addresses", "netns", ns.Name, "err", err)
			}
			f.changed()
		}
	}()
	return f, nil
}

// Close stops following; the namespace's sockets are closed (they would
// keep a deleted namespace alive).
func (f *follower) Close() {
	select {
	case <-f.done:
	default:
		close(f.done)
	}
	if f.events != nil {
		_ = f.events.Close()
	}
	f.wg.Wait()
}

func (f *follower) readEvents() {
	var lastResync time.Time
	for {
		resync := false
		skipped, err := f.events.ReadNotifications(func(n xfrmnl.Notification) {
			switch n.Event {
			case xfrmnl.EventSAFlushed, xfrmnl.EventPolicyFlushed:
				resync = true
			default:
				f.apply(n)
			}
		})
		switch {
		case errors.Is(err, os.ErrClosed):
			return
		case errors.Is(err, unix.ENOBUFS):
			f.logger.Debug("xfrm notifications lost; re-reading SAs and policies", "netns", f.ns.Name)
			resync = true
		case err != nil:
			f.logger.Warn("reading xfrm notifications stopped; known peers of this namespace are no longer updated", "netns", f.ns.Name, "err", err)
			return
		}
		if skipped > 0 {
			f.logger.Debug("undecodable xfrm notifications skipped", "netns", f.ns.Name, "count", skipped)
		}
		if resync {
			if wait := minResyncInterval - time.Since(lastResync); wait > 0 {
				select {
				case <-f.done:
					return
				case <-time.After(wait):
				}
			}
			lastResync = time.Now()
			if err := f.resync(); err != nil {
				f.logger.Warn("re-reading SAs and policies", "netns", f.ns.Name, "err", err)
			}
			continue
		}
		f.mu.Lock()
		dirty := f.dirty
		f.mu.Unlock()
		if dirty {
			f.changed()
		}
	}
}

// apply updates the mirror from one notification.
func (f *follower) apply(n xfrmnl.Notification) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch n.Event {
	case xfrmnl.EventSAAdded, xfrmnl.EventSAUpdated:
		f.addSA(n.SA)
	case xfrmnl.EventSADeleted, xfrmnl.EventSAHardExpired:
		f.removeSA(keyOfSA(n.SA))
	case xfrmnl.EventPolicyAdded, xfrmnl.EventPolicyUpdated:
		f.addPolicy(n.Policy)
	case xfrmnl.EventPolicyDeleted, xfrmnl.EventPolicyHardExpired:
		f.removePolicy(keyOfPolicy(n.Policy))
	}
}

// resync replaces the mirror with a fresh dump.
func (f *follower) resync() error {
	f.dumps.Add(1)
	c, err := xfrmnl.Dial(f.ns, 0)
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
	f.mu.Lock()
	f.sas = make(map[saKey][2]netip.Addr, len(sas))
	f.pols = make(map[policyKey][]netip.Addr, len(pols))
	f.refs = map[netip.Addr]int{}
	for i := range sas {
		f.addSA(&sas[i])
	}
	for i := range pols {
		f.addPolicy(&pols[i])
	}
	f.dirty = true
	f.mu.Unlock()
	if err := f.readLocal(); err != nil {
		return err
	}
	f.changed()
	return nil
}

func (f *follower) readLocal() error {
	nsh, err := nsHandle(f.ns)
	if err != nil {
		return err
	}
	defer func() { _ = nsh.Close() }()
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("opening rtnetlink: %w", err)
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("listing local addresses: %w", err)
	}
	local := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			local[ip.Unmap()] = true
		}
	}
	f.mu.Lock()
	f.local = local
	f.mu.Unlock()
	return nil
}

// snapshot copies the addresses the namespace's SAs and policies name, and
// its own addresses (never peers).
func (f *follower) snapshot() (remote, local map[netip.Addr]bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dirty = false
	remote = make(map[netip.Addr]bool, len(f.refs))
	for a := range f.refs {
		remote[a] = true
	}
	return remote, f.local
}

func (f *follower) addSA(sa *xfrmnl.SA) {
	k := keyOfSA(sa)
	if _, ok := f.sas[k]; ok {
		f.removeSA(k) // an update may change the addresses
	}
	addrs := [2]netip.Addr{sa.Src, sa.Dst}
	f.sas[k] = addrs
	for _, a := range addrs {
		f.ref(a, 1)
	}
}

func (f *follower) removeSA(k saKey) {
	addrs, ok := f.sas[k]
	if !ok {
		return
	}
	delete(f.sas, k)
	for _, a := range addrs {
		f.ref(a, -1)
	}
}

func (f *follower) addPolicy(p *xfrmnl.Policy) {
	k := keyOfPolicy(p)
	if _, ok := f.pols[k]; ok {
		f.removePolicy(k)
	}
	addrs := policyAddrs(p)
	f.pols[k] = addrs
	for _, a := range addrs {
		f.ref(a, 1)
	}
}

func (f *follower) removePolicy(k policyKey) {
	addrs, ok := f.pols[k]
	if !ok {
		return
	}
	delete(f.pols, k)
	for _, a := range addrs {
		f.ref(a, -1)
	}
}

// ref counts a reference to an address, ignoring those that are never
// peers: unspecified (a larval SA's source, a transport template's
// endpoints), loopback and multicast.
func (f *follower) ref(a netip.Addr, delta int) {
	if !a.IsValid() {
		return
	}
	a = a.Unmap()
	if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() {
		return
	}
	n := f.refs[a] + delta
	switch {
	case n <= 0:
		if _, ok := f.refs[a]; ok {
			delete(f.refs, a)
			f.dirty = true
		}
	case n == delta:
		f.refs[a] = n
		f.dirty = true // a new address
	default:
		f.refs[a] = n
	}
}

// policyAddrs are the addresses a policy names as IPsec peers: the
// endpoints of its templates, and, when one of them is transport mode, the
// hosts of host-sized selectors (transport protects the hosts themselves; a
// tunnel's selectors are the networks behind the peers, not peers). A
// policy without templates (allow, block) names none.
func policyAddrs(p *xfrmnl.Policy) []netip.Addr {
	var out []netip.Addr
	transport := false
	for _, t := range p.Tmpls {
		out = append(out, t.Src, t.Dst)
		transport = transport || t.Mode == 0
	}
	if !transport {
		return out
	}
	for _, sel := range []netip.Prefix{p.Src, p.Dst} {
		if sel.IsValid() && sel.IsSingleIP() {
			out = append(out, sel.Addr())
		}
	}
	return out
}

func keyOfSA(sa *xfrmnl.SA) saKey {
	return saKey{dst: sa.Dst, spi: sa.SPI, proto: sa.Proto, mark: sa.Mark & sa.MarkMask}
}

func keyOfPolicy(p *xfrmnl.Policy) policyKey {
	return policyKey{index: p.Index, dir: p.Dir}
}

// nsHandle opens the namespace for vishvananda/netlink (rtnetlink only:
// XFRM goes through internal/xfrmnl); the caller closes it.
func nsHandle(ns netnsx.Namespace) (netns.NsHandle, error) {
	f, err := ns.Open()
	if err != nil {
		return netns.None(), err
	}
	// The handle owns the descriptor from now on.
	fd, err := unix.Dup(int(f.Fd()))
	_ = f.Close()
	if err != nil {
		return netns.None(), fmt.Errorf("opening namespace %s: %w", ns.Name, err)
	}
	return netns.NsHandle(fd), nil
}
