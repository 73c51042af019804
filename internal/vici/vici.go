// Package vici reads strongSwan's IKE state over its VICI socket (charon's
// control protocol), with strongSwan's own Go library: the daemon's version,
// its configured connections and its IKE and child SAs. It asks only the
// read-only commands "version", "list-conns", "get-conns", "list-sas" and
// "stats"; none of their answers carries a key or a pre-shared secret
// (credentials are only ever written to charon, and this package never asks
// for them).
package vici

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	govici "github.com/strongswan/govici/vici"
)

// DefaultSocket is charon's VICI socket on Debian and most distributions.
const DefaultSocket = "/var/run/charon.vici"

// Snapshot is what the daemon reported in one exchange.
type Snapshot struct {
	Daemon, Version string // "charon", "5.9.8"
	Conns           []Conn
	IKESAs          []IKESA
}

// Conn is a configured connection (swanctl.conf `connections`).
type Conn struct {
	Name        string
	Version     string   // "IKEv1", "IKEv2", "IKEv1/2"
	LocalAddrs  []string // as configured: addresses, names, ranges, %any
	RemoteAddrs []string
	Children    []string // child names, sorted
}

// RemotePeers are the remote addresses that name one host (not %any, a
// range, a subnet or a DNS name): the peers this connection will talk to.
func (c Conn) RemotePeers() []netip.Addr {
	var out []netip.Addr
	for _, a := range c.RemoteAddrs {
		if ip, err := netip.ParseAddr(strings.TrimSpace(a)); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// IKESA is one IKE SA with its child SAs.
type IKESA struct {
	Conn     string // the connection it belongs to
	UniqueID string
	Version  string
	State    string // CREATED, CONNECTING, ESTABLISHED, PASSIVE, REKEYING, REKEYED, DELETING, DESTROYING
	Local    netip.Addr
	Remote   netip.Addr
	Since    time.Duration // since it was established (0: not yet)
	RekeyIn  time.Duration // until its scheduled rekey (0: none)
	ReauthIn time.Duration // until its scheduled reauthentication (0: none)
	Children []ChildSA
	// Which of the durations the daemon reported.
	HasSince, HasRekey, HasReauth bool
}

// ChildSA is one child (IPsec) SA.
type ChildSA struct {
	Name           string // the configured child's name
	UniqueID       string
	State          string // INSTALLING, INSTALLED, REKEYING, REKEYED, DELETING, ...
	Mode, Protocol string // TUNNEL/TRANSPORT/BEET, ESP/AH
	SPIIn, SPIOut  uint32
	InstalledAgo   time.Duration // since it was installed in the kernel
	RekeyIn        time.Duration // until its scheduled rekey
	ExpiresIn      time.Duration // until its hard lifetime ends
	// Which of the durations the daemon reported.
	HasInstalled, HasRekey, HasExpiry bool
}

// Client reads one daemon's VICI socket; each Read opens its own session,
// so a restarted daemon is found again without any state kept here.
type Client struct {
	Socket  string
	Timeout time.Duration // for the whole exchange
}

// ErrUnreachable wraps every failure to reach the daemon (no socket, nobody
// listening, a timeout), as opposed to an answer that could not be read.
var ErrUnreachable = errors.New("vici: daemon unreachable")

// Read asks the daemon for its version, connections and SAs.
func (c *Client) Read(ctx context.Context) (snap *Snapshot, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	s, err := govici.NewSession(govici.WithSocketPath(c.Socket))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, c.Socket, err)
	}
	defer func() {
		if cerr := s.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("vici: closing the session: %w", cerr)
		}
	}()
	snap = &Snapshot{}
	v, err := s.Call(ctx, "version", nil)
	if err != nil {
		return nil, fmt.Errorf("%w: version: %w", ErrUnreachable, err)
	}
	snap.Daemon, _ = v.Get("daemon").(string)
	snap.Version, _ = v.Get("version").(string)
	// The listings are plain calls with their events subscribed, not
	// govici's streamed calls: a streamed call picks between its event and
	// response queues at random, so it can end before the last events,
	// which then answer the next command ("unexpected response type: 7").
	// A plain call returns on the response, which charon sends after the
	// listing's events, and govici's reader hands each event to the
	// subscribers before it reads the next packet: when the call returns,
	// every event is in the channel. Subscribed before any command, when no
	// event can be on its way (govici holds its event lock while it
	// registers, and an event arriving then would wait on it for good); never
	// unsubscribed for the same reason: Close ends the session.
	if err := s.Subscribe(listConnEvent, listSAEvent); err != nil {
		return nil, fmt.Errorf("subscribing to the listings: %w", err)
	}
	// Each listing is checked against a count charon gives in one message
	// (get-conns: the names; stats: the IKE SAs), which also sizes the
	// event channel (govici drops an event that finds it full), and read
	// again on a mismatch: the daemon's set changed meanwhile.
	want, err := countConns(ctx, s)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		if snap.Conns, err = listConns(ctx, s, want); err != nil {
			return nil, err
		}
		if want, err = countConns(ctx, s); err != nil {
			return nil, err
		}
		if len(snap.Conns) == want || attempt == 3 {
			break
		}
	}
	if want, err = countIKESAs(ctx, s); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		if snap.IKESAs, err = listSAs(ctx, s, want); err != nil {
			return nil, err
		}
		if want, err = countIKESAs(ctx, s); err != nil {
			return nil, err
		}
		if len(snap.IKESAs) == want || attempt == 3 {
			break
		}
	}
	sort.Slice(snap.Conns, func(i, j int) bool { return snap.Conns[i].Name < snap.Conns[j].Name })
	return snap, nil
}

