package scenario

import (
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// XfrmEvents counts the kernel's own XFRM event stream in one namespace:
// every message on its XFRM netlink multicast groups, by type, read on a
// socket of the test's own (independent of the exporter's listener). Names
// are those of ipsec_xfrm_events_total{event}.
//
// It also keeps the kernel's own final packet counts of the SAs it saw go
// (deleted, or hard-expired, which deletes them): with the live SAs'
// counters, that is everything an SA pair carried across rekeys.
type XfrmEvents struct {
	mu      sync.Mutex
	counts  Counters
	overrun bool
	// announced are the SAs the stream reported as added or updated;
	// unannounced counts deletions of others (SPIs a daemon allocated with
	// XFRM_MSG_ALLOCSPI, which the kernel never announces, and deleted
	// without installing).
	announced   map[saID]bool
	unannounced uint64
	removed     map[[2]netip.Addr]uint64 // (src, dst) -> packets
}

type saID struct {
	daddr [16]byte
	spi   uint32
	proto uint8
}

// Every XFRM netlink multicast group (linux/xfrm.h XFRMNLGRP_*): acquire,
// expire, sa, policy, aevents, report, migrate, mapping.
var xfrmGroups = uint32(1<<8 - 1)

// WatchXfrmEvents subscribes in n and counts until the test ends.
func (n *Netns) WatchXfrmEvents(t TB) *XfrmEvents {
	t.Helper()
	var fd int
	err := n.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_XFRM)
		if err != nil {
			return err
		}
		// A burst of rekeys must not overflow the socket: that would lose
		// counts here, not in the exporter.
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		// Closing a socket does not wake a blocked recvfrom: wake up now and
		// then to see whether the test ended.
		tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: xfrmGroups})
	})
	if err != nil {
		t.Fatalf("%s: XFRM event socket: %v", n.Name, err)
	}
	ev := &XfrmEvents{counts: Counters{}, announced: map[saID]bool{}, removed: map[[2]netip.Addr]uint64{}}
	done, stop := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<20)
		for {
			l, _, err := unix.Recvfrom(fd, buf, 0)
			if err == unix.EAGAIN || err == unix.EINTR {
				select {
				case <-stop:
					return
				default:
					continue
				}
			}
			if err == unix.ENOBUFS {
				ev.mu.Lock()
				ev.overrun = true
				ev.mu.Unlock()
				continue
			}
			if err != nil {
				return // closed at cleanup
			}
			msgs, err := syscall.ParseNetlinkMessage(buf[:l])
			if err != nil {
				continue
			}
			ev.mu.Lock()
			for _, m := range msgs {
				if name := xfrmEventName(m); name != "" {
					ev.counts[name]++
					ev.track(name, m.Data)
				}
			}
			ev.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		_ = unix.Close(fd)
	})
	return ev
}

// Counts returns the counts so far; it fails t if the socket overflowed.
func (ev *XfrmEvents) Counts(t TB) Counters {
	t.Helper()
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if ev.overrun {
		t.Fatalf("the test's XFRM event socket overflowed: counts are not the kernel's")
	}
	out := Counters{}
	for k, v := range ev.counts {
		out[k] = v
	}
	return out
}

// track keeps which SAs were announced and the final counters of those
// removed (linux/xfrm.h: NEWSA/UPDSA carry xfrm_usersa_info; DELSA an
// xfrm_usersa_id and the info in XFRMA_SA; EXPIRE xfrm_user_expire, whose
// first member is the info). ev.mu is held.
func (ev *XfrmEvents) track(name string, data []byte) {
	var info *nl.XfrmUsersaInfo
	switch name {
	case "sa_added", "sa_updated":
		if len(data) >= nl.SizeofXfrmUsersaInfo {
			info = nl.DeserializeXfrmUsersaInfo(data)
			ev.announced[saID{info.Id.Daddr, info.Id.Spi, info.Id.Proto}] = true
		}
		return
	case "sa_deleted":
		if len(data) < nl.SizeofXfrmUsersaId {
			return
		}
		id := nl.DeserializeXfrmUsersaId(data)
		key := saID{id.Daddr, id.Spi, id.Proto}
		if !ev.announced[key] {
			ev.unannounced++
		}
		delete(ev.announced, key)
		attrs, err := nl.ParseRouteAttr(data[nl.SizeofXfrmUsersaId:])
		if err != nil {
			return
		}
		for _, a := range attrs {
			if a.Attr.Type == nl.XFRMA_SA && len(a.Value) >= nl.SizeofXfrmUsersaInfo {
				info = nl.DeserializeXfrmUsersaInfo(a.Value)
			}
		}
	case "sa_hard_expired":
		if len(data) >= nl.SizeofXfrmUsersaInfo {
			info = nl.DeserializeXfrmUsersaInfo(data)
			delete(ev.announced, saID{info.Id.Daddr, info.Id.Spi, info.Id.Proto})
		}
	}
	if info == nil {
		return
	}
	src, dst := xfrmAddr(info.Saddr, info.Family), xfrmAddr(info.Id.Daddr, info.Family)
	ev.removed[[2]netip.Addr{src, dst}] += info.Curlft.Packets
}

func xfrmAddr(a [16]byte, family uint16) netip.Addr {
	if family == unix.AF_INET {
		return netip.AddrFrom4([4]byte(a[:4]))
	}
	return netip.AddrFrom16(a).Unmap()
}

// RemovedPackets is what the SAs from src to dst that the kernel deleted
// (or hard-expired) carried, by their final counters.
func (ev *XfrmEvents) RemovedPackets(src, dst netip.Addr) uint64 {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return ev.removed[[2]netip.Addr{src, dst}]
}

// Unannounced is how many sa_deleted events were for SAs the stream never
// announced (allocated SPIs deleted before they were installed).
func (ev *XfrmEvents) Unannounced() uint64 {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return ev.unannounced
}

// xfrmEventName names a message by its type (and, for expiries, its hard
// flag, the byte after the SA or policy; linux/xfrm.h).
func xfrmEventName(m syscall.NetlinkMessage) string {
	hard := func(off int) bool { return len(m.Data) > off && m.Data[off] != 0 }
	switch m.Header.Type {
	case nl.XFRM_MSG_NEWSA:
		return "sa_added"
	case nl.XFRM_MSG_UPDSA:
		return "sa_updated"
	case nl.XFRM_MSG_DELSA:
		return "sa_deleted"
	case nl.XFRM_MSG_EXPIRE:
		if hard(nl.SizeofXfrmUsersaInfo) {
			return "sa_hard_expired"
		}
		return "sa_soft_expired"
	case nl.XFRM_MSG_FLUSHSA:
		return "sa_flushed"
	case nl.XFRM_MSG_ACQUIRE:
		return "acquire"
	case nl.XFRM_MSG_MAPPING:
		return "mapping_changed"
	case nl.XFRM_MSG_NEWPOLICY:
		return "policy_added"
	case nl.XFRM_MSG_UPDPOLICY:
		return "policy_updated"
	case nl.XFRM_MSG_DELPOLICY:
		return "policy_deleted"
	case nl.XFRM_MSG_POLEXPIRE:
		if hard(nl.SizeofXfrmUserpolicyInfo) {
			return "policy_hard_expired"
		}
		return "policy_soft_expired"
	case nl.XFRM_MSG_FLUSHPOLICY:
		return "policy_flushed"
	case nl.XFRM_MSG_NEWAE:
		return "replay_update"
	case nl.XFRM_MSG_REPORT:
		return "report"
	case nl.XFRM_MSG_MIGRATE:
		return "migrate"
	}
	return ""
}
