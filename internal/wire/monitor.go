package wire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Config says where the wire program goes.
type Config struct {
	// Interfaces selects interfaces by name (anchored); nil selects every
	// interface that is up, except loopback and the IPsec devices (xfrm,
	// vti, vti6), whose traffic is the inner side of the tunnels.
	Interfaces *regexp.Regexp
	// Mode is ModeTCX, ModeTC, or "" (auto: tcx where the kernel has it).
	Mode Mode
	// Netns is the network namespace to watch; nil is the current one.
	// Tests use it; the exporter watches its own namespace.
	Netns  *netns.NsHandle
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

// Monitor keeps the wire program attached to the selected interfaces as they
// come and go, and its peer map in step with the kernel's SAs and policies.
type Monitor struct {
	cfg    Config
	logger *slog.Logger
	objs   *Objects
	h      *netlink.Handle
	peers  *peerTracker

	mu     sync.Mutex
	mode   Mode // the mode in use; auto settles on the first attach
	ifaces map[int]*iface
	warned bool // an attach failure was logged at warning level

	done chan struct{}
	wg   sync.WaitGroup
}

type iface struct {
	status InterfaceStatus
	att    attachment
}

// Start loads the program, attaches it to the interfaces there are now and
// follows link and XFRM changes until Close.
func Start(cfg Config) (*Monitor, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	switch cfg.Mode {
	case "", ModeTCX, ModeTC:
	default:
		return nil, fmt.Errorf("unknown attach mode %q (want tcx or tc)", cfg.Mode)
	}
	objs, err := Load()
	if err != nil {
		return nil, err
	}
	ns := netns.None()
	if cfg.Netns != nil {
		ns = *cfg.Netns
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE, unix.NETLINK_XFRM)
	if err != nil {
		_ = objs.Close()
		return nil, fmt.Errorf("opening netlink: %w", err)
	}
	m := &Monitor{
		cfg:    cfg,
		logger: cfg.Logger,
		objs:   objs,
		h:      h,
		mode:   cfg.Mode,
		ifaces: map[int]*iface{},
		done:   make(chan struct{}),
	}
	m.peers = newPeerTracker(h, objs, ns, cfg.Logger)

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

	m.peers.start(m.done, &m.wg)
	return m, nil
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
			m.detach(i)
			delete(m.ifaces, attrs.Index)
			if err := m.objs.ForgetInterface(attrs.Index); err != nil {
				m.logger.Warn("forgetting counters of a deleted interface", "interface", attrs.Name, "err", err)
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
		i = &iface{status: InterfaceStatus{Ifindex: attrs.Index, Name: attrs.Name}}
		m.ifaces[attrs.Index] = i
	}
	m.attach(i)
}

func (m *Monitor) attach(i *iface) {
	mode := m.mode
	if mode == "" {
		mode = ModeTCX
	}
	att, err := m.attachWith(mode, i.status.Ifindex)
	if err != nil && m.mode == "" && errors.Is(err, ebpf.ErrNotSupported) {
		m.logger.Info("kernel has no tcx; attaching with clsact and cls_bpf")
		mode = ModeTC
		att, err = m.attachWith(mode, i.status.Ifindex)
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
	i.att = att
	i.status.Attached = true
	i.status.Err = nil
	m.logger.Info("wire program attached", "interface", i.status.Name, "mode", mode)
}

func (m *Monitor) attachWith(mode Mode, ifindex int) (attachment, error) {
	if mode == ModeTC {
		return attachTC(m.objs, m.h, ifindex)
	}
	return attachTCX(m.objs, m.cfg.Netns, ifindex)
}

func (m *Monitor) detach(i *iface) {
	if i.att == nil {
		return
	}
	if err := i.att.Close(); err != nil {
		m.logger.Warn("detaching wire program", "interface", i.status.Name, "err", err)
	}
	i.att = nil
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

// Objects gives the loaded program and maps, for reading counters.
func (m *Monitor) Objects() *Objects { return m.objs }

// RefreshPeers reads the SAs and policies now and updates the peer map.
func (m *Monitor) RefreshPeers() ([]netip.Addr, error) { return m.peers.refresh() }

// Close detaches from every interface and releases the program.
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
	m.h.Close()
	return m.objs.Close()
}