// The events charon sends for each connection of list-conns and each IKE SA
// of list-sas.
const listConnEvent, listSAEvent = "list-conn", "list-sa"

// listRoom is the room in a listing's event channel beyond the count taken
// before it, for what appears meanwhile.
const listRoom = 64

// listed makes a listing call and returns the events named event that it
// sent, at most want+listRoom (the rest are dropped, and the count that
// follows tells).
func listed(ctx context.Context, s *govici.Session, cmd, event string, want int) ([]*govici.Message, error) {
	ch := make(chan govici.Event, want+listRoom)
	s.NotifyEvents(ch)
	defer s.StopEvents(ch)
	if _, err := s.Call(ctx, cmd, nil); err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	var out []*govici.Message
	for {
		select {
		case ev, ok := <-ch:
			if !ok { // the session ended; the call had its answer
				return out, nil
			}
			if ev.Name == event {
				out = append(out, ev.Message)
			}
		default:
			return out, nil
		}
	}
}

func countConns(ctx context.Context, s *govici.Session) (int, error) {
	names, err := s.Call(ctx, "get-conns", nil)
	if err != nil {
		return 0, fmt.Errorf("get-conns: %w", err)
	}
	conns, _ := names.Get("conns").([]string)
	return len(conns), nil
}

func countIKESAs(ctx context.Context, s *govici.Session) (int, error) {
	stats, err := s.Call(ctx, "stats", nil)
	if err != nil {
		return 0, fmt.Errorf("stats: %w", err)
	}
	var total int
	if ikesas, ok := stats.Get("ikesas").(*govici.Message); ok {
		total, _ = strconv.Atoi(fmt.Sprint(ikesas.Get("total")))
	}
	return total, nil
}

func listConns(ctx context.Context, s *govici.Session, want int) ([]Conn, error) {
	msgs, err := listed(ctx, s, "list-conns", listConnEvent, want)
	if err != nil {
		return nil, err
	}
	var out []Conn
	for _, m := range msgs {
		conns, err := parseConns(m)
		if err != nil {
			return nil, err
		}
		out = append(out, conns...)
	}
	return out, nil
}

func listSAs(ctx context.Context, s *govici.Session, want int) ([]IKESA, error) {
	msgs, err := listed(ctx, s, "list-sas", listSAEvent, want)
	if err != nil {
		return nil, err
	}
	var out []IKESA
	for _, m := range msgs {
		sas, err := parseSAs(m)
		if err != nil {
			return nil, err
		}
		out = append(out, sas...)
	}
	return out, nil
}

type connMsg struct {
	Version     string   `vici:"version"`
	LocalAddrs  []string `vici:"local_addrs"`
	RemoteAddrs []string `vici:"remote_addrs"`
}

