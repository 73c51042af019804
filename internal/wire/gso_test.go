package wire

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tcpSegs reads Tcp InSegs, and OutSegs plus RetransSegs, of a namespace
// from /proc/net/snmp: OutSegs leaves out retransmitted segments (RFC 4022
// tcpOutSegs), which a loaded machine does send and the wire does carry.
func tcpSegs(t *testing.T, ns string) (in, out uint64) {
	t.Helper()
	text := run(t, "ip", "netns", "exec", ns, "cat", "/proc/net/snmp")
	var header []string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "Tcp:" {
			continue
		}
		if header == nil {
			header = fields
			continue
		}
		for i, name := range header {
			v, _ := strconv.ParseUint(fields[i], 10, 64)
			switch name {
			case "InSegs":
				in = v
			case "OutSegs", "RetransSegs":
				out += v
			}
		}
	}
	return in, out
}

// TestWireGSO: a bulk TCP transfer crosses veth as GSO/GRO aggregates; the
// program counts their segments, so its plaintext packets equal the kernel's
// own TCP segment counters on both ends.
func TestWireGSO(t *testing.T) {
	p := newPair(t)
	run(t, "ip", "-n", p.nameA, "addr", "add", "10.98.0.1/24", "dev", "wa")
	run(t, "ip", "-n", p.nameB, "addr", "add", "10.98.0.2/24", "dev", "wb")
	mA, mB := start(t, p.nsA, ModeTCX), start(t, p.nsB, ModeTCX)

	var ln net.Listener
	if err := inNetns(&p.nsB, func() (err error) { ln, err = net.Listen("tcp4", "10.98.0.2:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	_, outA0 := tcpSegs(t, p.nameA)
	_, outB0 := tcpSegs(t, p.nameB)
	done := make(chan int64)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		_ = c.Close()
		done <- n
	}()
	var conn net.Conn
	if err := inNetns(&p.nsA, func() (err error) { conn, err = net.Dial("tcp4", ln.Addr().String()); return err }); err != nil {
		t.Fatal(err)
	}
	const size = 8 << 20
	if _, err := conn.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close()
	if n := <-done; n != size {
		t.Fatalf("received %d bytes, want %d", n, size)
	}
	// The sender's OutSegs counts segments (tcp_skb_pcount); the
	// receiver's InSegs counts a GRO aggregate once, so it is no reference.
	// The connection's last segments may still be in flight: sample until
	// the OutSegs counters stand still around a reading of the wire
	// counters that matches them, or three seconds pass.
	type sample struct{ aOut, bIn, bOut, aIn, outA, outB uint64 }
	read := func() (sample, bool) {
		_, a1 := tcpSegs(t, p.nameA)
		_, b1 := tcpSegs(t, p.nameB)
		s := sample{
			aOut: wireCount(t, mA, Egress, ClassPlaintext), bIn: wireCount(t, mB, Ingress, ClassPlaintext),
			bOut: wireCount(t, mB, Egress, ClassPlaintext), aIn: wireCount(t, mA, Ingress, ClassPlaintext),
			outA: a1 - outA0, outB: b1 - outB0,
		}
		_, a2 := tcpSegs(t, p.nameA)
		_, b2 := tcpSegs(t, p.nameB)
		still := a1 == a2 && b1 == b2
		return s, still && s.aOut == s.outA && s.bIn == s.outA && s.bOut == s.outB && s.aIn == s.outB
	}
	s, ok := read()
	for deadline := time.Now().Add(3 * time.Second); !ok && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		s, ok = read()
	}
	if !ok {
		t.Errorf("A egress %d, B ingress %d plaintext packets, A's OutSegs moved %d; B egress %d, A ingress %d, B's OutSegs moved %d",
			s.aOut, s.bIn, s.outA, s.bOut, s.aIn, s.outB)
	}
	t.Logf("%d MiB over veth: A sent %d TCP segments, B %d; wire A egress %d, B ingress %d, B egress %d, A ingress %d",
		size>>20, s.outA, s.outB, s.aOut, s.bIn, s.bOut, s.aIn)
}

// wireCount is the packets of one direction and class on a monitor's
// interfaces.
func wireCount(t *testing.T, m *Monitor, d Direction, c Class) uint64 {
	t.Helper()
	got, err := m.WireCounters()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for k, v := range got {
		if k.Direction == d && k.Class == c {
			n += v.Packets
		}
	}
	return n
}
