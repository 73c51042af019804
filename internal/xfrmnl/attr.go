// Package xfrmnl reads the kernel's IPsec state over NETLINK_XFRM: SA and
// policy dumps, the SAD/SPD summary counts, and the multicast event groups.
//
// It decodes the kernel's structures itself rather than through
// vishvananda/netlink's XfrmStateList for three reasons: that one copies the
// SA keys into the returned values (we never want keys in our memory longer
// than the receive buffer, which we wipe), it lacks the ESN replay state,
// XFRMA_LASTUSED and SADINFO/SPDINFO, and a decoder that takes bytes and
// returns an error is what a fuzzer can exercise. Every length is checked: a
// short or odd message is an error, never a panic or a made-up number.
package xfrmnl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ErrMalformed marks a message that does not decode.
var ErrMalformed = errors.New("malformed xfrm netlink message")

// ne is the host's byte order, which the XFRM structures use (addresses, SPIs
// and ports excepted: those are big-endian on the wire).
var ne = binary.NativeEndian

// attr is one netlink attribute (struct nlattr, the rtattr layout).
type attr struct {
	typ  uint16
	data []byte
}

// parseAttrs splits b into attributes. The NLA_F_NESTED / byte-order flag
// bits are masked off the type.
func parseAttrs(b []byte) ([]attr, error) {
	var attrs []attr
	for len(b) > 0 {
		if len(b) < unix.SizeofRtAttr {
			return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(b))
		}
		l := int(ne.Uint16(b[0:2]))
		if l < unix.SizeofRtAttr || l > len(b) {
			return nil, fmt.Errorf("%w: attribute length %d of %d bytes", ErrMalformed, l, len(b))
		}
		attrs = append(attrs, attr{typ: ne.Uint16(b[2:4]) & nlaTypeMask, data: b[unix.SizeofRtAttr:l]})
		aligned := (l + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1)
		if aligned > len(b) {
			aligned = len(b)
		}
		b = b[aligned:]
	}
	return attrs, nil
}

// eachAttr calls fn with each attribute of b, as parseAttrs splits them,
// without building a slice (an SA dump decodes tens of thousands).
func eachAttr(b []byte, fn func(typ uint16, data []byte) error) error {
	for len(b) > 0 {
		if len(b) < unix.SizeofRtAttr {
			return fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(b))
		}
		l := int(ne.Uint16(b[0:2]))
		if l < unix.SizeofRtAttr || l > len(b) {
			return fmt.Errorf("%w: attribute length %d of %d bytes", ErrMalformed, l, len(b))
		}
		if err := fn(ne.Uint16(b[2:4])&nlaTypeMask, b[unix.SizeofRtAttr:l]); err != nil {
			return err
		}
		b = b[min((l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1), len(b)):]
	}
	return nil
}

// addr decodes an xfrm_address_t (16 bytes) of the given family.
func addr(b []byte, family uint16) (netip.Addr, error) {
	switch family {
	case unix.AF_INET:
		return netip.AddrFrom4([4]byte(b[:4])), nil
	case unix.AF_INET6:
		return netip.AddrFrom16([16]byte(b[:16])), nil
	}
	return netip.Addr{}, fmt.Errorf("%w: address family %d", ErrMalformed, family)
}

// algoName returns the NUL-terminated algorithm name at the start of b (of
// attribute typ), and false when it is not printable ASCII (algorithm names
// always are). The few names a kernel has are kept, so 50,000 SAs share one
// copy of each.
func algoName(typ uint16, b []byte) (string, bool) {
	n := 0
	for n < len(b) && b[n] != 0 {
		if b[n] < 0x20 || b[n] > 0x7e {
			return "", false
		}
		n++
	}
	return names.intern(typ, b[:n]), true
}

// names holds the algorithm names seen, up to a bound (beyond it a name is
// copied each time: a hostile or broken kernel cannot grow it).
var names = internTable{m: map[string]string{}}

type internTable struct {
	// last is the name each attribute type had last: an SA dump has the
	// same few over and over, found here without the lock.
	last [32]atomic.Pointer[string]
	mu   sync.Mutex
	m    map[string]string
}

const maxInterned = 256

func (t *internTable) intern(typ uint16, b []byte) string {
	if len(b) == 0 {
		return ""
	}
	slot := &t.last[typ%uint16(len(t.last))]
	if last := slot.Load(); last != nil && *last == string(b) {
		return *last
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.m[string(b)]
	if !ok {
		s = string(b)
		if len(t.m) >= maxInterned {
			return s
		}
		t.m[s] = s
	}
	slot.Store(&s)
	return s
}

// nlaTypeMask strips NLA_F_NESTED and NLA_F_NET_BYTEORDER from a type.
const nlaTypeMask = 0x3fff
