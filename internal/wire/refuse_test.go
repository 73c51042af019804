package wire

import (
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestAttachRefusesForeignFilter: a filter of someone else at our cls_bpf
// priority and handle is left alone; that interface is reported as not
// attached, with the reason, and the others are counted as usual.
func TestAttachRefusesForeignFilter(t *testing.T) {
	p := newPair(t)
	run(t, "ip", "-n", p.nameA, "link", "add", "other0", "type", "veth", "peer", "name", "other1")
	run(t, "ip", "-n", p.nameA, "link", "set", "other0", "up")
	run(t, "ip", "-n", p.nameA, "link", "set", "other1", "up")
	w := newWitness(t)
	h := handle(t, p.nsA)
	if err := h.QdiscAdd(&netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: p.ifA, Parent: netlink.HANDLE_CLSACT, Handle: netlink.MakeHandle(0xffff, 0),
	}}); err != nil {
		t.Fatal(err)
	}
	if err := h.FilterAdd(&netlink.BpfFilter{
		FilterAttrs:  netlink.FilterAttrs{LinkIndex: p.ifA, Parent: netlink.HANDLE_MIN_EGRESS, Handle: tcHandle, Priority: tcPriority, Protocol: unix.ETH_P_ALL},
		Fd:           w.prog.FD(),
		Name:         "someone_else",
		DirectAction: true,
	}); err != nil {
		t.Fatal(err)
	}
	before := tcState(t, p.nsA, p.ifA)

	m := start(t, p.nsA, ModeTC)
	var attached []string
	for _, i := range m.Interfaces() {
		switch {
		case i.Attached:
			attached = append(attached, i.Name)
		case i.Name != "wa":
			t.Errorf("%s not attached: %v", i.Name, i.Err)
		case i.Err == nil || !strings.Contains(i.Err.Error(), "taken by another filter"):
			t.Errorf("wa: error %v, want the slot taken by another filter", i.Err)
		}
	}
	if !slices.Equal(attached, []string{"other0", "other1"}) {
		t.Errorf("attached to %v, want [other0 other1]", attached)
	}
	if got := tcState(t, p.nsA, p.ifA); !slices.Equal(got, before) {
		t.Errorf("wa changed by a failed attach:\n%v\nbefore:\n%v", got, before)
	}
	s := p.sender(t)
	s.send(t, ether(0x0806, make([]byte, 28)), 3)
	if got := w.seen(t); got != 3 {
		t.Errorf("the foreign filter saw %d frames, want 3", got)
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if got := tcState(t, p.nsA, p.ifA); !slices.Equal(got, before) {
		t.Errorf("wa after close:\n%v\nbefore:\n%v", got, before)
	}
}
