package scenario

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"
)

// strongSwan in a lab namespace: Debian 12's charon (5.9) in the foreground
// with its own strongswan.conf (STRONGSWAN_CONF), /run and VICI socket, the
// connection loaded with Debian's swanctl, as an operator would.
const (
	charonBin  = "/usr/lib/ipsec/charon"
	swanctlBin = "/usr/sbin/swanctl"
)

// Charon is a running charon.
type Charon struct {
	*daemonProc
	node *Node
	conf string // strongswan.conf
	// VICI is the path of its VICI socket (unix).
	VICI string
}

// startCharon writes the configuration of end, starts charon in end's
// namespace and loads the connection with swanctl.
func startCharon(t TB, end ikeEnd, o IKEOptions) *Charon {
	t.Helper()
	dir := daemonDir(t, "charon", end.Node)
	c := &Charon{node: end.Node, conf: filepath.Join(dir, "strongswan.conf"), VICI: filepath.Join(dir, "charon.vici")}
	writeFile(t, c.conf, charonConf(c.VICI), 0o644)
	writeFile(t, filepath.Join(dir, "swanctl.conf"), swanctlConf(end, o), 0o600)
	c.daemonProc = startProc(t, "charon", end.Node, dir, c.env(), charonBin)
	if !waitFor(30*time.Second, func() bool { return c.Running() && socketAnswers(c.VICI) }) {
		t.Fatalf("%s: charon's VICI socket %s not up after 30s; log:\n%s", end.Node.Name, c.VICI, c.LogTail())
	}
	c.Swanctl(t, "--load-all", "--file", filepath.Join(dir, "swanctl.conf"))
	return c
}

func (c *Charon) env() []string { return []string{"STRONGSWAN_CONF=" + c.conf} }

// Swanctl runs Debian's swanctl against this charon and returns its output.
func (c *Charon) Swanctl(t TB, args ...string) string {
	t.Helper()
	return run(t, c.node, c.env(), append([]string{swanctlBin}, append(args, "--uri", "unix://"+c.VICI)...)...)
}

func socketAnswers(path string) bool {
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// charonConf is strongswan.conf: only the plugins PSK needs, no routes of
// its own (the scenario routes), quick retransmits (DPD declares a peer
// dead after about 5 s instead of minutes), log to stderr.
func charonConf(vici string) string {
	plugins := "random nonce aes sha1 sha2 hmac gcm gmp kdf kernel-netlink socket-default vici"
	// swanctl loads only library plugins (the others are charon's).
	swanctlPlugins := "random nonce aes sha1 sha2 hmac gcm gmp kdf"
	return fmt.Sprintf(`charon {
	load = %[1]s
	install_routes = no
	install_virtual_ip = no
	retransmit_tries = 3
	retransmit_timeout = 1.0
	retransmit_base = 1.4
	filelog {
		stderr {
			default = 1
			ike_name = yes
			time_format = %%T
		}
	}
	plugins {
		vici {
			socket = unix://%[2]s
		}
	}
}
swanctl {
	load = %[3]s
	socket = unix://%[2]s
}
`, plugins, vici, swanctlPlugins)
}

// swanctlConf is the connection and its PSK in swanctl.conf syntax.
func swanctlConf(end ikeEnd, o IKEOptions) string {
	mode := "transport"
	if o.Tunnel {
		mode = "tunnel"
	}
	start := "none" // the responder waits
	if end.Initiator {
		start = "start"
		if o.Trap {
			start = "trap"
		}
	}
	rekey, life := o.childRekey(), o.childLifetime()
	if !end.Initiator {
		// The responder rekeys later, so the initiator's rekeys are the ones
		// that happen (both rekeying at once is a collision).
		rekey, life = rekey*3/2, life*3/2
	}
	var conn []string
	if o.IKERekey > 0 {
		conn = append(conn, "rekey_time = "+seconds(o.IKERekey)+"s")
	}
	if o.DPD > 0 {
		conn = append(conn, "dpd_delay = "+seconds(o.DPD)+"s")
	}
	if o.Encap {
		conn = append(conn, "encap = yes")
	} else {
		// Without MOBIKE and with no NAT, charon stays on port 500 for the
		// whole exchange: UDP 4500 may already be taken in the namespace (an
		// ESP-in-UDP socket of a hand-made SA, as in the end-to-end driver).
		conn = append(conn, "mobike = no")
	}
	return fmt.Sprintf(`connections {
	%[1]s {
		version = 2
		local_addrs = %[2]s
		remote_addrs = %[3]s
		proposals = aes128-sha256-modp2048
		%[4]s
		local {
			auth = psk
			id = %[2]s
		}
		remote {
			auth = psk
			id = %[3]s
		}
		children {
			%[1]s {
				local_ts = %[5]s
				remote_ts = %[6]s
				mode = %[7]s
				esp_proposals = aes128gcm16
				rekey_time = %[8]ss
				life_time = %[9]ss
				rand_time = 0s
				start_action = %[10]s
				dpd_action = clear
			}
		}
	}
}
secrets {
	ike-%[1]s {
		id-local = %[2]s
		id-remote = %[3]s
		secret = "%[11]s"
	}
}
`, o.name(), end.Addr, end.RemoteAddr, strings.Join(conn, "\n\t\t"), end.TS, end.RemoteTS, mode,
		seconds(rekey), seconds(life), start, end.PSK)
}
