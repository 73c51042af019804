package baseline

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Hook is a kernel hook: a program kind as in a section name (fentry,
// fexit, tp_btf, kprobe, kretprobe, raw_tracepoint) and its target.
type Hook struct {
	Kind   string
	Target string
}

// Set is a group of attached programs measured together.
type Set struct {
	progs   map[string]*ebpf.Program
	hooks   map[string]Hook // by program name, as the kernel knows it
	links   []link.Link
	closers []func()
	coll    *ebpf.Collection
}

// Hooks returns where each program is attached, by the program's name in
// the kernel (its BTF function name, or for the empty programs the name
// they were loaded with).
func (s *Set) Hooks() map[string]Hook { return s.hooks }

// Stats returns run time and count per program (kernel.bpf_stats_enabled).
func (s *Set) Stats() (map[string]*ebpf.ProgramStats, error) {
	out := map[string]*ebpf.ProgramStats{}
	for name, p := range s.progs {
		st, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("stats of %s: %w", name, err)
		}
		out[name] = st
	}
	return out, nil
}

// Programs returns the programs by name.
func (s *Set) Programs() map[string]*ebpf.Program { return s.progs }

// Close detaches and frees everything.
func (s *Set) Close() error {
	for i := len(s.links) - 1; i >= 0; i-- {
		s.links[i].Close()
	}
	for _, c := range s.closers {
		c()
	}
	for _, p := range s.progs {
		p.Close()
	}
	if s.coll != nil {
		s.coll.Close()
	}
	return nil
}

// LoadReference loads and attaches bpf/bench_reference.bpf.c.
func LoadReference() (*Set, error) {
	_ = rlimit.RemoveMemlock()
	var objs benchReferenceObjects
	if err := loadBenchReferenceObjects(&objs, nil); err != nil {
		return nil, fmt.Errorf("loading the reference programs: %w", err)
	}
	s := &Set{progs: map[string]*ebpf.Program{
		"ref_kprobe_xfrm_input":     objs.RefKprobeXfrmInput,
		"ref_kretprobe_xfrm_input":  objs.RefKretprobeXfrmInput,
		"ref_kprobe_xfrm_output":    objs.RefKprobeXfrmOutput,
		"ref_kretprobe_xfrm_output": objs.RefKretprobeXfrmOutput,
	}, hooks: map[string]Hook{}}
	closeMaps := func() {
		objs.RefIngress.Close()
		objs.RefEgress.Close()
		objs.RefFlows.Close()
	}
	// Returns first, so that no entry is stored without its return.
	attach := []struct {
		ret  bool
		fn   string
		prog *ebpf.Program
	}{
		{true, "xfrm_input", objs.RefKretprobeXfrmInput},
		{true, "xfrm_output", objs.RefKretprobeXfrmOutput},
		{false, "xfrm_input", objs.RefKprobeXfrmInput},
		{false, "xfrm_output", objs.RefKprobeXfrmOutput},
	}
	for _, a := range attach {
		kind := "kprobe"
		if a.ret {
			kind = "kretprobe"
		}
		for name, p := range s.progs {
			if p == a.prog {
				s.hooks[name] = Hook{Kind: kind, Target: a.fn}
			}
		}
		var l link.Link
		var err error
		if a.ret {
			l, err = link.Kretprobe(a.fn, a.prog, nil)
		} else {
			l, err = link.Kprobe(a.fn, a.prog, nil)
		}
		if err != nil {
			s.Close()
			closeMaps()
			return nil, fmt.Errorf("attaching the reference to %s: %w", a.fn, err)
		}
		s.links = append(s.links, l)
	}
	// The maps stay alive while the programs hold them; closing our fds
	// now leaves nothing to clean up later.
	closeMaps()
	return s, nil
}

