package xfrmnl

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// TestLabDecoders checks our decoders against an independent one
// (vishvananda/netlink, which the lab uses to install the SAs) and against
// Debian's ip for what that one lacks (ESN sequence numbers, SAD/SPD
// counts), on real SAs of every kind the lab makes: AEAD and CBC+HMAC,
// transport and tunnel, IPv4 and IPv6, NAT-T, ESN, and the 6.10+ direction
// attribute. It prints the raw messages (keys zeroed) for the fuzz corpus.
func TestLabDecoders(t *testing.T) {
	scenario.RequireVM(t)
	// Three pairs, as their v4 selectors would overlap in one.
	p, natt, plain := scenario.NewPair(t), scenario.NewPair(t), scenario.NewPair(t)
	events, err := Dial(labNamespace(t, p.A.Netns), EventGroups)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = events.Close() }()
	e4 := plain.ESP(t, scenario.ESPOptions{})
	plain.ESP(t, scenario.ESPOptions{IPv6: true, Tunnel: true, Cipher: scenario.CBCHMAC})
	en := natt.ESP(t, scenario.ESPOptions{NATT: true, Cipher: scenario.CBCHMAC})
	esn := esnPair(t, p)
	dirSA := addDirSA(t, p)
	if got := p.A.Ping(t, p.B.IPv4, 4); got != 4 {
		t.Fatalf("%d of 4 replies over the ESN SA", got)
	}
	plain.A.Ping(t, e4.BAddr, 2)
	natt.A.Ping(t, en.BAddr, 2)

	for _, n := range []*scenario.Node{p.A, p.B, natt.A, natt.B, plain.A, plain.B} {
		c, err := Dial(labNamespace(t, n.Netns), 0)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		ours, err := c.SAs()
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := n.NL.XfrmStateList(netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		if len(ours) != len(theirs) {
			t.Fatalf("%s: %d SAs decoded, netlink library has %d", n.Name, len(ours), len(theirs))
		}
		for i := range ours {
			compareSA(t, n.Name, &ours[i], theirs)
		}
		if n == p.A || n == p.B {
			checkESN(t, n, ours, esn)
		}

		sad, err := c.SADInfo()
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("SAD count %d", sad.Count); !strings.Contains(n.IP(t, "xfrm", "state", "count"), want) {
			t.Errorf("%s: ip says %q, we %q", n.Name, n.IP(t, "xfrm", "state", "count"), want)
		}
		spd, err := c.SPDInfo()
		if err != nil {
			t.Fatal(err)
		}
		// ip prints the socket counts only with -s.
		ipCount := n.IP(t, "-s", "xfrm", "policy", "count")
		m := ipSPD.FindStringSubmatch(ipCount)
		if m == nil {
			t.Fatalf("%s: ip policy count %q", n.Name, ipCount)
		}
		for i := 4; i <= 6; i++ {
			if m[i] == "" {
				m[i] = "0"
			}
		}
		got := fmt.Sprint(spd.In, spd.Out, spd.Fwd, spd.SocketIn, spd.SocketOut, spd.SocketFwd)
		if want := strings.Join(m[1:], " "); got != want {
			t.Errorf("%s: SPD counts ours %s, ip %s (%q)", n.Name, got, want, ipCount)
		}
		comparePolicies(t, n, c)
		printSeeds(t, c, n.Name)
	}
	if dirSA != 0 {
		c, _ := Dial(labNamespace(t, p.A.Netns), 0)
		defer func() { _ = c.Close() }()
		sas, _ := c.SAs()
		found := false
		for _, sa := range sas {
			if sa.SPI == dirSA {
				found = true
				if sa.Dir != SADirOut {
					t.Errorf("SA with dir out decoded as dir %d", sa.Dir)
				}
			}
		}
		if !found {
			t.Error("SA with a direction not dumped")
		}
	}
	// The notifications of all that, raw, for the corpus.
	_ = events.file.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	kinds := map[uint16]bool{}
	for {
		msgs, err := events.receive()
		if err != nil {
			break
		}
		for _, m := range msgs {
			if _, ok, err := ParseNotification(m.typ, m.data); err != nil || !ok {
				t.Errorf("notification type %#x: ok %v, %v", m.typ, ok, err)
			}
			if !kinds[m.typ] {
				kinds[m.typ] = true
				t.Logf("FUZZSEED FuzzParseNotification event-%#x %d %s", m.typ, m.typ, hex.EncodeToString(scrubbed(m.typ, m.data)))
			}
		}
	}
}

