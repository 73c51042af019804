package xfrmnl

import (
	"fmt"
	"net/netip"
)

// Policy directions (XFRM_POLICY_IN/OUT/FWD); +XFRM_POLICY_MAX (3) marks a
// per-socket policy in the index.
const (
	PolicyIn  = 0
	PolicyOut = 1
	PolicyFwd = 2
	// socketPolicyBase (XFRM_POLICY_MAX) is added to the direction of a
	// per-socket policy.
	socketPolicyBase = 3
)

// Policy is one security policy (xfrm_userpolicy_info and its templates).
type Policy struct {
	Family           uint16 // selector family; 0 for a wildcard selector
	Src, Dst         netip.Prefix
	Proto            uint8 // selector upper-layer protocol, 0 = any
	Index            uint32
	Priority         uint32
	Dir              uint8 // PolicyIn, PolicyOut, PolicyFwd
	Action           uint8 // 0 allow, 1 block
	Limits           Limits
	AddTime, UseTime uint64 // Unix seconds; UseTime is the last lookup, 0 = never
	Templates        int    // number of xfrm_user_tmpl: SAs the policy requires
	Tmpls            []Template
	Mark, MarkMask   uint32
	IfID             uint32
	Type             uint8 // XFRM_POLICY_TYPE_MAIN (0) or _SUB (1, kernels with CONFIG_XFRM_SUB_POLICY)
}

// Template is one SA a policy requires (xfrm_user_tmpl): its endpoints and
// how it protects. In tunnel mode Src and Dst are the tunnel's endpoints;
// in transport mode they are usually unspecified (any), and the policy's
// selector names the hosts.
type Template struct {
	Family   uint16 // of Src and Dst
	Src, Dst netip.Addr
	SPI      uint32 // 0: any
	Proto    uint8  // unix.IPPROTO_ESP, _AH, _COMP
	Mode     uint8  // as SA.Mode
	Reqid    uint32
	Optional bool
}

// ParsePolicy decodes an XFRM_MSG_NEWPOLICY / UPDPOLICY payload.
func ParsePolicy(b []byte) (Policy, error) {
	var p Policy
	err := decodePolicy(&p, b)
	return p, err
}

// decodePolicy is ParsePolicy into a Policy the caller reuses.
func decodePolicy(p *Policy, b []byte) error {
	*p = Policy{}
	if len(b) < sizeofPolicyInfo {
		return fmt.Errorf("%w: policy of %d bytes", ErrMalformed, len(b))
	}
	if err := decodePolicyInfo(p, b[:sizeofPolicyInfo]); err != nil {
		return err
	}
	return eachAttr(b[sizeofPolicyInfo:], p.decodeAttr)
}

func (p *Policy) decodeAttr(typ uint16, data []byte) error {
	switch typ {
	case xfrmaTmpl:
		if len(data)%sizeofUserTmpl != 0 {
			return fmt.Errorf("%w: templates of %d bytes", ErrMalformed, len(data))
		}
		p.Templates = len(data) / sizeofUserTmpl
		p.Tmpls = make([]Template, 0, p.Templates)
		for b := data; len(b) > 0; b = b[sizeofUserTmpl:] {
			t, err := decodeTemplate(b[:sizeofUserTmpl], p.Family)
			if err != nil {
				return err
			}
			p.Tmpls = append(p.Tmpls, t)
		}
	case xfrmaMark:
		if len(data) < 8 {
			return fmt.Errorf("%w: mark of %d bytes", ErrMalformed, len(data))
		}
		p.Mark, p.MarkMask = ne.Uint32(data[0:]), ne.Uint32(data[4:])
	case xfrmaIfID:
		if len(data) < 4 {
			return fmt.Errorf("%w: if_id of %d bytes", ErrMalformed, len(data))
		}
		p.IfID = ne.Uint32(data)
	case xfrmaPolicyType:
		if len(data) < 1 {
			return fmt.Errorf("%w: policy type of %d bytes", ErrMalformed, len(data))
		}
		p.Type = data[0]
	}
	return nil
}

