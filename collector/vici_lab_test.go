package collector

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	govici "github.com/strongswan/govici/vici"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// TestLabVici checks the vici collector against what Debian's swanctl
// prints for the same charon (--list-sas, --list-conns): every IKE SA with
// its state and peer, every child SA with its state, mode and SPIs (which
// are the kernel's), the timers, and a configured connection that never
// came up.
func TestLabVici(t *testing.T) {
	scenario.RequireVM(t)
	for _, dp := range scenario.DaemonPairs {
		if dp.A != scenario.StrongSwanKind {
			continue // the vici collector reads strongSwan only
		}
		for _, tunnel := range []bool{false, true} {
			name := dp.Name + "/transport"
			if tunnel {
				name = dp.Name + "/tunnel"
			}
			t.Run(name, func(t *testing.T) {
				p := scenario.NewPair(t)
				e := p.IKE(t, dp.A, dp.B, scenario.IKEOptions{Tunnel: tunnel, ChildRekey: 40 * time.Minute, ChildLifetime: time.Hour})
				charon := e.A.(*scenario.Charon)
				loadDownConnection(t, charon.VICI)
				exp := viciExporter(t, charon)
				s := exp.samples(t)
				now := time.Now()
				sas := parseListSAs(t, charon.Swanctl(t, "--list-sas"))
				conns := parseListConns(charon.Swanctl(t, "--list-conns"))

				if got := s.get(t, "ipsec_ike_daemon_up", nil); got != 1 {
					t.Fatalf("ipsec_ike_daemon_up %v", got)
				}
				if got := s.get(t, "ipsec_ike_daemon_info", labels("daemon", "charon")); got != 1 {
					t.Errorf("ipsec_ike_daemon_info %v", got)
				}
				if len(sas) != 1 {
					t.Fatalf("swanctl lists %d IKE SAs, want 1: %+v", len(sas), sas)
				}
				exported := 0
				for k := range s {
					if strings.HasPrefix(k, "ipsec_ike_sa_info{") {
						exported++
					}
				}
				if exported != len(sas) {
					t.Errorf("%d IKE SAs exported, swanctl lists %d", exported, len(sas))
				}
				for _, sa := range sas {
					id := labels("connection", sa.conn, "uid", sa.uid, "peer", sa.remote)
					if got := s.get(t, "ipsec_ike_sa_info", labels("connection", sa.conn, "uid", sa.uid, "peer", sa.remote, "state", sa.state)); got != 1 {
						t.Errorf("IKE SA %+v: ipsec_ike_sa_info %v", sa, got)
					}
					near(t, "IKE SA established", s.get(t, "ipsec_ike_sa_established_timestamp_seconds", id), now.Add(-sa.established))
					near(t, "IKE SA rekey", s.get(t, "ipsec_ike_sa_rekey_timestamp_seconds", id), now.Add(sa.rekey))
					if len(sa.children) != 1 {
						t.Errorf("swanctl lists %d child SAs, want 1: %+v", len(sa.children), sa.children)
					}
					for _, c := range sa.children {
						for dir, spi := range map[string]string{"in": c.in, "out": c.out} {
							l := labels("connection", sa.conn, "child", c.name, "uid", c.uid, "state", c.state, "mode", c.mode, "direction", dir, "spi", "0x"+spi)
							if got := s.get(t, "ipsec_ike_child_sa_info", l); got != 1 {
								t.Errorf("child %+v %s: ipsec_ike_child_sa_info %v", c, dir, got)
							}
						}
						cid := labels("connection", sa.conn, "child", c.name, "uid", c.uid)
						near(t, "child installed", s.get(t, "ipsec_ike_child_sa_installed_timestamp_seconds", cid), now.Add(-c.installed))
						near(t, "child rekey", s.get(t, "ipsec_ike_child_sa_rekey_timestamp_seconds", cid), now.Add(c.rekey))
						near(t, "child expiry", s.get(t, "ipsec_ike_child_sa_expiry_timestamp_seconds", cid), now.Add(c.expires))
						// The SPIs are the kernel's: the join to ipsec_sa_* holds.
						ab, ba := e.SPIs(t, p.A)
						if len(ab) != 1 || len(ba) != 1 || fmt.Sprintf("%08x", ab[0]) != c.out || fmt.Sprintf("%08x", ba[0]) != c.in {
							t.Errorf("child SPIs in %s out %s; A's kernel has A->B %x, B->A %x", c.in, c.out, ab, ba)
						}
					}
				}
				sort.Strings(conns)
				if fmt.Sprint(conns) != "[down lab]" {
					t.Errorf("swanctl --list-conns lists %v, want [down lab]", conns)
				}
				for conn, want := range map[string]float64{"lab": 1, "down": 0} {
					if got := s.get(t, "ipsec_ike_connection_info", labels("connection", conn)); got != 1 {
						t.Errorf("ipsec_ike_connection_info{connection=%s} %v", conn, got)
					}
					if got := s.get(t, "ipsec_ike_connection_established", labels("connection", conn)); got != want {
						t.Errorf("connection %s established %v, want %v", conn, got, want)
					}
					if got := s.get(t, "ipsec_ike_connection_children_installed", labels("connection", conn, "child", conn)); got != want {
						t.Errorf("connection %s children installed %v, want %v", conn, got, want)
					}
				}
				t.Logf("kernel %s, %s: vici agrees with swanctl on %d IKE SA(s) and connections %v", scenario.Kernel(), name, len(sas), conns)
			})
		}
	}
}

