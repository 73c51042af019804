package scenario

import (
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// XfrmEvents counts the kernel's own XFRM event stream in one namespace:
// every message on its XFRM netlink multicast groups, by type, read on a
// socket of the test's own (independent of the exporter's listener). Names
// are those of ipsec_xfrm_events_total{event}.
type XfrmEvents struct {
	mu      sync.Mutex
	counts  Counters
	overrun bool
}

// Every XFRM netlink multicast group (linux/xfrm.h XFRMNLGRP_*): acquire,
// expire, sa, policy, aevents, report, migrate, mapping.
var xfrmGroups = uint32(1<<8 - 1)

// WatchXfrmEvents subscribes in n and counts until the test ends.
func (n *Netns) WatchXfrmEvents(t testing.TB) *XfrmEvents {
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
	ev := &XfrmEvents{counts: Counters{}}
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
func (ev *XfrmEvents) Counts(t testing.TB) Counters {
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
