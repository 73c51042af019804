package xfrmnl

import (
	"fmt"
)

// Event names a lifecycle event; the values are the metric label values.
type Event string

// The events the XFRM multicast groups carry.
const (
	EventSAAdded           Event = "sa_added"
	EventSAUpdated         Event = "sa_updated"
	EventSADeleted         Event = "sa_deleted"
	EventSASoftExpired     Event = "sa_soft_expired"
	EventSAHardExpired     Event = "sa_hard_expired"
	EventSAFlushed         Event = "sa_flushed"
	EventAcquire           Event = "acquire"
	EventMapping           Event = "mapping_changed"
	EventPolicyAdded       Event = "policy_added"
	EventPolicyUpdated     Event = "policy_updated"
	EventPolicyDeleted     Event = "policy_deleted"
	EventPolicySoftExpired Event = "policy_soft_expired"
	EventPolicyHardExpired Event = "policy_hard_expired"
	EventPolicyFlushed     Event = "policy_flushed"
	EventReplayUpdate      Event = "replay_update"
	EventReport            Event = "report"
	EventMigrate           Event = "migrate"
)

// Events lists every event in a fixed order, so each appears in the metrics
// from the start (at 0) and a rate over a first occurrence works.
var Events = []Event{
	EventSAAdded, EventSAUpdated, EventSADeleted, EventSASoftExpired, EventSAHardExpired, EventSAFlushed,
	EventAcquire, EventMapping,
	EventPolicyAdded, EventPolicyUpdated, EventPolicyDeleted, EventPolicySoftExpired, EventPolicyHardExpired, EventPolicyFlushed,
	EventReplayUpdate, EventReport, EventMigrate,
}

// Multicast groups (XFRMNLGRP_*) as a bind mask: the listener joins all
// that carry lifecycle events.
const (
	grpAcquire = 1
	grpExpire  = 2
	grpSA      = 3
	grpPolicy  = 4
	grpAEvents = 5
	grpReport  = 6
	grpMigrate = 7
	grpMapping = 8
	// EventGroups is every group above.
	EventGroups = 1<<(grpAcquire-1) | 1<<(grpExpire-1) | 1<<(grpSA-1) | 1<<(grpPolicy-1) |
		1<<(grpAEvents-1) | 1<<(grpReport-1) | 1<<(grpMigrate-1) | 1<<(grpMapping-1)
)

// Notification is one decoded multicast message.
type Notification struct {
	Event Event
	// SA is set for sa_added, sa_updated, sa_deleted and the SA expiries:
	// the SA as the kernel last saw it (a deleted or hard-expired SA's
	// final counters).
	SA *SA
	// Policy is set for policy_added/updated/deleted and the expiries.
	Policy *Policy
	// FlushProto is the protocol an sa_flushed removed (struct
	// xfrm_usersa_flush): 0 all, IPSEC_PROTO_ANY (255) ESP, AH and
	// IPcomp, else that one.
	FlushProto uint8
	// FlushType is the policy type a policy_flushed removed (XFRMA_POLICY_TYPE;
	// 0, main, without it).
	FlushType uint8
}

// ParseNotification decodes a multicast message of the given netlink type.
// ok is false for a message type that is not an event (ignored).
func ParseNotification(typ uint16, b []byte) (n Notification, ok bool, err error) {
	switch typ {
	case msgNewSA, msgUpdSA:
		sa, err := ParseSA(b)
		if err != nil {
			return n, false, err
		}
		n.Event, n.SA = EventSAAdded, &sa
		if typ == msgUpdSA {
			n.Event = EventSAUpdated
		}
	case msgDelSA:
		// xfrm_usersa_id, then XFRMA_SA with the xfrm_usersa_info; the
		// SA's other attributes follow at the top level.
		sa, err := parseWrapped(b, sizeofUsersaID, xfrmaSA, sizeofUsersaInfo, ParseSA)
		if err != nil {
			return n, false, err
		}
		n.Event, n.SA = EventSADeleted, &sa
	case msgExpire:
		// struct xfrm_user_expire: xfrm_usersa_info, u8 hard, padding.
		if len(b) < sizeofUserExpire {
			return n, false, fmt.Errorf("%w: expire of %d bytes", ErrMalformed, len(b))
		}
		// One allocation of the final size (the attributes carry keys).
		info := append(append(make([]byte, 0, sizeofUsersaInfo+len(b)-sizeofUserExpire), b[:sizeofUsersaInfo]...), b[sizeofUserExpire:]...)
		sa, err := ParseSA(info)
		clear(info)
		if err != nil {
			return n, false, err
		}
		n.Event, n.SA = EventSASoftExpired, &sa
		if b[sizeofUsersaInfo] != 0 {
			n.Event = EventSAHardExpired
		}
	case msgFlushSA:
		n.Event = EventSAFlushed
		if len(b) < 1 {
			return n, false, fmt.Errorf("%w: SA flush of %d bytes", ErrMalformed, len(b))
		}
		n.FlushProto = b[0]
	case msgAcquire:
		n.Event = EventAcquire
	case msgMapping:
		n.Event = EventMapping
	case msgNewPolicy, msgUpdPolicy:
		p, err := ParsePolicy(b)
		if err != nil {
			return n, false, err
		}
		n.Event, n.Policy = EventPolicyAdded, &p
		if typ == msgUpdPolicy {
			n.Event = EventPolicyUpdated
		}
	case msgDelPolicy:
		p, err := parseWrapped(b, sizeofPolicyID, xfrmaPolicy, sizeofPolicyInfo, ParsePolicy)
		if err != nil {
			return n, false, err
		}
		n.Event, n.Policy = EventPolicyDeleted, &p
	case msgPolExpire:
		// struct xfrm_user_polexpire: xfrm_userpolicy_info, u8 hard.
		if len(b) < sizeofPolExpire {
			return n, false, fmt.Errorf("%w: policy expire of %d bytes", ErrMalformed, len(b))
		}
		p, err := ParsePolicy(b[:sizeofPolicyInfo])
		if err != nil {
			return n, false, err
		}
		n.Event, n.Policy = EventPolicySoftExpired, &p
		if b[sizeofPolicyInfo] != 0 {
			n.Event = EventPolicyHardExpired
		}
	case msgFlushPolicy:
		// No header: the attributes start at once.
		n.Event = EventPolicyFlushed
		t, err := policyType(b)
		if err != nil {
			return n, false, err
		}
		n.FlushType = t
	case msgNewAE:
		n.Event = EventReplayUpdate
	case msgReport:
		n.Event = EventReport
	case msgMigrate:
		n.Event = EventMigrate
	default:
		return n, false, nil
	}
	return n, true, nil
}

