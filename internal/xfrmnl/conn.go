package xfrmnl

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
)

// Message types (include/uapi/linux/xfrm.h).
const (
	msgNewSA       = 0x10
	msgDelSA       = 0x11
	msgGetSA       = 0x12
	msgNewPolicy   = 0x13
	msgDelPolicy   = 0x14
	msgGetPolicy   = 0x15
	msgAcquire     = 0x17
	msgExpire      = 0x18
	msgUpdPolicy   = 0x19
	msgUpdSA       = 0x1a
	msgPolExpire   = 0x1b
	msgFlushSA     = 0x1c
	msgFlushPolicy = 0x1d
	msgNewAE       = 0x1e
	msgReport      = 0x20
	msgMigrate     = 0x21
	msgNewSADInfo  = 0x22
	msgGetSADInfo  = 0x23
	msgNewSPDInfo  = 0x24
	msgGetSPDInfo  = 0x25
	msgMapping     = 0x26
)

// recvBufSize holds the largest message batch the kernel sends in one
// datagram (netlink dumps fill at most 32 KiB per skb).
const recvBufSize = 64 << 10

// dumpRetries is how often a dump the kernel marks inconsistent (the tables
// changed under it) is started again before giving up.
const dumpRetries = 3

// ErrDumpInterrupted means the tables kept changing during every try.
var ErrDumpInterrupted = errors.New("xfrm dump interrupted by concurrent changes")

// Conn is a NETLINK_XFRM socket in one network namespace. A Conn is not safe
// for concurrent use.
type Conn struct {
	file *os.File
	raw  syscall.RawConn
	port uint32
	seq  uint32
	buf  []byte
	msgs []message // the messages of the last datagram, reused
	used int       // bytes of buf the last datagram filled
	// closed is set by Close: a receive that fails after it reports
	// os.ErrClosed (RawConn returns the poller's own error instead).
	closed atomic.Bool
}

// Dial opens a NETLINK_XFRM socket inside the namespace, subscribed to the
// given multicast groups (a bit mask, group g is 1<<(g-1); 0 for none). A
// namespace that is no longer there gives an error wrapping netnsx.ErrGone.
// The socket keeps the namespace alive until it is closed.
func Dial(ns netnsx.Namespace, groups uint32) (*Conn, error) {
	var fd int
	err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_XFRM)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("opening xfrm netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("binding xfrm netlink socket: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("xfrm netlink socket name: %w", err)
	}
	nlsa, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("xfrm netlink socket name: unexpected %T", sa)
	}
	// os.NewFile registers the non-blocking fd with the runtime poller, so a
	// blocked receive ends when Close is called.
	file := os.NewFile(uintptr(fd), "netlink-xfrm")
	raw, err := file.SyscallConn()
	if err != nil {
		_ = file.Close()
		return nil, fmt.Errorf("xfrm netlink socket: %w", err)
	}
	return &Conn{file: file, raw: raw, port: nlsa.Pid, buf: make([]byte, recvBufSize)}, nil
}

// Close closes the socket; a receive blocked in another goroutine returns.
func (c *Conn) Close() error {
	c.closed.Store(true)
	return c.file.Close()
}

// SetReadBuffer sets the socket's receive buffer, which bounds how many
// events can queue before the kernel drops them (ENOBUFS). SO_RCVBUFFORCE
// (with CAP_NET_ADMIN, which the listener needs anyway) goes beyond
// net.core.rmem_max; SO_RCVBUF, the fallback, is capped by it.
func (c *Conn) SetReadBuffer(bytes int) error {
	var serr error
	err := c.raw.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bytes); serr != nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, bytes)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// message is one netlink message of a received datagram.
type message struct {
	typ, flags uint16
	seq, port  uint32
	data       []byte
}

// receive reads one datagram, waiting for one, and splits it into
// messages. The messages point into c.buf: they are valid until the next
// receive, and wipe clears them (SA messages carry keys).
func (c *Conn) receive() ([]message, error) { return c.receiveOne(true) }

// receiveQueued is receive without the wait: unix.EAGAIN when nothing is
// queued.
func (c *Conn) receiveQueued() ([]message, error) { return c.receiveOne(false) }

