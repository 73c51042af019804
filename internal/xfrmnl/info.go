package xfrmnl

import "fmt"

// SADInfo is the kernel's summary of the SA database (XFRM_MSG_NEWSADINFO).
type SADInfo struct {
	Count       uint32 // SAs, larval (acquire) ones included
	HashBuckets uint32
	HashMax     uint32
}

// SPDInfo is the kernel's summary of the policy database by direction
// (XFRM_MSG_NEWSPDINFO): main policies and per-socket ones.
type SPDInfo struct {
	In, Out, Fwd                   uint32
	SocketIn, SocketOut, SocketFwd uint32
	HashBuckets, HashMax           uint32
}

const (
	xfrmaSADCnt   = 1
	xfrmaSADHInfo = 2
	xfrmaSPDInfo  = 1
	xfrmaSPDHInfo = 2
)

// ParseSADInfo decodes the payload of an XFRM_MSG_NEWSADINFO reply: a u32 of
// flags, then attributes.
func ParseSADInfo(b []byte) (SADInfo, error) {
	var info SADInfo
	if len(b) < 4 {
		return info, fmt.Errorf("%w: SAD info of %d bytes", ErrMalformed, len(b))
	}
	attrs, err := parseAttrs(b[4:])
	if err != nil {
		return info, err
	}
	var haveCount bool
	for _, a := range attrs {
		switch a.typ {
		case xfrmaSADCnt:
			if len(a.data) < 4 {
				return info, fmt.Errorf("%w: SAD count of %d bytes", ErrMalformed, len(a.data))
			}
			info.Count, haveCount = ne.Uint32(a.data), true
		case xfrmaSADHInfo:
			if len(a.data) < 8 {
				return info, fmt.Errorf("%w: SAD hash info of %d bytes", ErrMalformed, len(a.data))
			}
			info.HashBuckets, info.HashMax = ne.Uint32(a.data[0:]), ne.Uint32(a.data[4:])
		}
	}
	if !haveCount {
		return info, fmt.Errorf("%w: SAD info without a count", ErrMalformed)
	}
	return info, nil
}

// ParseSPDInfo decodes the payload of an XFRM_MSG_NEWSPDINFO reply.
func ParseSPDInfo(b []byte) (SPDInfo, error) {
	var info SPDInfo
	if len(b) < 4 {
		return info, fmt.Errorf("%w: SPD info of %d bytes", ErrMalformed, len(b))
	}
	attrs, err := parseAttrs(b[4:])
	if err != nil {
		return info, err
	}
	var haveCounts bool
	for _, a := range attrs {
		switch a.typ {
		case xfrmaSPDInfo:
			if len(a.data) < 24 {
				return info, fmt.Errorf("%w: SPD counts of %d bytes", ErrMalformed, len(a.data))
			}
			d := a.data
			info.In, info.Out, info.Fwd = ne.Uint32(d[0:]), ne.Uint32(d[4:]), ne.Uint32(d[8:])
			info.SocketIn, info.SocketOut, info.SocketFwd = ne.Uint32(d[12:]), ne.Uint32(d[16:]), ne.Uint32(d[20:])
			haveCounts = true
		case xfrmaSPDHInfo:
			if len(a.data) < 8 {
				return info, fmt.Errorf("%w: SPD hash info of %d bytes", ErrMalformed, len(a.data))
			}
			info.HashBuckets, info.HashMax = ne.Uint32(a.data[0:]), ne.Uint32(a.data[4:])
		}
	}
	if !haveCounts {
		return info, fmt.Errorf("%w: SPD info without counts", ErrMalformed)
	}
	return info, nil
}
