package wire

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// peerTracker keeps wire_peers equal to the IPsec peers of this namespace:
// the remote end of every SA, of every policy template (tunnel endpoints),
// and the host-sized selectors of transport-mode policies. An address of this
// namespace's own interfaces is never a peer.
//
// It refreshes on every XFRM SA or policy event and every address change,
// so a new peer is in the map before its first plaintext packet in most
// cases, and again at each scrape, so what a scrape reports is never older
// than the scrape even when events were lost (ENOBUFS) or not permitted.
type peerTracker struct {
	h      *netlink.Handle
	objs   *Objects
	ns     netns.NsHandle
	logger *slog.Logger

	mu   sync.Mutex
	kick chan struct{}
}

func newPeerTracker(h *netlink.Handle, objs *Objects, ns netns.NsHandle, logger *slog.Logger) *peerTracker {
	return &peerTracker{h: h, objs: objs, ns: ns, logger: logger, kick: make(chan struct{}, 1)}
}

// start refreshes once and then on events until done.
func (p *peerTracker) start(done <-chan struct{}, wg *sync.WaitGroup) {
	if _, err := p.refresh(); err != nil {
		p.logger.Warn("cannot learn IPsec peers; unprotected traffic is not counted until this works", "err", err)
	}
	s, err := nl.SubscribeAt(p.ns, netns.None(), unix.NETLINK_XFRM, nl.XFRMNLGRP_SA, nl.XFRMNLGRP_POLICY)
	if err != nil {
		p.logger.Warn("cannot follow XFRM events; peers are refreshed at each scrape only", "err", err)
	} else {
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-done
			s.Close()
		}()
		go func() {
			defer wg.Done()
			p.receive(s, done)
		}()
	}
	addrs := make(chan netlink.AddrUpdate, 16)
	err = netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{
		Namespace: &p.ns,
		ErrorCallback: func(err error) {
			select {
			case <-done:
			default:
				p.logger.Debug("address updates", "err", err)
			}
		},
	})
	if err != nil {
		p.logger.Warn("cannot follow address changes; peers are refreshed at each scrape and XFRM event", "err", err)
		addrs = nil
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case _, ok := <-addrs:
				if !ok {
					addrs = nil
					continue
				}
				p.poke()
			case <-p.kick:
				if _, err := p.refresh(); err != nil {
					p.logger.Debug("refreshing IPsec peers", "err", err)
				}
			}
		}
	}()
}

func (p *peerTracker) poke() {
	select {
	case p.kick <- struct{}{}:
	default: // a refresh is already due
	}
}

// receive turns XFRM multicast messages into refreshes; their content does
// not matter, a dump is the truth.
func (p *peerTracker) receive(s *nl.NetlinkSocket, done <-chan struct{}) {
	for {
		_, _, err := s.Receive()
		select {
		case <-done:
			return
		default:
		}
		if err != nil && !errors.Is(err, unix.ENOBUFS) {
			p.logger.Warn("XFRM events stopped; peers are refreshed at each scrape only", "err", err)
			return
		}
		p.poke()
	}
}

// refresh dumps SAs, policies and local addresses and sets the peer map.
func (p *peerTracker) refresh() ([]netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	states, err := p.h.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing SAs: %w", err)
	}
	policies, err := p.h.XfrmPolicyList(netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing policies: %w", err)
	}
	addrs, err := p.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing local addresses: %w", err)
	}
	local := map[netip.Addr]bool{}
	for _, a := range addrs {
		if ip, ok := addrOf(a.IP); ok {
			local[ip] = true
		}
	}
	peers := peersOf(states, policies, local)
	if err := p.objs.SetPeers(peers); err != nil {
		return nil, err
	}
	return peers, nil
}

// peersOf collects the remote addresses of SAs and policies, sorted.
func peersOf(states []netlink.XfrmState, policies []netlink.XfrmPolicy, local map[netip.Addr]bool) []netip.Addr {
	set := map[netip.Addr]bool{}
	consider := func(ip net.IP) {
		if a, ok := addrOf(ip); ok && !local[a] {
			set[a] = true
		}
	}
	for _, s := range states {
		consider(s.Src)
		consider(s.Dst)
	}
	for _, pol := range policies {
		if len(pol.Tmpls) == 0 {
			continue // allow or block without IPsec: no peer in it
		}
		transport := false
		for _, t := range pol.Tmpls {
			consider(t.Src)
			consider(t.Dst)
			transport = transport || t.Mode == netlink.XFRM_MODE_TRANSPORT
		}
		// A tunnel's selectors are the hosts behind the peers, not peers.
		if !transport {
			continue
		}
		for _, sel := range []*net.IPNet{pol.Src, pol.Dst} {
			if sel == nil {
				continue
			}
			if ones, bits := sel.Mask.Size(); ones == bits && bits > 0 {
				consider(sel.IP)
			}
		}
	}
	out := make([]netip.Addr, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// addrOf converts a netlink address; unspecified, loopback and multicast
// addresses are never peers.
func addrOf(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	a = a.Unmap()
	if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() {
		return netip.Addr{}, false
	}
	return a, true
}