// loadDownConnection adds a connection to a peer that does not exist, which
// charon keeps configured and never establishes (no start action), through
// VICI's load-conn, which leaves the loaded ones alone.
func loadDownConnection(t *testing.T, socket string) {
	t.Helper()
	s, err := govici.NewSession(govici.WithSocketPath(socket))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	type auth struct {
		Auth string `vici:"auth"`
	}
	type child struct {
		LocalTS  []string `vici:"local_ts"`
		RemoteTS []string `vici:"remote_ts"`
	}
	type conn struct {
		Version     string           `vici:"version"`
		LocalAddrs  []string         `vici:"local_addrs"`
		RemoteAddrs []string         `vici:"remote_addrs"`
		Local       auth             `vici:"local"`
		Remote      auth             `vici:"remote"`
		Children    map[string]child `vici:"children"`
	}
	m, err := govici.MarshalMessage(map[string]conn{"down": {
		Version: "2", LocalAddrs: []string{"10.77.0.1"}, RemoteAddrs: []string{"10.77.0.99"},
		Local: auth{"psk"}, Remote: auth{"psk"},
		Children: map[string]child{"down": {LocalTS: []string{"10.77.0.1/32"}, RemoteTS: []string{"10.77.0.99/32"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Call(context.Background(), "load-conn", m); err != nil {
		t.Fatalf("load-conn: %v", err)
	}
}

// near checks a timestamp against what swanctl printed (whole seconds, and
// the two reads are a moment apart).
func near(t *testing.T, what string, got float64, want time.Time) {
	t.Helper()
	if math.Abs(got-float64(want.Unix())) > 3 {
		t.Errorf("%s: exporter %v, swanctl %v (%v apart)", what, got, want.Unix(), got-float64(want.Unix()))
	}
}

// listedSA is an IKE SA as swanctl --list-sas prints it.
type listedSA struct {
	conn, uid, state, remote string
	established, rekey       time.Duration
	children                 []listedChild
}

type listedChild struct {
	name, uid, state, mode    string
	in, out                   string // SPIs, hex
	installed, rekey, expires time.Duration
}

var (
	lsIKE      = regexp.MustCompile(`^(\S+): #(\d+), (\w+), IKEv\d`)
	lsRemote   = regexp.MustCompile(`^\s+remote .* @ (\S+)\[\d+\]`)
	lsChild    = regexp.MustCompile(`^\s+(\S+): #(\d+), reqid \d+, (\w+), (\w+),`)
	lsSPI      = regexp.MustCompile(`^\s+(in|out)\s+([0-9a-f]{8})`)
	lsDuration = regexp.MustCompile(`(established|installed|rekeying in|expires in) (\d+)s`)
)

func parseListSAs(t *testing.T, out string) []listedSA {
	t.Helper()
	var sas []listedSA
	var sa *listedSA
	var child *listedChild
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := lsIKE.FindStringSubmatch(line); m != nil && !strings.HasPrefix(line, " ") {
			sas = append(sas, listedSA{conn: m[1], uid: m[2], state: m[3]})
			sa, child = &sas[len(sas)-1], nil
			continue
		}
		if sa == nil {
			continue
		}
		if m := lsChild.FindStringSubmatch(line); m != nil {
			sa.children = append(sa.children, listedChild{name: m[1], uid: m[2], state: m[3], mode: m[4]})
			child = &sa.children[len(sa.children)-1]
			continue
		}
		if m := lsRemote.FindStringSubmatch(line); m != nil && child == nil {
			sa.remote = m[1]
		}
		if m := lsSPI.FindStringSubmatch(line); m != nil && child != nil {
			if m[1] == "in" {
				child.in = m[2]
			} else {
				child.out = m[2]
			}
		}
		for _, m := range lsDuration.FindAllStringSubmatch(line, -1) {
			n, _ := strconv.Atoi(m[2])
			d := time.Duration(n) * time.Second
			switch {
			case child == nil && m[1] == "established":
				sa.established = d
			case child == nil && m[1] == "rekeying in":
				sa.rekey = d
			case child != nil && m[1] == "installed":
				child.installed = d
			case child != nil && m[1] == "rekeying in":
				child.rekey = d
			case child != nil && m[1] == "expires in":
				child.expires = d
			}
		}
	}
	return sas
}

// parseListConns returns the connection names swanctl --list-conns prints
// ("NAME: IKEv2, ..." at the start of a line).
func parseListConns(out string) []string {
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, ": IKEv"); i > 0 && !strings.HasPrefix(line, " ") {
			names = append(names, line[:i])
		}
	}
	return names
}