// LoadFloor attaches an empty program (return 0) to each hook: the floor a
// program on those hooks cannot go below.
func LoadFloor(hooks []Hook) (*Set, error) {
	_ = rlimit.RemoveMemlock()
	s := &Set{progs: map[string]*ebpf.Program{}, hooks: map[string]Hook{}}
	for i, h := range hooks {
		// The kernel keeps 15 characters of a name and these programs have
		// no BTF: a short unique name ties each to its hook.
		name := fmt.Sprintf("floor_%d", i)
		p, l, err := attachEmpty(h, name)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("empty program on %s/%s: %w", h.Kind, h.Target, err)
		}
		s.progs["empty_"+h.Kind+"_"+h.Target] = p
		s.hooks[name] = h
		s.links = append(s.links, l)
	}
	return s, nil
}

func attachEmpty(h Hook, name string) (*ebpf.Program, link.Link, error) {
	spec := &ebpf.ProgramSpec{
		Name:         name,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	}
	switch h.Kind {
	case "fentry":
		spec.Type, spec.AttachType, spec.AttachTo = ebpf.Tracing, ebpf.AttachTraceFEntry, h.Target
	case "fexit":
		spec.Type, spec.AttachType, spec.AttachTo = ebpf.Tracing, ebpf.AttachTraceFExit, h.Target
	case "tp_btf":
		spec.Type, spec.AttachType, spec.AttachTo = ebpf.Tracing, ebpf.AttachTraceRawTp, h.Target
	case "kprobe", "kretprobe":
		spec.Type = ebpf.Kprobe
	case "raw_tracepoint":
		spec.Type = ebpf.RawTracepoint
	default:
		return nil, nil, errors.New("unknown program kind")
	}
	p, err := ebpf.NewProgram(spec)
	if err != nil {
		return nil, nil, err
	}
	var l link.Link
	switch h.Kind {
	case "kprobe":
		l, err = link.Kprobe(h.Target, p, nil)
	case "kretprobe":
		l, err = link.Kretprobe(h.Target, p, nil)
	case "raw_tracepoint":
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: h.Target, Program: p})
	default:
		l, err = link.AttachTracing(link.TracingOptions{Program: p})
	}
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	return p, l, nil
}

// LoadEmptyTC attaches an empty TC program (TC_ACT_UNSPEC: carry on) at
// ingress and egress of ifindex the way the wire program goes there: TCX
// links where the kernel has them (6.6+), else a clsact qdisc with cls_bpf
// filters in direct-action mode. It must run in the interface's namespace
// (TCX resolves the index there); h is a netlink handle in that namespace.
func LoadEmptyTC(h *netlink.Handle, ifindex int) (*Set, error) {
	_ = rlimit.RemoveMemlock()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "empty_tc", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		return nil, fmt.Errorf("loading the empty TC program: %w", err)
	}
	s := &Set{progs: map[string]*ebpf.Program{"empty_tc": p}, hooks: map[string]Hook{"empty_tc": {Kind: "tc"}}}
	for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: p, Attach: at, Anchor: link.Head()})
		if err != nil {
			break
		}
		s.links = append(s.links, l)
	}
	if len(s.links) == 2 {
		return s, nil
	}
	for _, l := range s.links {
		l.Close()
	}
	s.links = nil
	qdisc := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: ifindex, Parent: netlink.HANDLE_CLSACT, Handle: netlink.MakeHandle(0xffff, 0),
	}}
	if err := h.QdiscAdd(qdisc); err != nil {
		s.Close()
		return nil, fmt.Errorf("adding a clsact qdisc: %w", err)
	}
	s.closers = append(s.closers, func() { _ = h.QdiscDel(qdisc) }) // takes the filters with it
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		f := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: ifindex, Parent: parent, Handle: 1, Priority: 1,
				Protocol: unix.ETH_P_ALL},
			Fd: p.FD(), Name: "empty_tc", DirectAction: true,
		}
		if err := h.FilterAdd(f); err != nil {
			s.Close()
			return nil, fmt.Errorf("adding a cls_bpf filter: %w", err)
		}
	}
	return s, nil
}