// labNamespace is a scenario namespace as the exporter finds it.
func labNamespace(t *testing.T, n *scenario.Netns) netnsx.Namespace {
	t.Helper()
	ns, err := netnsx.At(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// esnPair installs an ESN SA A->B (replay window 128) with policies, so a
// ping from A to B goes through it; replies come back in plaintext.
func esnPair(t *testing.T, p *scenario.Pair) uint32 {
	const spi = 0xe5e5
	st := func() *netlink.XfrmState {
		return &netlink.XfrmState{Src: p.A.IPv4.AsSlice(), Dst: p.B.IPv4.AsSlice(), Proto: netlink.XFRM_PROTO_ESP,
			Mode: netlink.XFRM_MODE_TRANSPORT, Spi: spi, Reqid: spi, ReplayWindow: 128, ESN: true,
			Aead: &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: bytes.Repeat([]byte{7}, 20), ICVLen: 128}}
	}
	scenario.AddSA(t, p.A.Netns, st())
	scenario.AddSA(t, p.B.Netns, st())
	host := func(a netip.Addr) *net.IPNet { return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)} }
	tmpl := []netlink.XfrmPolicyTmpl{{Src: p.A.IPv4.AsSlice(), Dst: p.B.IPv4.AsSlice(), Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT, Reqid: spi}}
	scenario.AddPolicy(t, p.A.Netns, &netlink.XfrmPolicy{Src: host(p.A.IPv4), Dst: host(p.B.IPv4), Proto: unix.IPPROTO_ICMP, Dir: netlink.XFRM_DIR_OUT, Tmpls: tmpl})
	scenario.AddPolicy(t, p.B.Netns, &netlink.XfrmPolicy{Src: host(p.A.IPv4), Dst: host(p.B.IPv4), Proto: unix.IPPROTO_ICMP, Dir: netlink.XFRM_DIR_IN, Tmpls: tmpl})
	return spi
}

// addDirSA adds an outbound SA marked with the direction attribute where
// the kernel knows it (6.10+), else returns 0.
func addDirSA(t *testing.T, p *scenario.Pair) uint32 {
	if scenario.Kernel() == "6.1" {
		return 0
	}
	const spi = 0xd1d1
	s := &netlink.XfrmState{Src: p.A.IPv4.AsSlice(), Dst: net.ParseIP("10.77.0.99"), Proto: netlink.XFRM_PROTO_ESP,
		Mode: netlink.XFRM_MODE_TRANSPORT, Spi: spi, SADir: netlink.XFRM_SA_DIR_OUT,
		Aead: &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: bytes.Repeat([]byte{9}, 20), ICVLen: 128}}
	scenario.AddSA(t, p.A.Netns, s)
	return spi
}

func compareSA(t *testing.T, ns string, ours *SA, theirs []netlink.XfrmState) {
	t.Helper()
	var lib *netlink.XfrmState
	for i := range theirs {
		dst, _ := netip.AddrFromSlice(theirs[i].Dst)
		if uint32(theirs[i].Spi) == ours.SPI && dst.Unmap() == ours.Dst.Unmap() {
			lib = &theirs[i]
		}
	}
	if lib == nil {
		t.Errorf("%s: SA spi %#x dst %s unknown to the netlink library", ns, ours.SPI, ours.Dst)
		return
	}
	name := func(a *netlink.XfrmStateAlgo) string {
		if a == nil {
			return ""
		}
		return a.Name
	}
	src, _ := netip.AddrFromSlice(lib.Src)
	st := lib.Statistics
	type row struct {
		field     string
		ours, lib any
	}
	rows := []row{
		{"src", ours.Src.Unmap(), src.Unmap()},
		{"proto", int(ours.Proto), int(lib.Proto)},
		{"mode", int(ours.Mode), int(lib.Mode)},
		{"reqid", int(ours.Reqid), lib.Reqid},
		{"limits", ours.Limits, Limits{lib.Limits.ByteSoft, lib.Limits.ByteHard, lib.Limits.PacketSoft, lib.Limits.PacketHard,
			lib.Limits.TimeSoft, lib.Limits.TimeHard, lib.Limits.TimeUseSoft, lib.Limits.TimeUseHard}},
		{"bytes", ours.Bytes, st.Bytes},
		{"packets", ours.Packets, st.Packets},
		{"add_time", ours.AddTime, st.AddTime},
		{"use_time", ours.UseTime, st.UseTime},
		{"replay_window_drops", ours.ReplayWindowDrops, st.ReplayWindow},
		{"replay_drops", ours.ReplayDrops, st.Replay},
		{"integrity", ours.IntegrityFailures, st.Failed},
		{"crypt", ours.Crypt, name(lib.Crypt)},
		{"auth", ours.Auth, name(lib.Auth)},
		{"aead", ours.AEAD, name(lib.Aead)},
		// ESN: the library does not decode the flag; checkESN uses ip.
		{"dir", int(ours.Dir), int(lib.SADir)},
	}
	if lib.Encap != nil {
		rows = append(rows, row{"encap", int(ours.EncapType), int(lib.Encap.Type)})
	}
	if lib.Replay != nil && !ours.ESN {
		rows = append(rows, row{"oseq", ours.OSeq, uint64(lib.Replay.OSeq)}, row{"seq", ours.Seq, uint64(lib.Replay.Seq)})
	}
	for _, r := range rows {
		if fmt.Sprint(r.ours) != fmt.Sprint(r.lib) {
			t.Errorf("%s SA %#x: %s ours %v, netlink library %v", ns, ours.SPI, r.field, r.ours, r.lib)
		}
	}
}

