package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/bpfmap"
	"github.com/ipsec-exporter/ipsec_exporter/internal/pin"
)

// Counter is one packets/bytes pair summed over every CPU.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

func (c Counter) add(o Counter) Counter {
	return Counter{Packets: c.Packets + o.Packets, Bytes: c.Bytes + o.Bytes}
}

// DefaultPeerMapSize bounds the peer map when no size is given. The map is
// not preallocated: the bound costs nothing until peers fill it.
const DefaultPeerMapSize = 65536

// Programs is the loaded wire object: the maps every interface shares (the
// known peers and their filter) and the spec each interface's own instance
// of the programs is loaded from (see instance).
type Programs struct {
	spec       *ebpf.CollectionSpec
	peers      *ebpf.Map // wire_peers
	peerReader *bpfmap.Reader[wirePeerKey, wirePeerCounters]
	filter     *ebpf.Map // the section of wire_peer_filter
	secPathExt uint8     // sec_path_ext: the secpath's bit, 0 without bpf_cast_to_kern_ctx

	mu      sync.Mutex
	present map[wirePeerKey]bool // what wire_peers holds, as set by SetPeers
}

// peerFilterSection is the data section, and so the map, of the global
// wire_peer_filter.
const peerFilterSection = ".data.wire_peer_filter"

// Load reads the wire object and creates its shared maps, with room for
// peerMapSize peers (0: DefaultPeerMapSize). It needs CAP_BPF (or
// CAP_SYS_ADMIN); attaching needs CAP_NET_ADMIN too.
func Load(peerMapSize uint32) (*Programs, error) {
	if err := bpfmap.RemoveMemlock(); err != nil {
		return nil, err
	}
	spec, err := loadWire()
	if err != nil {
		return nil, err
	}
	if peerMapSize == 0 {
		peerMapSize = DefaultPeerMapSize
	}
	spec.Maps[wireMapWirePeers].MaxEntries = peerMapSize
	p := &Programs{spec: spec, present: map[wirePeerKey]bool{}, secPathExt: secPathExt()}
	if p.peers, err = ebpf.NewMap(spec.Maps[wireMapWirePeers]); err != nil {
		return nil, fmt.Errorf("creating the peer map: %w", err)
	}
	p.peerReader = bpfmap.NewReader[wirePeerKey, wirePeerCounters](p.peers)
	// The loader makes data sections mmapable (5.5+, on both lab
	// kernels); the shared map must match to replace it.
	spec.Maps[peerFilterSection].Flags |= unix.BPF_F_MMAPABLE
	if p.filter, err = ebpf.NewMap(spec.Maps[peerFilterSection]); err != nil {
		_ = p.peers.Close()
		return nil, fmt.Errorf("creating the peer filter: %w", err)
	}
	return p, nil
}

// secPathExt is the value of sec_path_ext for this kernel and process:
// 1 << SKB_EXT_SEC_PATH when the kernel has the kfunc bpf_cast_to_kern_ctx
// (6.2+) and the process may read through the pointer it gives; else 0 (no
// kernel BTF, or no such enum value: the same).
func secPathExt() uint8 {
	if !perfmonCapable() {
		return 0
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return 0
	}
	var fn *btf.Func
	var ext *btf.Enum
	if spec.TypeByName("bpf_cast_to_kern_ctx", &fn) != nil || spec.TypeByName("skb_ext_id", &ext) != nil {
		return 0
	}
	for _, v := range ext.Values {
		if v.Name == "SKB_EXT_SEC_PATH" && v.Value < 8 { // active_extensions is a u8
			return 1 << v.Value
		}
	}
	return 0
}

// perfmonCapable tells whether the process has CAP_PERFMON or CAP_SYS_ADMIN:
// the verifier lets a program read through a kernel pointer, as the
// ingress program does after bpf_cast_to_kern_ctx, only then (allow_ptr_leaks);
// without, the program asks the helper about every packet, and loads.
func perfmonCapable() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	return has(unix.CAP_PERFMON) || has(unix.CAP_SYS_ADMIN)
}