// parseWrapped decodes a delete notification: an id header of idSize bytes,
// then attributes, one of which (wrapType) holds the full info structure;
// the rest belong to it.
func parseWrapped[T any](b []byte, idSize int, wrapType uint16, infoSize int, parse func([]byte) (T, error)) (T, error) {
	var zero T
	if len(b) < idSize {
		return zero, fmt.Errorf("%w: delete notification of %d bytes", ErrMalformed, len(b))
	}
	attrs, err := parseAttrs(b[idSize:])
	if err != nil {
		return zero, err
	}
	var info []byte
	wrapped := -1
	size := infoSize
	for i, a := range attrs {
		if a.typ == wrapType && info == nil {
			if len(a.data) < infoSize {
				return zero, fmt.Errorf("%w: wrapped info of %d bytes", ErrMalformed, len(a.data))
			}
			info, wrapped = a.data[:infoSize], i
			continue
		}
		size += (4 + len(a.data) + 3) &^ 3
	}
	if info == nil {
		return zero, fmt.Errorf("%w: delete notification without attribute %d", ErrMalformed, wrapType)
	}
	// One buffer of the final size: the attributes may carry keys, and
	// every copy an append leaves behind when it grows would outlive the
	// decoding. This one is cleared before returning.
	buf := append(make([]byte, 0, size), info...)
	for i, a := range attrs {
		if i != wrapped {
			buf = appendAttr(buf, a)
		}
	}
	defer clear(buf)
	return parse(buf)
}

// appendAttr re-encodes an attribute (aligned) onto b.
func appendAttr(b []byte, a attr) []byte {
	l := 4 + len(a.data)
	var hdr [4]byte
	ne.PutUint16(hdr[0:], uint16(l))
	ne.PutUint16(hdr[2:], a.typ)
	b = append(b, hdr[:]...)
	b = append(b, a.data...)
	for l%4 != 0 {
		b = append(b, 0)
		l++
	}
	return b
}

// Groups of the multicast messages a reader of SA and policy changes needs:
// additions, updates and deletions (XFRMNLGRP_SA, _POLICY) and hard
// expiries, after which the kernel removes the SA without a deletion
// message (XFRMNLGRP_EXPIRE). Pass it to Dial.
const ChangeGroups = 1<<(grpSA-1) | 1<<(grpPolicy-1) | 1<<(grpExpire-1)

// ReadNotifications waits for one datagram of multicast messages on a Conn
// dialled with groups and hands each decodable event to fn, in order; the
// receive buffer is wiped afterwards (SA messages carry keys), so fn must
// not keep n beyond its copies of SA and Policy. It returns unix.ENOBUFS
// when the kernel dropped notifications (the reader must re-read the
// state), os.ErrClosed after Close, and the number of undecodable messages
// it skipped.
func (c *Conn) ReadNotifications(fn func(n Notification)) (skipped int, err error) {
	msgs, err := c.receive()
	if err != nil {
		return 0, err
	}
	defer c.wipe()
	for _, m := range msgs {
		n, ok, err := ParseNotification(m.typ, m.data)
		if err != nil {
			skipped++
			continue
		}
		if ok {
			fn(n)
		}
	}
	return skipped, nil
}