var ipSPD = regexp.MustCompile(`SPD IN\s+(\d+) OUT (\d+) FWD (\d+)(?: \(Sock: IN (\d+) OUT (\d+) FWD (\d+)\))?`)

var ipESN = regexp.MustCompile(`anti-replay esn context:\s+seq-hi (0x[0-9a-f]+), seq (0x[0-9a-f]+), oseq-hi (0x[0-9a-f]+), oseq (0x[0-9a-f]+)`)

// checkESN compares the ESN SA's 64-bit sequence numbers with ip's.
func checkESN(t *testing.T, n *scenario.Node, sas []SA, spi uint32) {
	t.Helper()
	out := n.IP(t, "-s", "xfrm", "state", "get", "src", "10.77.0.1", "dst", "10.77.0.2", "proto", "esp", "spi", fmt.Sprint(spi))
	m := ipESN.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s: no ESN context in\n%s", n.Name, out)
	}
	var seqHi, seq, oseqHi, oseq uint64
	_, _ = fmt.Sscanf(m[1]+" "+m[2]+" "+m[3]+" "+m[4], "0x%x 0x%x 0x%x 0x%x", &seqHi, &seq, &oseqHi, &oseq)
	for _, sa := range sas {
		if sa.SPI != spi {
			continue
		}
		if !sa.ESN || !sa.HaveReplay || sa.OSeq != oseqHi<<32|oseq || sa.Seq != seqHi<<32|seq {
			t.Errorf("%s ESN SA: ours esn=%v oseq %d seq %d; ip oseq %d seq %d", n.Name, sa.ESN, sa.OSeq, sa.Seq, oseqHi<<32|oseq, seqHi<<32|seq)
		}
		if sa.OSeq+sa.Seq != 4 {
			t.Errorf("%s ESN SA: oseq %d + seq %d, want 4 pings", n.Name, sa.OSeq, sa.Seq)
		}
		return
	}
	t.Errorf("%s: ESN SA not dumped", n.Name)
}

func comparePolicies(t *testing.T, n *scenario.Node, c *Conn) {
	t.Helper()
	ours, err := c.Policies()
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := n.NL.XfrmPolicyList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	if len(ours) != len(theirs) {
		t.Fatalf("%s: %d policies decoded, netlink library has %d", n.Name, len(ours), len(theirs))
	}
	for _, lib := range theirs {
		found := false
		for _, p := range ours {
			if int(p.Index) != lib.Index {
				continue
			}
			found = true
			src, dst := "", ""
			if p.Family != 0 {
				src, dst = p.Src.String(), p.Dst.String()
			}
			got := fmt.Sprintf("dir %d prio %d %s -> %s tmpls %d", p.Dir, p.Priority, src, dst, p.Templates)
			want := fmt.Sprintf("dir %d prio %d %s -> %s tmpls %d", lib.Dir, lib.Priority, lib.Src, lib.Dst, len(lib.Tmpls))
			if got != want {
				t.Errorf("%s policy %d: ours %s, netlink library %s", n.Name, p.Index, got, want)
			}
		}
		if !found {
			t.Errorf("%s: policy index %d not decoded", n.Name, lib.Index)
		}
	}
}

// printSeeds logs the raw SA and policy dump messages with keys zeroed,
// for testdata/fuzz.
func printSeeds(t *testing.T, c *Conn, ns string) {
	t.Helper()
	for _, d := range []struct {
		req, resp uint16
		target    string
	}{{msgGetSA, msgNewSA, "FuzzParseSA"}, {msgGetPolicy, msgNewPolicy, "FuzzParsePolicy"}} {
		i := 0
		err := c.request(d.req, true, nil, d.resp, func(b []byte) error {
			t.Logf("FUZZSEED %s %s-%d %d %s", d.target, ns, i, d.resp, hex.EncodeToString(scrubbed(d.resp, b)))
			i++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// scrubbed copies a message and zeroes every key in its algorithm
// attributes (the lab's keys are fixed test keys; still, no key goes into
// the repository).
func scrubbed(typ uint16, b []byte) []byte {
	b = bytes.Clone(b)
	var off int
	switch typ {
	case msgNewSA, msgUpdSA:
		off = sizeofUsersaInfo
	case msgDelSA:
		off = sizeofUsersaID
	default:
		return b
	}
	for off+4 <= len(b) {
		l := int(ne.Uint16(b[off:]))
		typ := ne.Uint16(b[off+2:]) & nlaTypeMask
		if l < 4 || off+l > len(b) {
			break
		}
		data := b[off+4 : off+l]
		keyAt := map[uint16]int{xfrmaAlgAuth: 68, xfrmaAlgCrypt: 68, xfrmaAlgComp: 68, xfrmaAlgAEAD: 72, xfrmaAlgAuthTrunc: 72}
		if k, ok := keyAt[typ]; ok && k <= len(data) {
			clear(data[k:])
		}
		off += (l + 3) &^ 3
	}
	return b
}