// parseConns reads one list-conn event: {NAME {local_addrs=[..] ...}}.
func parseConns(m *govici.Message) ([]Conn, error) {
	var out []Conn
	for _, name := range m.Keys() {
		sec, ok := m.Get(name).(*govici.Message)
		if !ok {
			continue
		}
		var cm connMsg
		if err := govici.UnmarshalMessage(sec, &cm); err != nil {
			return nil, fmt.Errorf("list-conn %q: %w", name, err)
		}
		c := Conn{Name: name, Version: cm.Version, LocalAddrs: cm.LocalAddrs, RemoteAddrs: cm.RemoteAddrs}
		if children, ok := sec.Get("children").(*govici.Message); ok {
			c.Children = children.Keys()
			sort.Strings(c.Children)
		}
		out = append(out, c)
	}
	return out, nil
}

type ikeSAMsg struct {
	UniqueID    string `vici:"uniqueid"`
	Version     string `vici:"version"`
	State       string `vici:"state"`
	LocalHost   string `vici:"local-host"`
	RemoteHost  string `vici:"remote-host"`
	Established string `vici:"established"`
	RekeyTime   string `vici:"rekey-time"`
	ReauthTime  string `vici:"reauth-time"`
}

type childSAMsg struct {
	Name        string `vici:"name"`
	UniqueID    string `vici:"uniqueid"`
	State       string `vici:"state"`
	Mode        string `vici:"mode"`
	Protocol    string `vici:"protocol"`
	SPIIn       string `vici:"spi-in"`
	SPIOut      string `vici:"spi-out"`
	InstallTime string `vici:"install-time"`
	RekeyTime   string `vici:"rekey-time"`
	LifeTime    string `vici:"life-time"`
}

// parseSAs reads one list-sa event: {CONN {uniqueid=.. child-sas {..}}}.
func parseSAs(m *govici.Message) ([]IKESA, error) {
	var out []IKESA
	for _, conn := range m.Keys() {
		sec, ok := m.Get(conn).(*govici.Message)
		if !ok {
			continue
		}
		var im ikeSAMsg
		if err := govici.UnmarshalMessage(sec, &im); err != nil {
			return nil, fmt.Errorf("list-sa %q: %w", conn, err)
		}
		sa := IKESA{Conn: conn, UniqueID: im.UniqueID, Version: im.Version, State: im.State}
		sa.Local, _ = netip.ParseAddr(im.LocalHost)
		sa.Remote, _ = netip.ParseAddr(im.RemoteHost)
		sa.Local, sa.Remote = sa.Local.Unmap(), sa.Remote.Unmap()
		sa.Since, sa.HasSince = seconds(im.Established)
		sa.RekeyIn, sa.HasRekey = seconds(im.RekeyTime)
		sa.ReauthIn, sa.HasReauth = seconds(im.ReauthTime)
		if children, ok := sec.Get("child-sas").(*govici.Message); ok {
			for _, key := range children.Keys() {
				csec, ok := children.Get(key).(*govici.Message)
				if !ok {
					continue
				}
				var cm childSAMsg
				if err := govici.UnmarshalMessage(csec, &cm); err != nil {
					return nil, fmt.Errorf("list-sa %q child %q: %w", conn, key, err)
				}
				ch := ChildSA{Name: cm.Name, UniqueID: cm.UniqueID, State: cm.State, Mode: cm.Mode, Protocol: cm.Protocol}
				ch.SPIIn, ch.SPIOut = spi(cm.SPIIn), spi(cm.SPIOut)
				ch.InstalledAgo, ch.HasInstalled = seconds(cm.InstallTime)
				ch.RekeyIn, ch.HasRekey = seconds(cm.RekeyTime)
				ch.ExpiresIn, ch.HasExpiry = seconds(cm.LifeTime)
				sa.Children = append(sa.Children, ch)
			}
			sort.Slice(sa.Children, func(i, j int) bool { return sa.Children[i].UniqueID < sa.Children[j].UniqueID })
		}
		out = append(out, sa)
	}
	return out, nil
}

// seconds reads a VICI duration (decimal seconds); absent or malformed is
// not set.
func seconds(s string) (time.Duration, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// spi reads a VICI SPI (hex, no prefix); malformed is 0.
func spi(s string) uint32 {
	n, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return 0
	}
	return uint32(n)
}
