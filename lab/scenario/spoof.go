package scenario

import "time"

// SpoofedESP makes n copies of a captured Ethernet/IPv4/ESP frame, each
// with another source address (198.18.0.0/15, the benchmarking range) and
// SPI: what an attacker without credentials can send a node. The receiver
// has no SA for them (decrypt no_state, XfrmInNoStates), and each has a
// source address of its own.
func SpoofedESP(t TB, frame []byte, n int) [][]byte {
	t.Helper()
	if len(frame) < 14+20+8 || frame[12] != 0x08 || frame[13] != 0x00 || frame[14+9] != 50 {
		t.Fatalf("captured frame is not Ethernet/IPv4/ESP: % x", frame[:min(len(frame), 40)])
	}
	if n > 1<<17 {
		t.Fatalf("%d spoofed frames: 198.18.0.0/15 has 131072 addresses", n)
	}
	ihl := int(frame[14]&0x0f) * 4
	out := make([][]byte, n)
	for i := range out {
		f := append([]byte(nil), frame...)
		ip := f[14 : 14+ihl]
		ip[12], ip[13], ip[14], ip[15] = 198, 18+byte(i>>16&1), byte(i>>8), byte(i)
		ip[10], ip[11] = 0, 0
		var sum uint32
		for j := 0; j < ihl; j += 2 {
			sum += uint32(ip[j])<<8 | uint32(ip[j+1])
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		ip[10], ip[11] = byte(^sum>>8), byte(^sum)
		spi := 0x5f000000 + uint32(i)
		esp := f[14+ihl:]
		esp[0], esp[1], esp[2], esp[3] = byte(spi>>24), byte(spi>>16), byte(spi>>8), byte(spi)
		out[i] = f
	}
	return out
}

// SendFlood sends frames out of n's link as fast as the receiver takes
// them: 250 at a time, within its receive backlog (netdev_max_backlog,
// 1000), so that the receiver's kernel sees every one instead of dropping
// them before XFRM.
func (n *Node) SendFlood(t TB, frames [][]byte) {
	t.Helper()
	for i := 0; i < len(frames); i += 250 {
		n.SendFrames(t, frames[i:min(i+250, len(frames))])
		time.Sleep(100 * time.Millisecond)
	}
}
