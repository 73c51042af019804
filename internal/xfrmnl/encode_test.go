package xfrmnl

import (
	"net/netip"

	"golang.org/x/sys/unix"
)

// Encoders for the kernel's structures, the inverse of the decoders, so the
// tests can build messages byte by byte as the kernel lays them out.

func putAddr(b []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(b, v[:])
		return
	}
	v := a.As16()
	copy(b, v[:])
}

func encodeLimits(b []byte, l Limits) {
	for i, v := range []uint64{l.SoftBytes, l.HardBytes, l.SoftPackets, l.HardPackets,
		l.SoftAddSeconds, l.HardAddSeconds, l.SoftUseSeconds, l.HardUseSeconds} {
		ne.PutUint64(b[i*8:], v)
	}
}

// encodeUsersaInfo lays out struct xfrm_usersa_info.
func encodeUsersaInfo(sa SA) []byte {
	b := make([]byte, sizeofUsersaInfo)
	putAddr(b[56:], sa.Dst)
	b[72], b[73], b[74], b[75] = byte(sa.SPI>>24), byte(sa.SPI>>16), byte(sa.SPI>>8), byte(sa.SPI)
	b[76] = sa.Proto
	putAddr(b[80:], sa.Src)
	encodeLimits(b[96:], sa.Limits)
	ne.PutUint64(b[160:], sa.Bytes)
	ne.PutUint64(b[168:], sa.Packets)
	ne.PutUint64(b[176:], sa.AddTime)
	ne.PutUint64(b[184:], sa.UseTime)
	ne.PutUint32(b[192:], sa.ReplayWindowDrops)
	ne.PutUint32(b[196:], sa.ReplayDrops)
	ne.PutUint32(b[200:], sa.IntegrityFailures)
	ne.PutUint32(b[208:], sa.Reqid)
	ne.PutUint16(b[212:], sa.Family)
	b[214] = sa.Mode
	b[216] = sa.Flags
	return b
}

func encodeAttr(typ uint16, data []byte) []byte {
	a := attr{typ: typ, data: data}
	return appendAttr(nil, a)
}

// algo is an xfrm_algo(_auth/_aead) with a name and a key of keyLen bytes
// filled with 0xEE (so a test can check it never comes out).
func algo(name string, extra int, keyLen int) []byte {
	b := make([]byte, sizeofAlgoName+4+extra+keyLen)
	copy(b, name)
	ne.PutUint32(b[sizeofAlgoName:], uint32(keyLen*8))
	for i := sizeofAlgoName + 4 + extra; i < len(b); i++ {
		b[i] = 0xEE
	}
	return b
}

func u64(v uint64) []byte { b := make([]byte, 8); ne.PutUint64(b, v); return b }
func u32(v uint32) []byte { b := make([]byte, 4); ne.PutUint32(b, v); return b }

// sampleSA is a realistic outbound AEAD SA message with ESN replay state.
func sampleSA() (SA, []byte) {
	sa := SA{
		Family: unix.AF_INET, Src: netip.MustParseAddr("10.77.0.1"), Dst: netip.MustParseAddr("10.77.0.2"),
		SPI: 0x10ab, Proto: unix.IPPROTO_ESP, Mode: 1, Reqid: 4267, Flags: saFlagESN, ESN: true,
		Limits: Limits{SoftBytes: 1000, HardBytes: 2000, SoftPackets: xfrmInf, HardPackets: 50, SoftAddSeconds: 30, HardAddSeconds: 60},
		Bytes:  840, Packets: 10, AddTime: 1700000000, UseTime: 1700000005, LastUsed: 1700000009,
		ReplayWindowDrops: 1, ReplayDrops: 2, IntegrityFailures: 3,
		HaveReplay: true, OSeq: 5<<32 | 10, Seq: 0,
		AEAD: "rfc4106(gcm(aes))", EncapType: 2, Dir: SADirOut, Mark: 0xd00, MarkMask: 0xf00, IfID: 7,
	}
	b := encodeUsersaInfo(sa)
	esn := make([]byte, sizeofReplayESN+4*4)
	ne.PutUint32(esn[0:], 4)
	ne.PutUint32(esn[4:], uint32(sa.OSeq))
	ne.PutUint32(esn[12:], uint32(sa.OSeq>>32))
	ne.PutUint32(esn[20:], 128)
	encap := make([]byte, sizeofEncapTmpl)
	ne.PutUint16(encap[0:], 2)
	for _, a := range [][]byte{
		encodeAttr(xfrmaLastUsed, u64(sa.LastUsed)),
		encodeAttr(xfrmaAlgAEAD, algo(sa.AEAD, 4, 20)),
		encodeAttr(xfrmaEncap, encap),
		encodeAttr(xfrmaMark, append(u32(sa.Mark), u32(sa.MarkMask)...)),
		encodeAttr(xfrmaReplayESN, esn),
		encodeAttr(xfrmaIfID, u32(sa.IfID)),
		encodeAttr(xfrmaSADir, []byte{SADirOut}),
		encodeAttr(99, []byte("unknown attributes are skipped")),
	} {
		b = append(b, a...)
	}
	return sa, b
}

