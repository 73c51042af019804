package wire

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// leaveFilters puts cls_bpf filters named as ours, at our priority and
// handle, on ifindex, in a clsact qdisc made for them: what an exporter
// killed in tc mode leaves behind.
func leaveFilters(t *testing.T, h *netlink.Handle, ifindex int, w *witness) {
	t.Helper()
	if err := h.QdiscAdd(clsact(ifindex)); err != nil {
		t.Fatal(err)
	}
	for _, d := range []Direction{Ingress, Egress} {
		if err := h.FilterAdd(&netlink.BpfFilter{
			FilterAttrs:  netlink.FilterAttrs{LinkIndex: ifindex, Parent: tcParents[d], Handle: tcHandle, Priority: tcPriority, Protocol: unix.ETH_P_ALL},
			Fd:           w.prog.FD(),
			Name:         filterNames[d],
			DirectAction: true,
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStaleFiltersRemoved: a monitor that starts finds the filters a
// killed exporter left on every interface of its namespace: on one it no
// longer selects they go, with the clsact qdisc that held only them; on one
// it selects they are replaced by its own, not doubled; a qdisc that holds
// another tool's filter too stays.
func TestStaleFiltersRemoved(t *testing.T) {
	p := newPair(t)
	run(t, "ip", "-n", p.nameA, "link", "add", "old0", "type", "veth", "peer", "name", "old1")
	run(t, "ip", "-n", p.nameA, "link", "set", "old0", "up")
	run(t, "ip", "-n", p.nameA, "link", "set", "old1", "up")
	h := handle(t, p.nsA)
	w := newWitness(t)
	for _, name := range []string{"wa", "old0", "old1"} {
		leaveFilters(t, h, ifindex(t, p.nsA, name), w)
	}
	// old1's qdisc also holds another tool's filter.
	if err := h.FilterAdd(&netlink.BpfFilter{
		FilterAttrs:  netlink.FilterAttrs{LinkIndex: ifindex(t, p.nsA, "old1"), Parent: netlink.HANDLE_MIN_INGRESS, Handle: 1, Priority: 1, Protocol: unix.ETH_P_ALL},
		Fd:           w.prog.FD(),
		Name:         "someone_else",
		DirectAction: true,
	}); err != nil {
		t.Fatal(err)
	}

	m, err := Start(Config{Netns: &p.nsA, Mode: ModeTC, Interfaces: regexp.MustCompile(`^wa$`)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	ours := func(name string) []string {
		var out []string
		for _, s := range tcState(t, p.nsA, ifindex(t, p.nsA, name)) {
			if strings.Contains(s, "ipsec_exporter_wire") || strings.HasPrefix(s, "qdisc clsact") {
				out = append(out, s)
			}
		}
		return out
	}
	if got := ours("old0"); len(got) != 0 {
		t.Errorf("old0, not selected: %v left, want nothing", got)
	}
	want1 := []string{"qdisc clsact ffff0000 parent fffffff1"}
	if got := ours("old1"); !slices.Equal(got, want1) {
		t.Errorf("old1, not selected, another tool's filter in the qdisc: %v, want only %v", got, want1)
	}
	if got := ours("wa"); len(got) != 3 {
		t.Errorf("wa, selected: %v, want the qdisc and one filter of ours per direction", got)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := ours("wa"); len(got) != 0 {
		t.Errorf("wa after Close: %v, want nothing (the qdisc held only the stale filters of ours: ours to remove)", got)
	}
}