// Close releases the shared maps; instances hold their own references.
func (p *Programs) Close() error {
	return errors.Join(p.peers.Close(), p.filter.Close())
}

// PeerMapSize is the peer map's capacity.
func (p *Programs) PeerMapSize() uint32 { return p.peers.MaxEntries() }

// instance is the programs of one interface: their constants say which
// namespace the interface is in and whether its frames are Ethernet, and
// they count into a map of their own.
type instance struct {
	objs   wireObjects
	reader *bpfmap.Reader[uint32, wireWireCounter]
	pins   pin.Dir  // of the interface's counters and links
	reset  []string // pinned maps that were unpinned because their layout changed
}

// countingMaps are pinned with --bpf.pin-path: each interface's counters.
// wire_peers holds counts too, but its keys carry the namespace slots of
// one process (collector/wire.go numbers them as namespaces appear), so
// another process's peer counts could land in the wrong namespace: it is
// created anew, and the unprotected counters restart at 0 with the process.
// The peer filter is rebuilt from the peers.
var countingMaps = []string{wireMapWireCounters}

// instance loads the programs for one interface, with its counters pinned
// in pins.
func (p *Programs) instance(netnsSlot uint32, ethernet bool, pins pin.Dir) (*instance, error) {
	spec := p.spec.Copy()
	if err := spec.Variables[wireVarNetnsSlot].Set(netnsSlot); err != nil {
		return nil, err
	}
	eth := uint8(0)
	if ethernet {
		eth = 1
	}
	if err := spec.Variables[wireVarEthernet].Set(eth); err != nil {
		return nil, err
	}
	if err := spec.Variables[wireVarSecPathExt].Set(p.secPathExt); err != nil {
		return nil, err
	}
	pinOpts, reset, err := pins.Maps(spec, countingMaps...)
	if err != nil {
		return nil, err
	}
	i := &instance{pins: pins, reset: reset}
	err = spec.LoadAndAssign(&i.objs, &ebpf.CollectionOptions{
		Maps:            pinOpts,
		MapReplacements: map[string]*ebpf.Map{wireMapWirePeers: p.peers, peerFilterSection: p.filter},
	})
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("loading wire program: %+v", verr)
		}
		return nil, fmt.Errorf("loading wire program: %w", err)
	}
	i.reader = bpfmap.NewReader[uint32, wireWireCounter](i.objs.WireCounters)
	return i, nil
}

func (i *instance) Close() error { return i.objs.Close() }

func (i *instance) program(d Direction) *ebpf.Program {
	if d == Egress {
		return i.objs.WireEgress
	}
	return i.objs.WireIngress
}

// counters reads the interface's counters, summed over CPUs, by direction
// and class.
func (i *instance) counters() ([numDirections][numClasses]Counter, error) {
	var out [numDirections][numClasses]Counter
	err := i.reader.Each(func(slot uint32, perCPU []wireWireCounter) {
		if slot >= uint32(numDirections*numClasses) {
			return
		}
		var c Counter
		for _, v := range perCPU {
			c.Packets += v.Packets
			c.Bytes += v.Bytes
		}
		out[slot/uint32(numClasses)][slot%uint32(numClasses)] = c
	})
	if err != nil {
		return out, fmt.Errorf("reading wire counters: %w", err)
	}
	return out, nil
}

// stats gives the kernel's run time and count of both programs (zero
// unless kernel.bpf_stats_enabled is on).
func (i *instance) stats() map[Direction]*ebpf.ProgramStats {
	out := map[Direction]*ebpf.ProgramStats{}
	for _, d := range []Direction{Ingress, Egress} {
		if s, err := i.program(d).Stats(); err == nil {
			out[d] = s
		}
	}
	return out
}

// peerKey is the peer map's key for an address in a namespace.
func peerKey(netnsSlot uint32, a netip.Addr) wirePeerKey {
	return wirePeerKey{Netns: netnsSlot, Addr: a.Unmap().As16()}
}