// encodePolicyInfo lays out struct xfrm_userpolicy_info.
func encodePolicyInfo(p Policy) []byte {
	b := make([]byte, sizeofPolicyInfo)
	if p.Family != 0 {
		putAddr(b[0:], p.Dst.Addr())
		putAddr(b[16:], p.Src.Addr())
		b[42], b[43] = byte(p.Dst.Bits()), byte(p.Src.Bits())
	}
	ne.PutUint16(b[40:], p.Family)
	b[44] = p.Proto
	encodeLimits(b[56:], p.Limits)
	ne.PutUint64(b[136:], p.AddTime)
	ne.PutUint64(b[144:], p.UseTime)
	ne.PutUint32(b[152:], p.Priority)
	ne.PutUint32(b[156:], p.Index)
	b[160], b[161] = p.Dir, p.Action
	return b
}

// encodeTemplate lays out struct xfrm_user_tmpl.
func encodeTemplate(b []byte, t Template) {
	putAddr(b[0:], t.Dst)
	b[16], b[17], b[18], b[19] = byte(t.SPI>>24), byte(t.SPI>>16), byte(t.SPI>>8), byte(t.SPI)
	b[20] = t.Proto
	ne.PutUint16(b[24:], t.Family)
	putAddr(b[28:], t.Src)
	ne.PutUint32(b[44:], t.Reqid)
	b[48] = t.Mode
	if t.Optional {
		b[50] = 1
	}
}

func samplePolicy() (Policy, []byte) {
	p := Policy{
		Family: unix.AF_INET6, Src: netip.MustParsePrefix("fd78:1::/64"), Dst: netip.MustParsePrefix("fd78:2::1/128"),
		Proto: 6, Index: 0x41, Priority: 100, Dir: PolicyOut, Action: 0, AddTime: 1700000000, UseTime: 1700000100,
		Limits:    Limits{SoftBytes: xfrmInf, HardBytes: xfrmInf, SoftPackets: xfrmInf, HardPackets: xfrmInf},
		Templates: 2, Mark: 1, MarkMask: 3,
		Tmpls: []Template{
			// Family taken from the selector, endpoints any: transport.
			{Family: unix.AF_INET6, Src: netip.IPv6Unspecified(), Dst: netip.IPv6Unspecified(), Proto: unix.IPPROTO_ESP, Reqid: 7},
			// A tunnel of another family than the selector's.
			{Family: unix.AF_INET, Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.9"),
				SPI: 0xc0de, Proto: unix.IPPROTO_ESP, Mode: 1, Reqid: 8, Optional: true},
		},
	}
	b := encodePolicyInfo(p)
	tmpls := make([]byte, 2*sizeofUserTmpl)
	for i, t := range p.Tmpls {
		encodeTemplate(tmpls[i*sizeofUserTmpl:], t)
	}
	ne.PutUint16(tmpls[24:], 0) // the first template leaves its family to the selector
	b = append(b, encodeAttr(xfrmaTmpl, tmpls)...)
	b = append(b, encodeAttr(xfrmaMark, append(u32(1), u32(3)...))...)
	return p, b
}
