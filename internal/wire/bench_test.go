package wire

import (
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// BenchmarkClassify runs the egress program on typical frames with
// BPF_PROG_TEST_RUN, next to an empty TC program (return TC_ACT_UNSPEC) as
// the baseline; the difference is the wire program's cost per packet. The
// syscall overhead is amortised by the kernel's repeat loop.
func BenchmarkClassify(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (CAP_BPF)")
	}
	o, err := Load(0)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = o.Close() }()
	inst, err := o.instance(0, true, "")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = inst.Close() }()
	if _, err := o.SetPeers(map[uint32][]netip.Addr{0: {peer4}}); err != nil {
		b.Fatal(err)
	}
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = empty.Close() }()
	frames := map[string][]byte{
		"esp":            ether(0x0800, ipv4(protoESP, local4, peer4, 0, false, esp(1, 1400))),
		"esp_in_udp":     ether(0x0800, ipv4(protoUDP, local4, peer4, 0, false, udp(4500, 4500, esp(1, 1400)))),
		"plaintext":      ether(0x0800, ipv4(protoTCP, local4, other4, 0, false, make([]byte, 1400))),
		"plaintext_peer": ether(0x0800, ipv4(protoTCP, local4, peer4, 0, false, make([]byte, 1400))),
		"ipv6_ext_esp":   ether(0x86dd, ipv6(0, local6, peer6, ext6(60, ext6(protoESP, esp(1, 1400))))),
	}
	run := func(b *testing.B, p *ebpf.Program, frame []byte) {
		_, per, err := p.Benchmark(frame, b.N, b.ResetTimer)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(per.Nanoseconds()), "ns/packet")
	}
	b.Run("empty", func(b *testing.B) { run(b, empty, frames["esp"]) })
	for name, f := range frames {
		b.Run(name, func(b *testing.B) { run(b, inst.program(Egress), f) })
	}
}
