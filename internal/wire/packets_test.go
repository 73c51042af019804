package wire

import (
	"encoding/binary"
	"net/netip"
)

// Packet builders for the classifier tests: just enough of each header for
// the wire program and for the kernel to deliver the packet.

const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoESP    = 50
	protoAH     = 51
	protoICMPv6 = 58
)

func ether(ethertype uint16, l3 []byte) []byte {
	b := make([]byte, 14, 14+len(l3))
	copy(b[0:6], []byte{0x02, 0, 0, 0, 0, 2})
	copy(b[6:12], []byte{0x02, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(b[12:], ethertype)
	return append(b, l3...)
}

// ipv4 builds an IPv4 header with a correct checksum; fragOffset is in
// 8-byte units and more sets the MF flag.
func ipv4(proto byte, src, dst netip.Addr, fragOffset uint16, more bool, payload []byte) []byte {
	b := make([]byte, 20, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(b[4:], 0x1234)
	frag := fragOffset & 0x1fff
	if more {
		frag |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:], frag)
	b[8] = 64
	b[9] = proto
	s4, d4 := src.As4(), dst.As4()
	copy(b[12:16], s4[:])
	copy(b[16:20], d4[:])
	binary.BigEndian.PutUint16(b[10:], checksum(b))
	return append(b, payload...)
}

func ipv6(nexthdr byte, src, dst netip.Addr, payload []byte) []byte {
	b := make([]byte, 40, 40+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6] = nexthdr
	b[7] = 64
	s, d := src.As16(), dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	return append(b, payload...)
}

// ext6 builds an IPv6 hop-by-hop, routing or destination options header of
// 8 bytes.
func ext6(nexthdr byte, payload []byte) []byte {
	b := []byte{nexthdr, 0, 1, 4, 0, 0, 0, 0} // PadN option
	return append(b, payload...)
}

// frag6 builds an IPv6 fragment header; offset in 8-byte units.
func frag6(nexthdr byte, offset uint16, more bool, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	b[0] = nexthdr
	v := offset << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[2:], v)
	binary.BigEndian.PutUint32(b[4:], 0xabcd)
	return append(b, payload...)
}

// udp builds a UDP header with a zero checksum (valid for IPv4; the kernel
// accepts it for the packets these tests deliver over IPv6 only when they are
// not delivered to a socket, which they are not).
func udp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

// esp builds an ESP header and a fake encrypted body.
func esp(spi uint32, body int) []byte {
	b := make([]byte, 8+body)
	binary.BigEndian.PutUint32(b[0:], spi)
	binary.BigEndian.PutUint32(b[4:], 1)
	for i := 8; i < len(b); i++ {
		b[i] = byte(i)
	}
	return b
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = (s & 0xffff) + s>>16
	}
	return ^uint16(s)
}
