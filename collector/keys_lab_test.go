package collector

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// TestLabExporterHoldsNoKeys installs SAs whose keys all start with a random
// marker, runs the real exporter binary with every collector on inside their
// namespace, lets it scrape, follow SA events (which carry keys) and refresh
// its peers, and then scans every writable mapping of the process through
// /proc/PID/mem for the marker: no copy of any key may be there. The same
// scan of this test's own memory, which holds the keys it installed, must
// find them, or the scan proves nothing.
func TestLabExporterHoldsNoKeys(t *testing.T) {
	scenario.RequireVM(t)
	const sas, churn = 1000, 100
	n := scenario.NewNetns(t, "keys")
	lo, err := n.NL.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddr("10.90.0.1")
	if err := n.NL.AddrAdd(lo, &netlink.Addr{IPNet: ipNetOf(netip.PrefixFrom(local, 32))}); err != nil {
		t.Fatal(err)
	}
	marker := make([]byte, 12)
	if _, err := rand.Read(marker); err != nil {
		t.Fatal(err)
	}
	state := func(i int) *netlink.XfrmState {
		key := make([]byte, 20) // 16 key + 4 salt
		copy(key, marker)
		binary.BigEndian.PutUint32(key[12:], uint32(i))
		remote := netip.AddrFrom4([4]byte{10, 91, byte(i >> 8), byte(i)})
		src, dst := local, remote
		if i%2 == 1 {
			src, dst = remote, local
		}
		return &netlink.XfrmState{
			Src: src.AsSlice(), Dst: dst.AsSlice(), Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL,
			Spi: 0x10000 + i, Reqid: i, ReplayWindow: 32,
			Aead: &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: key, ICVLen: 128},
		}
	}
	for i := range sas {
		if err := n.NL.XfrmStateAdd(state(i)); err != nil {
			t.Fatalf("SA %d: %v", i, err)
		}
	}
	t.Cleanup(func() { _ = n.NL.XfrmStateFlush(netlink.XFRM_PROTO_ESP) })

	x := startExporter(t, n, "--collector.verdict", "--collector.wire", "--collector.sa", "--collector.policy",
		"--collector.events", "--collector.xfrm_stat", "--collector.netns.dir=")
	x.scrape(t)
	// SA notifications carry the keys: add and delete some while the
	// exporter listens, then scrape again.
	for i := sas; i < sas+churn; i++ {
		if err := n.NL.XfrmStateAdd(state(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := sas; i < sas+churn; i++ {
		if err := n.NL.XfrmStateDel(state(i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	for range 3 {
		x.scrape(t)
	}

	self := countInMemory(t, os.Getpid(), marker)
	if self == 0 {
		t.Fatal("the scan found no key in this test's own memory, which holds them: it cannot see a copy")
	}
	copies := countInMemory(t, x.cmd.Process.Pid, marker)
	if copies != 0 {
		t.Errorf("%d copies of SA keys in the exporter's writable memory, want 0", copies)
	}
	t.Logf("kernel %s: %d SAs (+%d added and deleted while listening), every collector on: %d key copies in the exporter's memory (%d in this test's own, which installed them)",
		scenario.Kernel(), sas, churn, copies, self)
}

// countInMemory counts the occurrences of pattern in the writable mappings
// of process pid, read through /proc/PID/mem.
func countInMemory(t *testing.T, pid int, pattern []byte) int {
	t.Helper()
	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = maps.Close() }()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = mem.Close() }()
	count := 0
	sc := bufio.NewScanner(maps)
	buf := make([]byte, 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || len(f[1]) < 2 || f[1][1] != 'w' {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		// Chunks overlap by len(pattern)-1 so no occurrence is split;
		// unreadable pages ([vvar], guard pages) are skipped.
		for off := start; off < end; {
			n := min(uint64(len(buf)), end-off)
			got, _ := mem.ReadAt(buf[:n], int64(off))
			if got <= 0 {
				off += 4096
				continue
			}
			count += bytes.Count(buf[:got], pattern)
			if uint64(got) < n || off+uint64(got) >= end {
				off += uint64(got)
				continue
			}
			off += uint64(got) - uint64(len(pattern)-1)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return count
}

func ipNetOf(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