// filterBit mirrors filter_bit in wire.bpf.c: the address as the four
// 32-bit words the program loads, folded, with the namespace, then a
// multiplicative hash.
func filterBit(k wirePeerKey) uint32 {
	x := k.Netns * 0x85ebca6b
	for w := 0; w < 16; w += 4 {
		x ^= binary.NativeEndian.Uint32(k.Addr[w:])
	}
	return (x * 0x9e3779b1) >> (32 - peerFilterBits)
}

// peerFilterBits is PEER_FILTER_BITS of wire.bpf.c; the generated filter
// type has its size.
const peerFilterBits = 18

func filterOf(keys ...map[wirePeerKey]bool) *wirePeerFilter {
	f := &wirePeerFilter{}
	for _, set := range keys {
		f.Peers += uint64(len(set))
		for k := range set {
			b := filterBit(k)
			f.Words[b>>6] |= 1 << (b & 63)
		}
	}
	return f
}

// PeerMapStatus is what SetPeers achieved.
type PeerMapStatus struct {
	// Watched is how many peers the map holds.
	Watched int
	// Unwatched is how many known peers found the map full: plaintext to
	// them is not counted.
	Unwatched int
}

// SetPeers makes the peer map hold exactly the given peers of each
// namespace slot. The peers that stay keep their counters; a peer that
// goes takes its counters with it (its series ends). Gone peers are
// deleted before new ones are added, so the map never fills up with stale
// ones; a new peer that finds it full anyway is counted in Unwatched and
// the others are still added. The filter is widened to old and new peers
// first and narrowed last, so a peer in the map is never filtered out.
func (p *Programs) SetPeers(peers map[uint32][]netip.Addr) (PeerMapStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := map[wirePeerKey]bool{}
	for slot, addrs := range peers {
		for _, a := range addrs {
			want[peerKey(slot, a)] = true
		}
	}
	var errs []error
	if err := p.filter.Update(uint32(0), filterOf(p.present, want), ebpf.UpdateAny); err != nil {
		return PeerMapStatus{Watched: len(p.present)}, fmt.Errorf("setting the peer filter: %w", err)
	}
	for k := range p.present {
		if want[k] {
			continue
		}
		if err := p.peers.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("deleting peer %s: %w", netip.AddrFrom16(k.Addr).Unmap(), err))
			continue
		}
		delete(p.present, k)
	}
	var status PeerMapStatus
	for k := range want {
		if p.present[k] {
			continue
		}
		err := p.peers.Update(k, wirePeerCounters{}, ebpf.UpdateNoExist)
		switch {
		case err == nil, errors.Is(err, ebpf.ErrKeyExist):
			p.present[k] = true
		case errors.Is(err, unix.E2BIG): // a hash map that is full
			status.Unwatched++
		default:
			errs = append(errs, fmt.Errorf("adding peer %s: %w", netip.AddrFrom16(k.Addr).Unmap(), err))
		}
	}
	if err := p.filter.Update(uint32(0), filterOf(p.present), ebpf.UpdateAny); err != nil {
		errs = append(errs, fmt.Errorf("setting the peer filter: %w", err))
	}
	status.Watched = len(p.present)
	return status, errors.Join(errs...)
}

// PeerKey names one unprotected-traffic counter of a namespace.
type PeerKey struct {
	Peer      netip.Addr
	Direction Direction
}

// Unprotected reads the peer map: every watched peer with its counters of
// unprotected traffic (zero when there was none), by namespace slot.
func (p *Programs) Unprotected() (map[uint32]map[PeerKey]Counter, error) {
	out := map[uint32]map[PeerKey]Counter{}
	err := p.peerReader.Each(func(key wirePeerKey, values []wirePeerCounters) {
		m := out[key.Netns]
		if m == nil {
			m = map[PeerKey]Counter{}
			out[key.Netns] = m
		}
		peer := netip.AddrFrom16(key.Addr).Unmap()
		for _, d := range []Direction{Ingress, Egress} {
			u := values[0].Unprotected[d]
			m[PeerKey{Peer: peer, Direction: d}] = Counter{Packets: u.Packets, Bytes: u.Bytes}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("reading the peer map: %w", err)
	}
	return out, nil
}
