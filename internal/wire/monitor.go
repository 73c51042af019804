package wire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/pin"
)

// Config says where the wire program goes.
type Config struct {
	// Interfaces selects interfaces by name (anchored); nil selects every
	// interface that is up, except loopback and the IPsec devices (xfrm,
	// vti, vti6), whose traffic is the inner side of the tunnels.
	Interfaces *regexp.Regexp
	// Mode is ModeTCX, ModeTC, or "" (auto: tcx where the kernel has it).
	Mode Mode
	// Netns is the network namespace to watch; nil is the exporter's own.
	Netns *netns.NsHandle
	// NetnsSlot is the namespace's number in the peer map (see
	// Programs.SetPeers).
	NetnsSlot uint32
	// Programs are the loaded programs and shared maps. Start loads its
	// own when nil, and then also follows the namespace's peers itself.
	Programs *Programs
	// Pins is the namespace's directory under --bpf.pin-path: each
	// interface's counters and tcx links are pinned in a subdirectory named
	// after it. The zero Dir pins nothing.
	Pins   pin.Dir
	Logger *slog.Logger
}

// InterfaceStatus is one selected interface and how its attach went.
type InterfaceStatus struct {
	Ifindex  int
	Name     string
	Mode     Mode
	Attached bool
	Err      error
}

// Monitor keeps the wire program attached to the selected interfaces of one
// namespace as they come and go.
type Monitor struct {
	cfg    Config
	logger *slog.Logger
	progs  *Programs
	h      *netlink.Handle
	// own holds what Start made for a monitor that runs alone (its
	// programs and peer follower); closed with it.
	own []func() error

	mu     sync.Mutex
	mode   Mode // the mode in use; auto settles on the first attach
	ifaces map[int]*iface
	warned bool // an attach failure was logged at warning level

	done chan struct{}
	wg   sync.WaitGroup
}

type iface struct {
	status   InterfaceStatus
	ethernet bool
	pins     pin.Dir // where its instance is pinned: named as it was at the first attach
	inst     *instance
	att      attachment
}

