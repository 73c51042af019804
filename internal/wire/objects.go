package wire

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

// Counter is one packets/bytes pair summed over every CPU.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// WireKey names one counter of wire_counters.
type WireKey struct {
	Ifindex   int
	Direction Direction
	Class     Class
}

// PeerKey names one counter of unprotected_counters.
type PeerKey struct {
	Peer      netip.Addr
	Direction Direction
}

// Overflow counts the new keys that found their map full.
type Overflow struct {
	WireCounters        uint64
	UnprotectedCounters uint64
}

// Objects is the loaded wire program with its maps.
type Objects struct {
	objs wireObjects

	noBatch atomic.Bool // the kernel lacks batch lookups on hash maps
}

var memlockOnce sync.Once

// Load loads the wire programs and maps into the kernel. It needs CAP_BPF
// (or CAP_SYS_ADMIN); attaching them needs CAP_NET_ADMIN too.
func Load() (*Objects, error) {
	var memlockErr error
	memlockOnce.Do(func() { memlockErr = rlimit.RemoveMemlock() })
	if memlockErr != nil {
		return nil, fmt.Errorf("removing the memlock limit: %w", memlockErr)
	}
	o := &Objects{}
	if err := loadWireObjects(&o.objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("loading wire program: %+v", verr)
		}
		return nil, fmt.Errorf("loading wire program: %w", err)
	}
	return o, nil
}

// Close releases the programs and maps; links hold their own references.
func (o *Objects) Close() error {
	return o.objs.Close()
}

func (o *Objects) program(d Direction) *ebpf.Program {
	if d == Egress {
		return o.objs.WireEgress
	}
	return o.objs.WireIngress
}

// ProgramStats gives the kernel's run time and count of each program (zero
// unless kernel.bpf_stats_enabled is on), by program name.
func (o *Objects) ProgramStats() map[string]*ebpf.ProgramStats {
	out := map[string]*ebpf.ProgramStats{}
	for name, p := range map[string]*ebpf.Program{"wire_ingress": o.objs.WireIngress, "wire_egress": o.objs.WireEgress} {
		if s, err := p.Stats(); err == nil {
			out[name] = s
		}
	}
	return out
}

// WireCounters reads wire_counters, summed over CPUs.
func (o *Objects) WireCounters() (map[WireKey]Counter, error) {
	out := map[WireKey]Counter{}
	err := readPerCPU(o, o.objs.WireCounters, func(k wireWireKey, c Counter) {
		key := WireKey{Ifindex: int(k.Ifindex), Direction: Direction(k.Direction), Class: Class(k.Class)}
		out[key] = add(out[key], c)
	})
	if err != nil {
		return nil, fmt.Errorf("reading wire counters: %w", err)
	}
	return out, nil
}

// UnprotectedCounters reads unprotected_counters, summed over CPUs.
func (o *Objects) UnprotectedCounters() (map[PeerKey]Counter, error) {
	out := map[PeerKey]Counter{}
	err := readPerCPU(o, o.objs.UnprotectedCounters, func(k wireUnprotectedKey, c Counter) {
		key := PeerKey{Peer: netip.AddrFrom16(k.Addr).Unmap(), Direction: Direction(k.Direction)}
		out[key] = add(out[key], c)
	})
	if err != nil {
		return nil, fmt.Errorf("reading unprotected counters: %w", err)
	}
	return out, nil
}

// Overflow reads wire_overflow, summed over CPUs.
func (o *Objects) Overflow() (Overflow, error) {
	var sums [2]uint64
	for i := range sums {
		var perCPU []uint64
		if err := o.objs.WireOverflow.Lookup(uint32(i), &perCPU); err != nil {
			return Overflow{}, fmt.Errorf("reading overflow counters: %w", err)
		}
		for _, v := range perCPU {
			sums[i] += v
		}
	}
	return Overflow{WireCounters: sums[0], UnprotectedCounters: sums[1]}, nil
}

// ForgetInterface deletes the counters of an interface that is gone, so a
// new interface that reuses its index starts from zero.
func (o *Objects) ForgetInterface(ifindex int) error {
	var stale []wireWireKey
	var key wireWireKey
	var values []wireWireValue
	it := o.objs.WireCounters.Iterate()
	for it.Next(&key, &values) {
		if int(key.Ifindex) == ifindex {
			stale = append(stale, key)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("listing counters of interface %d: %w", ifindex, err)
	}
	for _, k := range stale {
		if err := o.objs.WireCounters.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("deleting counters of interface %d: %w", ifindex, err)
		}
	}
	return nil
}

func add(a, b Counter) Counter {
	return Counter{Packets: a.Packets + b.Packets, Bytes: a.Bytes + b.Bytes}
}

// readPerCPU walks a per-CPU hash of wire_value, with batch lookups where the
// kernel has them (5.6+) and map iteration otherwise, remembered after the
// first try.
func readPerCPU[K any](o *Objects, m *ebpf.Map, each func(K, Counter)) error {
	if !o.noBatch.Load() {
		err := readBatch(m, each)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
		o.noBatch.Store(true)
	}
	var key K
	var values []wireWireValue
	it := m.Iterate()
	for it.Next(&key, &values) {
		each(key, sum(values))
	}
	return it.Err()
}

func readBatch[K any](m *ebpf.Map, each func(K, Counter)) error {
	const chunk = 256
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	keys := make([]K, chunk)
	values := make([]wireWireValue, chunk*cpus)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, values, nil)
		for i := range n {
			each(keys[i], sum(values[i*cpus:(i+1)*cpus]))
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func sum(values []wireWireValue) Counter {
	var c Counter
	for _, v := range values {
		c.Packets += v.Packets
		c.Bytes += v.Bytes
	}
	return c
}

// SetPeers makes wire_peers hold exactly the given addresses. The counters of
// a peer that is gone are deleted with it: its series ends, and the map has
// room for the peers that came instead.
func (o *Objects) SetPeers(peers []netip.Addr) error {
	want := map[wirePeerKey]bool{}
	for _, p := range peers {
		want[wirePeerKey{Addr: p.As16()}] = true
	}
	var key wirePeerKey
	var value uint8
	var stale []wirePeerKey
	it := o.objs.WirePeers.Iterate()
	for it.Next(&key, &value) {
		if want[key] {
			delete(want, key)
		} else {
			stale = append(stale, key)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("listing peers: %w", err)
	}
	for k := range want {
		if err := o.objs.WirePeers.Update(k, uint8(1), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("adding peer %s: %w", netip.AddrFrom16(k.Addr).Unmap(), err)
		}
	}
	for _, k := range stale {
		if err := o.objs.WirePeers.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("deleting peer %s: %w", netip.AddrFrom16(k.Addr).Unmap(), err)
		}
		for _, d := range []Direction{Ingress, Egress} {
			err := o.objs.UnprotectedCounters.Delete(wireUnprotectedKey{Addr: k.Addr, Direction: uint8(d)})
			if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("deleting counters of peer %s: %w", netip.AddrFrom16(k.Addr).Unmap(), err)
			}
		}
	}
	return nil
}

// Peers lists the addresses in wire_peers.
func (o *Objects) Peers() ([]netip.Addr, error) {
	var out []netip.Addr
	var key wirePeerKey
	var value uint8
	it := o.objs.WirePeers.Iterate()
	for it.Next(&key, &value) {
		out = append(out, netip.AddrFrom16(key.Addr).Unmap())
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("listing peers: %w", err)
	}
	return out, nil
}
