package wire

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/pin"
)

// Mode is how the programs are attached to an interface.
type Mode string

const (
	// ModeTCX uses tcx links (Linux 6.6+): owned by the exporter's file
	// descriptors, gone when it exits, placed first so they see every
	// packet before other programs decide.
	ModeTCX Mode = "tcx"
	// ModeTC uses a clsact qdisc with cls_bpf filters, for older kernels.
	ModeTC Mode = "tc"
)

// The cls_bpf filters get a priority and handle of their own so they sit
// beside other filters instead of replacing them: a low priority number runs
// early (before tc's automatic priorities, 49152 and down). Their names are
// the exporter's tag: they tell a human running `tc filter show` whose they
// are, and a restarted exporter which filters a killed one left behind.
const (
	tcPriority = 0x15ec
	tcHandle   = 0x15ec
)

var filterNames = map[Direction]string{Ingress: "ipsec_exporter_wire_ingress", Egress: "ipsec_exporter_wire_egress"}

// tcParents are the clsact hooks, by direction.
var tcParents = map[Direction]uint32{Ingress: netlink.HANDLE_MIN_INGRESS, Egress: netlink.HANDLE_MIN_EGRESS}

// attachment is one interface's pair of programs, ingress and egress.
type attachment interface {
	Close() error
}

type tcxAttachment struct {
	links []link.Link
}

// attachTCX attaches both programs with tcx links, pinned in pins. A link
// an earlier exporter pinned there is given the new program in one step
// (BPF_LINK_UPDATE): no packet goes uncounted or counted twice. It runs on
// a thread in the target namespace: the kernel resolves the ifindex there.
func attachTCX(o *instance, ns *netns.NsHandle, ifindex int, pins pin.Dir) (attachment, error) {
	a := &tcxAttachment{}
	err := inNetns(ns, func() error {
		for _, d := range []Direction{Ingress, Egress} {
			at := ebpf.AttachTCXIngress
			if d == Egress {
				at = ebpf.AttachTCXEgress
			}
			name := "link_" + d.String()
			if l := pinnedTCX(pins, name, ifindex, at); l != nil {
				if err := l.Update(o.program(d)); err == nil {
					a.links = append(a.links, l)
					continue
				}
				_ = l.Close()
			}
			l, err := link.AttachTCX(link.TCXOptions{
				Interface: ifindex,
				Program:   o.program(d),
				Attach:    at,
				Anchor:    link.Head(),
			})
			if err != nil {
				return fmt.Errorf("tcx %s: %w", d, err)
			}
			a.links = append(a.links, l)
			if err := pins.PinLink(name, l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = a.Close()
		return nil, err
	}
	return a, nil
}

// pinnedTCX is the tcx link pinned as name when it is attached where we
// attach, else nil (a pin that is no such link is removed: the interface
// index was reused, or the pin is not ours).
func pinnedTCX(pins pin.Dir, name string, ifindex int, at ebpf.AttachType) link.Link {
	l, err := pins.Link(name)
	if l == nil {
		if err != nil {
			_ = pins.Remove(name)
		}
		return nil
	}
	info, err := l.Info()
	if err == nil {
		if tcx := info.TCX(); tcx != nil && tcx.Ifindex == uint32(ifindex) && ebpf.AttachType(tcx.AttachType) == at {
			return l
		}
	}
	_ = l.Close()
	_ = pins.Remove(name)
	return nil
}

// Close closes the links: unpinned ones detach, pinned ones stay attached
// and counting into the pinned counters for the next exporter.
func (a *tcxAttachment) Close() error {
	var errs []error
	for _, l := range a.links {
		errs = append(errs, l.Close())
	}
	a.links = nil
	return errors.Join(errs...)
}

type tcAttachment struct {
	h            *netlink.Handle
	ifindex      int
	createdQdisc bool
	filters      []*netlink.BpfFilter
}

// attachTC adds a clsact qdisc where there is none and a cls_bpf filter in
// direct-action mode at ingress and egress. Filters of others stay as they
// are. (Filters of ours that a killed exporter left are gone already:
// removeStale runs before the first attach.)
func attachTC(o *instance, h *netlink.Handle, ifindex int) (attachment, error) {
	a := &tcAttachment{h: h, ifindex: ifindex}
	dev := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}
	has, err := hasClsact(h, dev)
	if err != nil {
		return nil, err
	}
	if !has {
		err := h.QdiscAdd(clsact(ifindex))
		switch {
		case err == nil:
			a.createdQdisc = true
		case errors.Is(err, unix.EEXIST): // someone else was quicker
		default:
			return nil, fmt.Errorf("adding clsact qdisc: %w", err)
		}
	}
	for _, d := range []Direction{Ingress, Egress} {
		parent := tcParents[d]
		f := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{
				LinkIndex: ifindex,
				Parent:    parent,
				Handle:    tcHandle,
				Priority:  tcPriority,
				Protocol:  unix.ETH_P_ALL,
			},
			Fd:           o.program(d).FD(),
			Name:         filterNames[d],
			DirectAction: true,
		}
		if err := checkSlotFree(h, dev, parent, filterNames[d]); err != nil {
			_ = a.Close()
			return nil, err
		}
		if err := h.FilterReplace(f); err != nil {
			_ = a.Close()
			return nil, fmt.Errorf("adding cls_bpf filter at %s: %w", d, err)
		}
		a.filters = append(a.filters, f)
	}
	return a, nil
}

// Close removes our filters, and the clsact qdisc when we added it and no
// other filter came to live in it meanwhile. An interface that is gone took
// everything with it: that is not an error.
func (a *tcAttachment) Close() error {
	var errs []error
	for _, f := range a.filters {
		if err := a.h.FilterDel(f); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("deleting cls_bpf filter: %w", err))
		}
	}
	a.filters = nil
	if a.createdQdisc {
		a.createdQdisc = false
		dev := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: a.ifindex}}
		empty := true
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			fs, err := a.h.FilterList(dev, parent)
			if err != nil {
				empty = false
				if !gone(err) {
					errs = append(errs, fmt.Errorf("listing filters: %w", err))
				}
			}
			if len(fs) > 0 {
				empty = false
			}
		}
		if empty {
			if err := a.h.QdiscDel(clsact(a.ifindex)); err != nil && !gone(err) {
				errs = append(errs, fmt.Errorf("deleting clsact qdisc: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

func clsact(ifindex int) *netlink.Clsact {
	return &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: ifindex,
		Parent:    netlink.HANDLE_CLSACT,
		Handle:    netlink.MakeHandle(0xffff, 0),
	}}
}

// removeStale removes the filters of ours that an exporter killed before
// it could detach left on an interface (tcx links die with their owner;
// cls_bpf filters stay), so that nothing is counted twice and nothing stays
// on an interface no longer selected. A clsact qdisc that held nothing but
// our filters was made by an exporter: it goes with them, and an attach
// that follows makes it anew (and removes it at Close). It reports whether
// it removed anything.
func removeStale(h *netlink.Handle, ifindex int) (bool, error) {
	dev := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}
	has, err := hasClsact(h, dev)
	if err != nil || !has {
		return false, err
	}
	removed, others := false, false
	var errs []error
	for _, d := range []Direction{Ingress, Egress} {
		fs, err := h.FilterList(dev, tcParents[d])
		if err != nil {
			return removed, fmt.Errorf("listing filters: %w", err)
		}
		for _, f := range fs {
			bf, ok := f.(*netlink.BpfFilter)
			if !ok || bf.Name != filterNames[d] {
				others = true
				continue
			}
			if err := h.FilterDel(f); err != nil && !gone(err) {
				errs = append(errs, fmt.Errorf("deleting a stale filter: %w", err))
				continue
			}
			removed = true
		}
	}
	if removed && !others && len(errs) == 0 {
		if err := h.QdiscDel(clsact(ifindex)); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("deleting the clsact qdisc of stale filters: %w", err))
		}
	}
	return removed, errors.Join(errs...)
}

