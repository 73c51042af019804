package wire

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/vishvananda/netns"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/peers"
)

// BySlot turns a peer set into what SetPeers takes: the peers of each
// namespace label under that namespace's slot. Namespaces without a slot
// (not watched by a monitor) are left out.
func BySlot(set peers.Set, slots map[string]uint32) map[uint32][]netip.Addr {
	out := make(map[uint32][]netip.Addr, len(slots))
	for label, slot := range slots {
		ps := set.Netns[label]
		addrs := make([]netip.Addr, len(ps))
		for i, p := range ps {
			addrs[i] = p.Addr
		}
		out[slot] = addrs
	}
	return out
}

// followPeers feeds the peer map of a monitor that runs alone from a
// tracker of its own namespace; it returns the tracker's stop.
func followPeers(progs *Programs, ns netns.NsHandle, slot uint32, logger *slog.Logger) (func() error, error) {
	t, err := peers.New(peers.Config{ForgetAfter: 0, Logger: logger})
	if err != nil {
		return nil, err
	}
	target, err := netnsx.Own()
	if err != nil {
		t.Close()
		return nil, err
	}
	if ns != netns.None() {
		// The namespace as this process holds it open, under the label
		// of the exporter's own (this monitor is the only one).
		if target, err = netnsx.At(fmt.Sprintf("/proc/self/fd/%d", int(ns))); err != nil {
			t.Close()
			return nil, err
		}
		target.Name = ""
	}
	t.Watch([]netnsx.Namespace{target})
	cancel := t.Subscribe(func(s peers.Set) {
		status, err := progs.SetPeers(BySlot(s, map[string]uint32{"": slot}))
		if err != nil || status.Unwatched > 0 {
			logger.Warn("the peer map misses peers", "unwatched", status.Unwatched, "err", err)
		}
	})
	return func() error {
		cancel()
		t.Close()
		return nil
	}, nil
}
