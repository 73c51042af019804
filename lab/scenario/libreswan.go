package scenario

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Libreswan in a lab namespace: Debian 12's pluto (4.10) in the foreground
// with its run directory, NSS database, secrets and configuration given as
// flags, the connection added with addconn and started with whack.
const (
	plutoBin    = "/usr/libexec/ipsec/pluto"
	whackBin    = "/usr/libexec/ipsec/whack"
	addconnBin  = "/usr/libexec/ipsec/addconn"
	certutilBin = "/usr/bin/certutil"
)

// Pluto is a running pluto.
type Pluto struct {
	*daemonProc
	node *Node
	conf string
	// Ctl is the path of its control socket (whack's).
	Ctl string
}

func startPluto(t TB, end ikeEnd, o IKEOptions) *Pluto {
	t.Helper()
	dir := daemonDir(t, "pluto", end.Node)
	nss := filepath.Join(dir, "nss")
	if err := os.MkdirAll(nss, 0o700); err != nil {
		t.Fatal(err)
	}
	// pluto needs an NSS database even when it holds no certificate.
	run(t, end.Node, nil, certutilBin, "-N", "-d", "sql:"+nss, "--empty-password")
	p := &Pluto{node: end.Node, conf: filepath.Join(dir, "ipsec.conf"), Ctl: filepath.Join(dir, "run", "pluto.ctl")}
	secrets := filepath.Join(dir, "ipsec.secrets")
	writeFile(t, p.conf, plutoConf(end, o), 0o644)
	writeFile(t, secrets, fmt.Sprintf("%s %s : PSK %q\n", end.Addr, end.RemoteAddr, end.PSK), 0o600)
	p.daemonProc = startProc(t, "pluto", end.Node, dir, nil, plutoBin,
		"--nofork", "--stderrlog", "--config", p.conf, "--rundir", filepath.Join(dir, "run"),
		"--nssdir", nss, "--secretsfile", secrets, "--ipsecdir", dir, "--no-dnssec")
	if !waitFor(30*time.Second, func() bool { return p.Running() && socketAnswers(p.Ctl) }) {
		t.Fatalf("%s: pluto's control socket %s not up after 30s; log:\n%s", end.Node.Name, p.Ctl, p.LogTail())
	}
	run(t, end.Node, nil, addconnBin, "--config", p.conf, "--ctlsocket", p.Ctl, "--autoall")
	switch {
	case end.Initiator && o.Trap:
		// auto=ondemand is only added by addconn: routing installs the trap
		// policies (as `ipsec auto --route` does).
		p.Whack(t, "--name", o.name(), "--route")
	case end.Initiator:
		p.Whack(t, "--name", o.name(), "--initiate", "--asynchronous")
	}
	return p
}

// Whack runs Libreswan's whack against this pluto.
func (p *Pluto) Whack(t TB, args ...string) string {
	t.Helper()
	return run(t, p.node, nil, append([]string{whackBin, "--ctlsocket", p.Ctl}, args...)...)
}

// plutoConf is ipsec.conf for the connection of end.
func plutoConf(end ikeEnd, o IKEOptions) string {
	mode, subnets := "transport", ""
	if o.Tunnel {
		mode = "tunnel"
		subnets = fmt.Sprintf("leftsubnet=%s\n\trightsubnet=%s\n\t", end.TS, end.RemoteTS)
	}
	auto := "add" // the responder waits
	if end.Initiator {
		auto = "add"
		if o.Trap {
			auto = "ondemand"
		}
	}
	rekey, life := o.childRekey(), o.childLifetime()
	if !end.Initiator {
		rekey, life = rekey*3/2, life*3/2
	}
	ikeLife := 4 * time.Hour
	if o.IKERekey > 0 {
		ikeLife = o.IKERekey + life - rekey
	}
	dpd := ""
	if o.DPD > 0 {
		// IKEv2 liveness: a probe every DPD; the peer is dead when one stays
		// unanswered through the retransmits (retransmit-timeout).
		dpd = fmt.Sprintf("dpddelay=%s\n\tretransmit-timeout=5s\n\tdpdaction=clear\n\t", seconds(o.DPD))
	}
	if o.Encap {
		dpd += "encapsulation=yes\n\t"
	}
	return fmt.Sprintf(`config setup
	plutodebug=none

conn %[1]s
	ikev2=insist
	authby=secret
	left=%[2]s
	right=%[3]s
	%[4]stype=%[5]s
	ike=aes128-sha2_256-modp2048
	esp=aes_gcm128
	pfs=no
	salifetime=%[6]ss
	rekeymargin=%[7]ss
	rekeyfuzz=0%%
	ikelifetime=%[8]ss
	retransmit-interval=500
	# no updown script: the scenario routes (Debian's calls the ipsec script)
	leftupdown=/bin/true
	%[9]sauto=%[10]s
`, o.name(), end.Addr, end.RemoteAddr, subnets, mode,
		seconds(life), seconds(life-rekey), seconds(ikeLife), dpd, auto)
}