func (c *Conn) receiveOne(wait bool) ([]message, error) {
	var n int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		// MSG_TRUNC makes recvfrom return the datagram's real length.
		n, _, rerr = unix.Recvfrom(int(fd), c.buf, unix.MSG_TRUNC)
		return !wait || rerr != unix.EAGAIN
	})
	if err != nil {
		if c.closed.Load() {
			return nil, os.ErrClosed
		}
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	c.used = min(n, len(c.buf))
	if n > len(c.buf) {
		c.wipe()
		return nil, fmt.Errorf("%w: datagram of %d bytes truncated", ErrMalformed, n)
	}
	c.msgs, err = splitMessages(c.msgs[:0], c.buf[:n])
	return c.msgs, err
}

// wipe zeroes what the last datagram filled of the receive buffer, so no
// key outlives the decoding.
func (c *Conn) wipe() {
	clear(c.buf[:c.used])
	c.used = 0
}

// splitMessages appends the messages of datagram b to msgs.
func splitMessages(msgs []message, b []byte) ([]message, error) {
	for len(b) > 0 {
		if len(b) < unix.NLMSG_HDRLEN {
			return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(b))
		}
		l := int(ne.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return nil, fmt.Errorf("%w: message length %d of %d bytes", ErrMalformed, l, len(b))
		}
		msgs = append(msgs, message{
			typ: ne.Uint16(b[4:6]), flags: ne.Uint16(b[6:8]),
			seq: ne.Uint32(b[8:12]), port: ne.Uint32(b[12:16]),
			data: b[unix.NLMSG_HDRLEN:l],
		})
		aligned := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		b = b[min(aligned, len(b)):]
	}
	return msgs, nil
}

// request sends one request and hands each reply message of type want to
// fn. With dump set it reads until NLMSG_DONE; otherwise until the first
// reply. It reports ErrDumpInterrupted when the kernel flagged the dump.
func (c *Conn) request(typ uint16, dump bool, payload []byte, want uint16, fn func([]byte) error) error {
	defer c.wipe()
	seq, err := c.send(typ, dump, payload)
	if err != nil {
		return err
	}
	interrupted := false
	for {
		msgs, err := c.receive()
		if err != nil {
			return fmt.Errorf("reading xfrm reply %#x: %w", typ, err)
		}
		for _, m := range msgs {
			if m.seq != seq || m.port != c.port {
				continue // not ours (a late reply to an older request)
			}
			if m.flags&unix.NLM_F_DUMP_INTR != 0 {
				interrupted = true
			}
			switch m.typ {
			case unix.NLMSG_DONE:
				if interrupted {
					return ErrDumpInterrupted
				}
				return nil
			case unix.NLMSG_ERROR:
				if len(m.data) < 4 {
					return fmt.Errorf("%w: short netlink error", ErrMalformed)
				}
				if errno := int32(ne.Uint32(m.data)); errno != 0 {
					return fmt.Errorf("xfrm request %#x: %w", typ, syscall.Errno(-errno))
				}
				return nil
			case want:
				if err := fn(m.data); err != nil {
					return err
				}
				if !dump {
					return nil
				}
			}
		}
		c.wipe()
	}
}

// send sends one request and returns its sequence number.
func (c *Conn) send(typ uint16, dump bool, payload []byte) (uint32, error) {
	c.seq++
	flags := uint16(unix.NLM_F_REQUEST)
	if dump {
		flags |= unix.NLM_F_DUMP
	}
	req := make([]byte, unix.NLMSG_HDRLEN+len(payload))
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], typ)
	ne.PutUint16(req[6:], flags)
	ne.PutUint32(req[8:], c.seq)
	copy(req[unix.NLMSG_HDRLEN:], payload)
	if err := unix.Sendto(c.fd(), req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("sending xfrm request %#x: %w", typ, err)
	}
	return c.seq, nil
}

// drops is the number of messages the kernel dropped for this socket
// because its buffer was full (SO_MEMINFO, SK_MEMINFO_DROPS; netlink counts
// every multicast message it could not queue).
func (c *Conn) drops() (uint32, error) {
	// enum sk_meminfo (include/uapi/linux/sock_diag.h): 9 u32, drops last.
	const skMeminfoDrops, skMeminfoVars = 8, 9
	var info [skMeminfoVars]uint32
	var serr error
	err := c.raw.Control(func(fd uintptr) {
		l := uint32(unsafe.Sizeof(info))
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&l)), 0)
		if errno != 0 {
			serr = errno
		}
	})
	if err == nil {
		err = serr
	}
	return info[skMeminfoDrops], err
}

