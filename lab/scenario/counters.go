package scenario

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os/exec"
	"sort"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// Counters is a set of named kernel counters, e.g. /proc/net/xfrm_stat.
type Counters map[string]uint64

// Sub returns c - before for every counter that changed.
func (c Counters) Sub(before Counters) Counters {
	d := Counters{}
	for k, v := range c {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

// String lists the counters sorted by name.
func (c Counters) String() string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%d", k, c[k])
	}
	return b.String()
}

// XfrmStat reads the namespace's /proc/net/xfrm_stat (it is per namespace).
func (n *Netns) XfrmStat(t TB) Counters {
	t.Helper()
	b, err := n.ReadFile("/proc/thread-self/net/xfrm_stat")
	if err != nil {
		t.Fatalf("%s: xfrm_stat: %v", n.Name, err)
	}
	c := Counters{}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			t.Fatalf("%s: xfrm_stat line %q: %v", n.Name, s.Text(), err)
		}
		c[f[0]] = v
	}
	return c
}

// State returns the namespace's SA for sa (matched by SPI and destination).
func (n *Netns) State(t TB, sa SA) netlink.XfrmState {
	t.Helper()
	s, ok := n.LookupState(t, sa)
	if !ok {
		t.Fatalf("%s: no SA spi 0x%x dst %s", n.Name, sa.SPI, sa.Dst)
	}
	return s
}

// LookupState is State without failing when the SA is absent (expired SAs
// are deleted by the kernel).
func (n *Netns) LookupState(t TB, sa SA) (netlink.XfrmState, bool) {
	t.Helper()
	s, ok, err := n.lookupState(sa)
	if err != nil {
		t.Fatal(err)
	}
	return s, ok
}

func (n *Netns) lookupState(sa SA) (netlink.XfrmState, bool, error) {
	states, err := n.NL.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		return netlink.XfrmState{}, false, fmt.Errorf("%s: list SAs: %w", n.Name, err)
	}
	for _, s := range states {
		dst, _ := netip.AddrFromSlice(s.Dst)
		if uint32(s.Spi) == sa.SPI && dst.Unmap() == sa.Dst {
			return s, true, nil
		}
	}
	return netlink.XfrmState{}, false, nil
}

// SACounters are an SA's statistics as counters: packets, bytes, replay,
// integrity_failed, replay_window.
func (n *Netns) SACounters(t TB, sa SA) Counters {
	t.Helper()
	s, ok := n.LookupState(t, sa)
	if !ok {
		return Counters{}
	}
	st := s.Statistics
	return Counters{
		"packets": st.Packets, "bytes": st.Bytes, "replay": uint64(st.Replay),
		"integrity_failed": uint64(st.Failed), "replay_window": uint64(st.ReplayWindow),
	}
}

// IP runs Debian's ip with args in the namespace and returns its output,
// e.g. n.IP(t, "-s", "xfrm", "state") for logs.
func (n *Netns) IP(t TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(IPBin(), append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %s: %v\n%s", n.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