// Start attaches the program to the selected interfaces there are now, after
// removing what a killed exporter left on any interface of the namespace, and
// follows link changes until Close.
func Start(cfg Config) (*Monitor, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	switch cfg.Mode {
	case "", ModeTCX, ModeTC:
	default:
		return nil, fmt.Errorf("unknown attach mode %q (want tcx or tc)", cfg.Mode)
	}
	m := &Monitor{
		cfg:    cfg,
		logger: cfg.Logger,
		progs:  cfg.Programs,
		mode:   cfg.Mode,
		ifaces: map[int]*iface{},
		done:   make(chan struct{}),
	}
	if m.progs == nil {
		p, err := Load(0)
		if err != nil {
			return nil, err
		}
		m.progs = p
		m.own = append(m.own, p.Close)
	}
	ns := netns.None()
	if cfg.Netns != nil {
		ns = *cfg.Netns
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		_ = m.closeOwn()
		return nil, fmt.Errorf("opening netlink: %w", err)
	}
	m.h = h

	updates := make(chan netlink.LinkUpdate, 64)
	err = netlink.LinkSubscribeWithOptions(updates, m.done, netlink.LinkSubscribeOptions{
		Namespace: &ns,
		ErrorCallback: func(err error) {
			select {
			case <-m.done: // the socket closed under the receiver
			default:
				m.logger.Warn("interface updates failed; attached interfaces stay as they are", "err", err)
			}
		},
	})
	if err != nil {
		_ = m.Close() // the first error is the one to report
		return nil, fmt.Errorf("subscribing to link updates: %w", err)
	}
	// Subscribed first, listed second: no link falls in between. Attaching
	// to the existing ones before returning lets the first scrape see them.
	links, err := h.LinkList()
	if err != nil {
		_ = m.Close()
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	m.removeStale(links)
	m.prunePins(links)
	for _, l := range links {
		m.handleLink(l, false)
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for u := range updates {
			m.handleLink(u.Link, u.Header.Type == unix.RTM_DELLINK)
		}
	}()
	if cfg.Programs == nil {
		stop, err := followPeers(m.progs, ns, cfg.NetnsSlot, cfg.Logger)
		if err != nil {
			_ = m.Close()
			return nil, err
		}
		m.own = append(m.own, stop)
	}
	return m, nil
}

// removeStale removes what a killed exporter left on every interface, the
// ones this monitor will not attach to included.
func (m *Monitor) removeStale(links []netlink.Link) {
	for _, l := range links {
		removed, err := removeStale(m.h, l.Attrs().Index)
		if err != nil {
			m.logger.Warn("cannot remove the wire filters a previous exporter left", "interface", l.Attrs().Name, "err", err)
		} else if removed {
			m.logger.Info("removed the wire filters a previous exporter left", "interface", l.Attrs().Name)
		}
	}
}

// prunePins unpins what an earlier exporter pinned for interfaces that are
// gone or no longer selected: their links would go on counting, their
// counters would stay on bpffs for good.
func (m *Monitor) prunePins(links []netlink.Link) {
	var keep []string
	for _, l := range links {
		if m.selected(l) {
			keep = append(keep, l.Attrs().Name)
		}
	}
	removed, err := m.cfg.Pins.Prune(keep)
	if err != nil {
		m.logger.Warn("cannot unpin the wire counters of interfaces no longer watched", "err", err)
	}
	if len(removed) > 0 {
		m.logger.Info("unpinned the wire counters and links of interfaces no longer watched", "interfaces", removed)
	}
}

// ipsecDevices carry the inner packets of IPsec (before encryption, after
// decryption), not the wire: counting them would count tunnelled traffic
// twice, once as plaintext.
var ipsecDevices = map[string]bool{"xfrm": true, "vti": true, "vti6": true}

func (m *Monitor) selected(l netlink.Link) bool {
	attrs := l.Attrs()
	if m.cfg.Interfaces != nil {
		return m.cfg.Interfaces.MatchString(attrs.Name)
	}
	return attrs.Flags&net.FlagUp != 0 && attrs.Flags&net.FlagLoopback == 0 && !ipsecDevices[l.Type()]
}

// handleLink attaches to a selected interface the first time it is seen,
// and forgets an interface that is deleted. Updates repeat (every flag
// change sends one), so both are idempotent.
func (m *Monitor) handleLink(l netlink.Link, deleted bool) {
	attrs := l.Attrs()
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.done:
		return
	default:
	}
	i := m.ifaces[attrs.Index]
	if deleted {
		if i != nil {
			pins := i.pins
			m.detach(i)
			delete(m.ifaces, attrs.Index)
			// Its counters end with it (an interface made again under
			// the name starts at 0, like a new series).
			if err := pins.RemoveAll(); err != nil {
				m.logger.Warn("cannot unpin the wire counters of a deleted interface", "interface", attrs.Name, "err", err)
			}
			m.logger.Info("interface deleted", "interface", attrs.Name)
		}
		return
	}
	if i != nil {
		i.status.Name = attrs.Name // renamed, perhaps
		if i.status.Attached {
			return
		}
	}
	if !m.selected(l) {
		return
	}
	if i == nil {
		i = &iface{
			status:   InterfaceStatus{Ifindex: attrs.Index, Name: attrs.Name},
			ethernet: attrs.EncapType == "ether",
			pins:     m.cfg.Pins.Join(attrs.Name),
		}
		m.ifaces[attrs.Index] = i
	}
	m.attach(i)
}

func (m *Monitor) attach(i *iface) {
	mode := m.mode
	if mode == "" {
		mode = ModeTCX
	}
	err := m.attachWith(i, mode)
	if err != nil && m.mode == "" && errors.Is(err, ebpf.ErrNotSupported) {
		m.logger.Info("kernel has no tcx; attaching with clsact and cls_bpf")
		mode = ModeTC
		err = m.attachWith(i, mode)
	}
	i.status.Mode = mode
	if err != nil {
		i.status.Attached = false
		i.status.Err = err
		// Warn once (without CAP_NET_ADMIN every interface fails the
		// same way); the metric keeps saying it for each interface.
		level := slog.LevelDebug
		if !m.warned {
			level = slog.LevelWarn
			m.warned = true
		}
		m.logger.Log(context.Background(), level, "cannot attach wire program; this interface is not counted (more at debug level)",
			"interface", i.status.Name, "mode", mode, "err", err)
		return
	}
	if m.mode == "" {
		m.mode = mode
	}
	i.status.Attached = true
	i.status.Err = nil
	m.logger.Info("wire program attached", "interface", i.status.Name, "mode", mode)
}

// attachWith loads the interface's instance of the programs (once) and
// attaches it.
func (m *Monitor) attachWith(i *iface, mode Mode) error {
	if i.inst == nil {
		inst, err := m.progs.instance(m.cfg.NetnsSlot, i.ethernet, i.pins)
		if err != nil {
			return err
		}
		if len(inst.reset) > 0 {
			m.logger.Warn("pinned wire counters reset: their layout changed, so the counts start again at 0",
				"interface", i.status.Name, "maps", inst.reset, "pin_path", string(i.pins))
		}
		i.inst = inst
	}
	var err error
	if mode == ModeTC {
		// tcx links an exporter in tcx mode pinned would count beside
		// the filters.
		for _, d := range []Direction{Ingress, Egress} {
			_ = i.pins.Remove("link_" + d.String())
		}
		i.att, err = attachTC(i.inst, m.h, i.status.Ifindex)
	} else {
		i.att, err = attachTCX(i.inst, m.cfg.Netns, i.status.Ifindex, i.pins)
	}
	return err
}

