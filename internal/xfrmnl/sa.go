package xfrmnl

import (
	"fmt"
	"math"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Kernel structure sizes and attribute numbers (include/uapi/linux/xfrm.h).
const (
	sizeofSelector    = 56
	sizeofUsersaInfo  = 224
	sizeofUsersaID    = 24
	sizeofUserExpire  = 232
	sizeofPolicyInfo  = 168
	sizeofPolicyID    = 64
	sizeofPolExpire   = 176
	sizeofAlgoName    = 64
	sizeofReplay      = 12
	sizeofReplayESN   = 24
	sizeofEncapTmpl   = 24
	xfrmInf           = math.MaxUint64
	saFlagESN         = 128 // XFRM_STATE_ESN in xfrm_usersa_info.flags
	xfrmaAlgAuth      = 1
	xfrmaAlgCrypt     = 2
	xfrmaAlgComp      = 3
	xfrmaEncap        = 4
	xfrmaTmpl         = 5
	xfrmaSA           = 6
	xfrmaPolicy       = 7
	xfrmaReplayVal    = 10
	xfrmaLastUsed     = 15
	xfrmaPolicyType   = 16
	xfrmaAlgAEAD      = 18
	xfrmaAlgAuthTrunc = 20
	xfrmaMark         = 21
	xfrmaReplayESN    = 23
	xfrmaIfID         = 31
	xfrmaSADir        = 33
)

// Direction of an SA as the kernel marks it (XFRMA_SA_DIR, Linux 6.10+).
const (
	SADirNone = 0
	SADirIn   = 1
	SADirOut  = 2
)

// Limits are an SA's or policy's configured lifetime (xfrm_lifetime_cfg).
// A byte or packet limit of math.MaxUint64 and a time of 0 mean "none".
type Limits struct {
	SoftBytes, HardBytes     uint64
	SoftPackets, HardPackets uint64
	// Seconds after the SA was added, and after its first use.
	SoftAddSeconds, HardAddSeconds uint64
	SoftUseSeconds, HardUseSeconds uint64
}

// SA is one security association, without its keys.
type SA struct {
	Family   uint16
	Src, Dst netip.Addr
	SPI      uint32
	Proto    uint8 // unix.IPPROTO_ESP, _AH, _COMP
	Mode     uint8 // 0 transport, 1 tunnel, 2 route optimization, 3 in trigger, 4 beet
	Reqid    uint32
	Flags    uint8
	Dir      uint8 // SADir*; SADirNone on kernels before 6.10 or when unset
	Mark     uint32
	MarkMask uint32
	IfID     uint32

	Limits Limits
	// Lifetime counters (xfrm_lifetime_cur): bytes and packets through
	// the SA, when it was added and when it was first used (Unix seconds,
	// 0 = never used).
	Bytes, Packets    uint64
	AddTime, UseTime  uint64
	LastUsed          uint64 // XFRMA_LASTUSED, Unix seconds; 0 when absent
	ReplayWindowDrops uint32 // stats.replay_window: outside the window
	ReplayDrops       uint32 // stats.replay: replayed packets
	IntegrityFailures uint32 // stats.integrity_failed

	// Sequence numbers: the highest sent and received. 64-bit with ESN.
	HaveReplay bool
	ESN        bool
	OSeq, Seq  uint64

	// Algorithm names (never keys); "" when not used.
	Crypt, Auth, AEAD, Comp string
	EncapType               uint16 // 0 none, 1 espinudp-nonike, 2 espinudp, 7 espintcp
}

// SeqUsedRatio is how much of the sequence number space the SA has used:
// the higher of its sent and received counters over the largest sequence
// number (2^32-1, or 2^64-1 with ESN). An outbound SA at 1 can send nothing
// more; the ratio never exposes the number itself. ok is false when the kernel
// sent no replay state.
func (sa *SA) SeqUsedRatio() (ratio float64, ok bool) {
	if !sa.HaveReplay {
		return 0, false
	}
	space := float64(math.MaxUint32)
	if sa.ESN {
		space = math.MaxUint64
	}
	return float64(max(sa.OSeq, sa.Seq)) / space, true
}

// ParseSA decodes an XFRM_MSG_NEWSA / UPDSA payload (xfrm_usersa_info and
// its attributes).
func ParseSA(b []byte) (SA, error) {
	var sa SA
	err := decodeSA(&sa, b)
	return sa, err
}

// decodeSA is ParseSA into an SA the caller reuses.
func decodeSA(sa *SA, b []byte) error {
	*sa = SA{}
	if len(b) < sizeofUsersaInfo {
		return fmt.Errorf("%w: SA of %d bytes", ErrMalformed, len(b))
	}
	if err := decodeUsersaInfo(sa, b[:sizeofUsersaInfo]); err != nil {
		return err
	}
	return eachAttr(b[sizeofUsersaInfo:], sa.decodeAttr)
}

func decodeUsersaInfo(sa *SA, b []byte) error {
	// Offsets of struct xfrm_usersa_info: sel 0, id 56 (daddr 56, spi 72,
	// proto 76), saddr 80, lft 96, curlft 160, stats 192, seq 204,
	// reqid 208, family 212, mode 214, replay_window 215, flags 216.
	sa.Family = ne.Uint16(b[212:214])
	var err error
	if sa.Dst, err = addr(b[56:72], sa.Family); err != nil {
		return err
	}
	if sa.Src, err = addr(b[80:96], sa.Family); err != nil {
		return err
	}
	sa.SPI = uint32(b[72])<<24 | uint32(b[73])<<16 | uint32(b[74])<<8 | uint32(b[75])
	sa.Proto = b[76]
	sa.Limits = decodeLimits(b[96:160])
	sa.Bytes = ne.Uint64(b[160:])
	sa.Packets = ne.Uint64(b[168:])
	sa.AddTime = ne.Uint64(b[176:])
	sa.UseTime = ne.Uint64(b[184:])
	sa.ReplayWindowDrops = ne.Uint32(b[192:])
	sa.ReplayDrops = ne.Uint32(b[196:])
	sa.IntegrityFailures = ne.Uint32(b[200:])
	sa.Reqid = ne.Uint32(b[208:])
	sa.Mode = b[214]
	sa.Flags = b[216]
	sa.ESN = sa.Flags&saFlagESN != 0
	return nil
}

func decodeLimits(b []byte) Limits {
	return Limits{
		SoftBytes: ne.Uint64(b[0:]), HardBytes: ne.Uint64(b[8:]),
		SoftPackets: ne.Uint64(b[16:]), HardPackets: ne.Uint64(b[24:]),
		SoftAddSeconds: ne.Uint64(b[32:]), HardAddSeconds: ne.Uint64(b[40:]),
		SoftUseSeconds: ne.Uint64(b[48:]), HardUseSeconds: ne.Uint64(b[56:]),
	}
}

func (sa *SA) decodeAttr(typ uint16, data []byte) error {
	short := func(want int) error {
		if len(data) < want {
			return fmt.Errorf("%w: attribute %d of %d bytes, want %d", ErrMalformed, typ, len(data), want)
		}
		return nil
	}
	switch typ {
	case xfrmaAlgCrypt, xfrmaAlgAuth, xfrmaAlgAuthTrunc, xfrmaAlgAEAD, xfrmaAlgComp:
		// Only the name, the first 64 bytes; the key that follows is
		// never looked at.
		if err := short(sizeofAlgoName); err != nil {
			return err
		}
		name, ok := algoName(typ, data[:sizeofAlgoName])
		if !ok {
			return fmt.Errorf("%w: algorithm name is not printable", ErrMalformed)
		}
		switch typ {
		case xfrmaAlgCrypt:
			sa.Crypt = name
		case xfrmaAlgAuth, xfrmaAlgAuthTrunc:
			sa.Auth = name
		case xfrmaAlgAEAD:
			sa.AEAD = name
		case xfrmaAlgComp:
			sa.Comp = name
		}
	case xfrmaEncap:
		if err := short(sizeofEncapTmpl); err != nil {
			return err
		}
		sa.EncapType = ne.Uint16(data[0:2])
	case xfrmaReplayVal:
		if err := short(sizeofReplay); err != nil {
			return err
		}
		sa.HaveReplay = true
		sa.OSeq = uint64(ne.Uint32(data[0:]))
		sa.Seq = uint64(ne.Uint32(data[4:]))
	case xfrmaReplayESN:
		// struct xfrm_replay_state_esn: bmp_len, oseq, seq, oseq_hi,
		// seq_hi, replay_window, bmp[bmp_len].
		if err := short(sizeofReplayESN); err != nil {
			return err
		}
		sa.HaveReplay = true
		sa.OSeq = uint64(ne.Uint32(data[4:]))
		sa.Seq = uint64(ne.Uint32(data[8:]))
		if sa.ESN {
			sa.OSeq |= uint64(ne.Uint32(data[12:])) << 32
			sa.Seq |= uint64(ne.Uint32(data[16:])) << 32
		}
	case xfrmaLastUsed:
		if err := short(8); err != nil {
			return err
		}
		sa.LastUsed = ne.Uint64(data)
	case xfrmaMark:
		if err := short(8); err != nil {
			return err
		}
		sa.Mark, sa.MarkMask = ne.Uint32(data[0:]), ne.Uint32(data[4:])
	case xfrmaIfID:
		if err := short(4); err != nil {
			return err
		}
		sa.IfID = ne.Uint32(data)
	case xfrmaSADir:
		if err := short(1); err != nil {
			return err
		}
		sa.Dir = data[0]
	}
	return nil
}

// ProtoName names an XFRM protocol as `ip xfrm` does.
func ProtoName(p uint8) string {
	switch p {
	case unix.IPPROTO_ESP:
		return "esp"
	case unix.IPPROTO_AH:
		return "ah"
	case unix.IPPROTO_COMP:
		return "comp"
	case unix.IPPROTO_ROUTING:
		return "route2"
	case unix.IPPROTO_DSTOPTS:
		return "hao"
	}
	return fmt.Sprintf("proto-%d", p)
}

// ModeName names an XFRM mode as `ip xfrm` does.
func ModeName(m uint8) string {
	switch m {
	case 0:
		return "transport"
	case 1:
		return "tunnel"
	case 2:
		return "ro"
	case 3:
		return "in_trigger"
	case 4:
		return "beet"
	case 5:
		return "iptfs"
	}
	return fmt.Sprintf("mode-%d", m)
}

// EncapName names a UDP/TCP encapsulation type; "" for none.
func EncapName(t uint16) string {
	switch t {
	case 0:
		return ""
	case 1:
		return "espinudp-nonike"
	case 2:
		return "espinudp"
	case 7:
		return "espintcp"
	}
	return fmt.Sprintf("encap-%d", t)
}