// fd returns the socket's descriptor for sendto; the poller only matters
// for the blocking receive.
func (c *Conn) fd() int {
	var fd int
	_ = c.raw.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// dump runs request with retries while the kernel reports the dump as
// interrupted; reset is called before each try.
func (c *Conn) dump(typ, want uint16, reset func(), fn func([]byte) error) error {
	var err error
	for range dumpRetries {
		reset()
		err = c.request(typ, true, nil, want, fn)
		if !errors.Is(err, ErrDumpInterrupted) {
			return err
		}
	}
	return err
}

// SAs dumps every SA of the namespace (XFRM_MSG_GETSA).
func (c *Conn) SAs() ([]SA, error) {
	var sas []SA
	err := c.dump(msgGetSA, msgNewSA, func() { sas = sas[:0] }, func(b []byte) error {
		sas = append(sas, SA{})
		return decodeSA(&sas[len(sas)-1], b)
	})
	if err != nil {
		return nil, fmt.Errorf("dumping SAs: %w", err)
	}
	return sas, nil
}

// EachSA dumps every SA of the namespace and calls fn with each, decoded
// into one SA that is reused: fn copies what it keeps. Nothing else is held
// per SA, so 50,000 SAs cost the memory of one. If the kernel marks the dump
// inconsistent, fn has seen an unreliable set and EachSA returns
// ErrDumpInterrupted: the caller starts again.
func (c *Conn) EachSA(fn func(*SA) error) error {
	var sa SA
	err := c.request(msgGetSA, true, nil, msgNewSA, func(b []byte) error {
		if err := decodeSA(&sa, b); err != nil {
			return err
		}
		return fn(&sa)
	})
	if err != nil {
		return fmt.Errorf("dumping SAs: %w", err)
	}
	return nil
}

// Policies dumps every policy of the namespace (XFRM_MSG_GETPOLICY),
// per-socket ones included.
func (c *Conn) Policies() ([]Policy, error) {
	var pols []Policy
	err := c.dump(msgGetPolicy, msgNewPolicy, func() { pols = pols[:0] }, func(b []byte) error {
		pols = append(pols, Policy{})
		return decodePolicy(&pols[len(pols)-1], b)
	})
	if err != nil {
		return nil, fmt.Errorf("dumping policies: %w", err)
	}
	return pols, nil
}

// EachPolicy is EachSA for policies.
func (c *Conn) EachPolicy(fn func(*Policy) error) error {
	var p Policy
	err := c.request(msgGetPolicy, true, nil, msgNewPolicy, func(b []byte) error {
		if err := decodePolicy(&p, b); err != nil {
			return err
		}
		return fn(&p)
	})
	if err != nil {
		return fmt.Errorf("dumping policies: %w", err)
	}
	return nil
}

// SADInfo asks for the SA database summary (XFRM_MSG_GETSADINFO).
func (c *Conn) SADInfo() (SADInfo, error) {
	var info SADInfo
	var got bool
	err := c.request(msgGetSADInfo, false, make([]byte, 4), msgNewSADInfo, func(b []byte) error {
		var err error
		info, err = ParseSADInfo(b)
		got = err == nil
		return err
	})
	if err == nil && !got {
		err = fmt.Errorf("%w: no SAD info in reply", ErrMalformed)
	}
	if err != nil {
		return info, fmt.Errorf("reading SAD info: %w", err)
	}
	return info, nil
}

// SPDInfo asks for the policy database summary (XFRM_MSG_GETSPDINFO).
func (c *Conn) SPDInfo() (SPDInfo, error) {
	var info SPDInfo
	var got bool
	err := c.request(msgGetSPDInfo, false, make([]byte, 4), msgNewSPDInfo, func(b []byte) error {
		var err error
		info, err = ParseSPDInfo(b)
		got = err == nil
		return err
	})
	if err == nil && !got {
		err = fmt.Errorf("%w: no SPD info in reply", ErrMalformed)
	}
	if err != nil {
		return info, fmt.Errorf("reading SPD info: %w", err)
	}
	return info, nil
}
