package wire

import (
	"os/exec"
	"regexp"
	"testing"
)

// TestWireVLAN: the kernel untags before the ingress hook, so a tagged
// frame is classified by its inner protocol at ingress. At egress, a frame
// whose tag is in the packet (a raw socket, or a VLAN device with
// reorder_hdr off) is non_ip; through a VLAN device with the default
// reorder_hdr the tag stays in skb metadata and the frame is classified by
// its inner protocol (needs the 8021q module).
func TestWireVLAN(t *testing.T) {
	frame := ether(0x0800, ipv4(protoESP, local4, peer4, 0, false, esp(0x3000, 48)))
	only := regexp.MustCompile(`^(wa|wb)$`)
	setup := func(t *testing.T) (*pair, *Monitor, *Monitor) {
		p := newPair(t)
		mA, err := Start(Config{Netns: &p.nsA, Interfaces: only, Mode: ModeTCX})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = mA.Close() })
		mB, err := Start(Config{Netns: &p.nsB, Interfaces: only, Mode: ModeTCX})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = mB.Close() })
		return p, mA, mB
	}
	check := func(t *testing.T, mA, mB *Monitor, egress Class, n uint64) {
		t.Helper()
		waitFor(t, "wb to count every frame", func() bool { return wireCount(t, mB, Ingress, ClassESP) >= n })
		if got := wireCount(t, mA, Egress, egress); got != n {
			t.Errorf("wa egress %s: %d packets, want %d", egress, got, n)
		}
		if got := wireCount(t, mB, Ingress, ClassESP); got != n {
			t.Errorf("wb ingress esp: %d packets, want %d", got, n)
		}
		if got := wireCount(t, mB, Ingress, ClassNonIP); got != 0 {
			t.Errorf("wb ingress non_ip: %d packets, want 0", got)
		}
	}

	t.Run("tag in packet", func(t *testing.T) {
		p, mA, mB := setup(t)
		tagged := append(append(append([]byte(nil), frame[:12]...), 0x81, 0x00, 0x00, 0x0a), frame[12:]...)
		p.sender(t).send(t, tagged, 4)
		check(t, mA, mB, ClassNonIP, 4)
	})
	t.Run("vlan device", func(t *testing.T) {
		p, mA, mB := setup(t)
		out, err := exec.Command("ip", "-n", p.nameA, "link", "add", "link", "wa", "name", "wa.10", "type", "vlan", "id", "10").CombinedOutput()
		if err != nil {
			t.Skipf("this kernel cannot create VLAN devices (8021q module): %v: %s", err, out)
		}
		run(t, "ip", "-n", p.nameA, "link", "set", "wa.10", "up")
		s := p.sender(t)
		s.ifindex = ifindex(t, p.nsA, "wa.10")
		s.send(t, frame, 6)
		check(t, mA, mB, ClassESP, 6)
	})
}