// detach removes the programs from an interface and releases them (and
// their counters).
func (m *Monitor) detach(i *iface) {
	if i.att != nil {
		if err := i.att.Close(); err != nil {
			m.logger.Warn("detaching wire program", "interface", i.status.Name, "err", err)
		}
		i.att = nil
	}
	if i.inst != nil {
		_ = i.inst.Close()
		i.inst = nil
	}
	i.status.Attached = false
}

// Interfaces lists the selected interfaces, sorted by name.
func (m *Monitor) Interfaces() []InterfaceStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]InterfaceStatus, 0, len(m.ifaces))
	for _, i := range m.ifaces {
		out = append(out, i.status)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// InterfaceCounters are one attached interface's counters.
type InterfaceCounters struct {
	Name    string
	Ifindex int
	// Counters by direction and class.
	Counters [numDirections][numClasses]Counter
}

// Counters reads the counters of every attached interface.
func (m *Monitor) Counters() ([]InterfaceCounters, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]InterfaceCounters, 0, len(m.ifaces))
	for _, i := range m.ifaces {
		if i.inst == nil {
			continue
		}
		c, err := i.inst.counters()
		if err != nil {
			return nil, fmt.Errorf("interface %s: %w", i.status.Name, err)
		}
		out = append(out, InterfaceCounters{Name: i.status.Name, Ifindex: i.status.Ifindex, Counters: c})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, nil
}

// WireKey names one counter of one interface.
type WireKey struct {
	Ifindex   int
	Direction Direction
	Class     Class
}

// WireCounters is Counters as a map, with only the counters that moved.
func (m *Monitor) WireCounters() (map[WireKey]Counter, error) {
	ics, err := m.Counters()
	if err != nil {
		return nil, err
	}
	out := map[WireKey]Counter{}
	for _, ic := range ics {
		for d := range numDirections {
			for c := range numClasses {
				if v := ic.Counters[d][c]; v != (Counter{}) {
					out[WireKey{Ifindex: ic.Ifindex, Direction: Direction(d), Class: Class(c)}] = v
				}
			}
		}
	}
	return out, nil
}

// UnprotectedCounters reads this namespace's peers with what reached them
// unprotected, leaving out those with nothing.
func (m *Monitor) UnprotectedCounters() (map[PeerKey]Counter, error) {
	all, err := m.progs.Unprotected()
	if err != nil {
		return nil, err
	}
	out := map[PeerKey]Counter{}
	for k, c := range all[m.cfg.NetnsSlot] {
		if c != (Counter{}) {
			out[k] = c
		}
	}
	return out, nil
}

// ProgramStats gives the kernel's run time and count of the programs summed
// over the attached interfaces, by direction (zero unless
// kernel.bpf_stats_enabled is on).
func (m *Monitor) ProgramStats() map[Direction]ebpf.ProgramStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[Direction]ebpf.ProgramStats{}
	for _, i := range m.ifaces {
		if i.inst == nil {
			continue
		}
		for d, s := range i.inst.stats() {
			sum := out[d]
			sum.Runtime += s.Runtime
			sum.RunCount += s.RunCount
			out[d] = sum
		}
	}
	return out
}

// Programs gives the programs and shared maps the monitor uses.
func (m *Monitor) Programs() *Programs { return m.progs }

// Close detaches from every interface, and releases what Start made.
func (m *Monitor) Close() error {
	m.mu.Lock()
	select {
	case <-m.done:
		m.mu.Unlock()
		return nil
	default:
	}
	close(m.done)
	for _, i := range m.ifaces {
		m.detach(i)
	}
	m.mu.Unlock()
	m.wg.Wait()
	if m.h != nil {
		m.h.Close()
	}
	return m.closeOwn()
}

func (m *Monitor) closeOwn() error {
	var errs []error
	for i := len(m.own) - 1; i >= 0; i-- {
		errs = append(errs, m.own[i]())
	}
	m.own = nil
	return errors.Join(errs...)
}

// Peers lists this namespace's peers in the peer map, sorted.
func (m *Monitor) Peers() ([]netip.Addr, error) {
	all, err := m.progs.Unprotected()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for k := range all[m.cfg.NetnsSlot] {
		if k.Direction == Ingress {
			out = append(out, k.Peer)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}
