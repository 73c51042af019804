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

// tcpSegs reads Tcp InSegs and OutSegs of a namespace from /proc/net/snmp.
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
			case "OutSegs":
				out = v
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
	var outA, outB uint64
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		// The last ACKs may still be on their way.
		_, outA = tcpSegs(t, p.nameA)
		_, outB = tcpSegs(t, p.nameB)
		if wireCount(t, mB, Ingress, ClassPlaintext) == outA-outA0 && wireCount(t, mA, Ingress, ClassPlaintext) == outB-outB0 {
			break
		}
	}
	for _, c := range []struct {
		where string
		m     *Monitor
		d     Direction
		want  uint64
	}{
		{"A egress", mA, Egress, outA - outA0}, {"B ingress", mB, Ingress, outA - outA0},
		{"B egress", mB, Egress, outB - outB0}, {"A ingress", mA, Ingress, outB - outB0},
	} {
		if got := wireCount(t, c.m, c.d, ClassPlaintext); got != c.want {
			t.Errorf("%s plaintext %d packets, want %d (the sender's OutSegs)", c.where, got, c.want)
		}
	}
	t.Logf("%d MiB over veth: A sent %d TCP segments, B %d; wire counted the same on both ends", size>>20, outA-outA0, outB-outB0)
}

// wireCount is the packets of one direction and class on a monitor's
// interfaces.
func wireCount(t *testing.T, m *Monitor, d Direction, c Class) uint64 {
	t.Helper()
	got, err := m.Objects().WireCounters()
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