func hasClsact(h *netlink.Handle, dev netlink.Link) (bool, error) {
	qdiscs, err := h.QdiscList(dev)
	if err != nil {
		return false, fmt.Errorf("listing qdiscs: %w", err)
	}
	for _, q := range qdiscs {
		if q.Type() == "clsact" {
			return true, nil
		}
	}
	return false, nil
}

// checkSlotFree refuses to replace a filter at our priority and handle that
// is not ours.
func checkSlotFree(h *netlink.Handle, dev netlink.Link, parent uint32, name string) error {
	fs, err := h.FilterList(dev, parent)
	if err != nil {
		return fmt.Errorf("listing filters: %w", err)
	}
	for _, f := range fs {
		attrs := f.Attrs()
		if attrs.Priority != tcPriority || attrs.Handle != tcHandle {
			continue
		}
		if bf, ok := f.(*netlink.BpfFilter); !ok || bf.Name != name {
			return fmt.Errorf("filter priority %#x handle %#x is taken by another filter", tcPriority, tcHandle)
		}
	}
	return nil
}

func gone(err error) bool {
	return errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL)
}

// inNetns runs fn on an OS thread in namespace ns (nil: the current one).
// The thread is dropped if it cannot be switched back.
func inNetns(ns *netns.NsHandle, fn func() error) error {
	if ns == nil {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("getting namespace: %w", err)
			return
		}
		defer func() { _ = orig.Close() }()
		if err := netns.Set(*ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering namespace: %w", err)
			return
		}
		errc <- fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return <-errc
}