// policyType finds XFRMA_POLICY_TYPE (struct xfrm_userpolicy_type, type
// first) among a flush notification's attributes; main (0) without it.
func policyType(b []byte) (uint8, error) {
	var p Policy
	err := eachAttr(b, p.decodeAttr)
	return p.Type, err
}

const sizeofUserTmpl = 64

// decodeTemplate decodes a struct xfrm_user_tmpl: id (daddr 0, spi 16,
// proto 20), family 24, saddr 28, reqid 44, mode 48, share 49, optional 50,
// then the algorithm masks. A template without a family takes the
// selector's, as the kernel does when it installs one.
func decodeTemplate(b []byte, selectorFamily uint16) (Template, error) {
	t := Template{
		Family: ne.Uint16(b[24:26]),
		SPI:    uint32(b[16])<<24 | uint32(b[17])<<16 | uint32(b[18])<<8 | uint32(b[19]),
		Proto:  b[20],
		Reqid:  ne.Uint32(b[44:48]),
		Mode:   b[48],
	}
	t.Optional = b[50] != 0
	if t.Family == 0 {
		t.Family = selectorFamily
	}
	if t.Family == 0 {
		return t, nil // no family anywhere: endpoints unknown, left invalid
	}
	var err error
	if t.Dst, err = addr(b[0:16], t.Family); err != nil {
		return t, err
	}
	if t.Src, err = addr(b[28:44], t.Family); err != nil {
		return t, err
	}
	return t, nil
}

func decodePolicyInfo(p *Policy, b []byte) error {
	// struct xfrm_selector: daddr 0, saddr 16, dport 32, dport_mask 34,
	// sport 36, sport_mask 38, family 40, prefixlen_d 42, prefixlen_s 43,
	// proto 44, ifindex 48, user 52. Then lft 56, curlft 120,
	// priority 152, index 156, dir 160, action 161, flags 162, share 163.
	p.Family = ne.Uint16(b[40:42])
	if p.Family != 0 {
		dst, err := addr(b[0:16], p.Family)
		if err != nil {
			return err
		}
		src, err := addr(b[16:32], p.Family)
		if err != nil {
			return err
		}
		if p.Dst, err = dst.Prefix(int(b[42])); err != nil {
			return fmt.Errorf("%w: destination prefix /%d", ErrMalformed, b[42])
		}
		if p.Src, err = src.Prefix(int(b[43])); err != nil {
			return fmt.Errorf("%w: source prefix /%d", ErrMalformed, b[43])
		}
	}
	p.Proto = b[44]
	p.Limits = decodeLimits(b[56:120])
	p.AddTime = ne.Uint64(b[136:])
	p.UseTime = ne.Uint64(b[144:])
	p.Priority = ne.Uint32(b[152:])
	p.Index = ne.Uint32(b[156:])
	p.Dir = b[160]
	p.Action = b[161]
	return nil
}

// DirName names a policy direction as `ip xfrm policy` does; per-socket
// policies (set with setsockopt IP_XFRM_POLICY, e.g. an IKE daemon's bypass
// on its own socket) are socket_in, socket_out.
func DirName(d uint8) string {
	switch d {
	case PolicyIn:
		return "in"
	case PolicyOut:
		return "out"
	case PolicyFwd:
		return "fwd"
	case socketPolicyBase + PolicyIn:
		return "socket_in"
	case socketPolicyBase + PolicyOut:
		return "socket_out"
	case socketPolicyBase + PolicyFwd:
		return "socket_fwd"
	}
	return fmt.Sprintf("dir-%d", d)
}

// ActionName names a policy action.
func ActionName(a uint8) string {
	switch a {
	case 0:
		return "allow"
	case 1:
		return "block"
	}
	return fmt.Sprintf("action-%d", a)
}
