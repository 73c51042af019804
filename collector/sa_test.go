package collector

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/xfrmnl"
)

var updateGolden = flag.Bool("update", false, "rewrite the collectors' golden files in testdata/")

const inf = math.MaxUint64

// sampleSAs are an outbound SA with every kind of limit and an inbound one
// with errors and no limits, between 10.77.0.1 (local) and 10.77.0.2, plus
// the larval placeholder an ACQUIRE towards 10.77.0.3 leaves (SPI 0), which
// must show only in ipsec_sa_larval.
func sampleSAs() []xfrmnl.SA {
	a, b := netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("10.77.0.2")
	return []xfrmnl.SA{
		{
			Family: unix.AF_INET, Src: a, Dst: b, SPI: 0x10ab, Proto: unix.IPPROTO_ESP, Mode: 0, Reqid: 7,
			Limits: xfrmnl.Limits{SoftBytes: 1000, HardBytes: 2000, SoftPackets: inf, HardPackets: 50, SoftAddSeconds: 30, HardAddSeconds: 60},
			Bytes:  840, Packets: 10, AddTime: 1700000000, UseTime: 1700000005, LastUsed: 1700000009,
			HaveReplay: true, OSeq: 10, AEAD: "rfc4106(gcm(aes))",
		},
		{
			Family: unix.AF_INET, Src: b, Dst: a, SPI: 0x10ba, Proto: unix.IPPROTO_ESP, Mode: 1, Reqid: 8,
			Limits: xfrmnl.Limits{SoftBytes: inf, HardBytes: inf, SoftPackets: inf, HardPackets: inf},
			Bytes:  420, Packets: 5, AddTime: 1700000001, ReplayDrops: 2, ReplayWindowDrops: 1, IntegrityFailures: 3,
			HaveReplay: true, Seq: 5, Crypt: "cbc(aes)", Auth: "hmac(sha256)", EncapType: 2,
		},
		{
			Family: unix.AF_INET, Src: a, Dst: netip.MustParseAddr("10.77.0.3"), SPI: 0, Proto: unix.IPPROTO_ESP, Reqid: 9,
			Limits:  xfrmnl.Limits{SoftBytes: inf, HardBytes: inf, SoftPackets: inf, HardPackets: inf, HardAddSeconds: 30},
			AddTime: 1700000002,
		},
	}
}

// saSnapshot is what a fake reader returns for one namespace.
type saSnapshot struct {
	SAs   []xfrmnl.SA
	SAD   xfrmnl.SADInfo
	Local addrSet
}

func fakeSAReader(snaps map[string]saSnapshot) func(netnsx.Namespace) (saNamespace, error) {
	return func(ns netnsx.Namespace) (saNamespace, error) {
		s, ok := snaps[ns.Name]
		if !ok {
			return saNamespace{}, errors.New("namespace unreadable")
		}
		return saNamespace{SAD: s.SAD, Local: s.Local, Close: func() {},
			Each: func(fn func(*xfrmnl.SA) error) error {
				var sa xfrmnl.SA // reused, as the real reader does: a collector that keeps the pointer fails
				for i := range s.SAs {
					sa = s.SAs[i]
					if err := fn(&sa); err != nil {
						return err
					}
				}
				return nil
			}}, nil
	}
}

// fakeNamespaces lists namespaces of these names (none of them real).
func fakeNamespaces(names ...string) func() []netnsx.Namespace {
	return func() []netnsx.Namespace {
		var ns []netnsx.Namespace
		for i, n := range names {
			ns = append(ns, netnsx.Namespace{Name: n, Path: "/nonexistent/" + n, ID: netnsx.ID{Ino: uint64(i + 1)}})
		}
		return ns
	}
}

func localOf(addrs ...string) addrSet {
	var s addrSet
	for _, a := range addrs {
		s = append(s, netip.MustParseAddr(a))
	}
	return s
}

func scrapeText(t *testing.T, c Collector) string {
	t.Helper()
	mfs, err := registryOf(t, c).Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
			t.Fatal(err)
		}
	}
	return buf.String()
}

func compareGolden(t *testing.T, path, got string) {
	t.Helper()
	if *updateGolden {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("exposition differs from %s (rerun with -update after checking):\n%s", path, got)
	}
}

// TestSACollector compares the whole exposition of two SAs in one namespace
// with a reviewed golden file, and checks the arithmetic that matters for
// alerts explicitly.
func TestSACollector(t *testing.T) {
	c := newSACollector(slog.New(slog.DiscardHandler), fakeNamespaces(""), fakeSAReader(map[string]saSnapshot{
		"": {SAs: sampleSAs(), SAD: xfrmnl.SADInfo{Count: 3}, Local: localOf("10.77.0.1")},
	}), true, 0)
	c.now = func() time.Time { return time.Unix(1700000015, 0) }
	got := scrapeText(t, c)
	compareGolden(t, "testdata/sa.prom", got)
	for _, line := range []string{
		// Outbound: direction from the local address, peer the remote.
		`ipsec_sa_bytes_total{direction="out",dst="10.77.0.2",mode="transport",netns="",peer="10.77.0.2",proto="esp",reqid="7",spi="0x000010ab",src="10.77.0.1"} 840`,
		// Soft: max(840/1000 bytes, 15s/30s) = 0.84; hard: max(840/2000, 10/50, 15/60) = 0.42.
		`ipsec_sa_lifetime_used_ratio{direction="out",dst="10.77.0.2",limit="soft",mode="transport",netns="",peer="10.77.0.2",proto="esp",reqid="7",spi="0x000010ab",src="10.77.0.1"} 0.84`,
		`ipsec_sa_lifetime_used_ratio{direction="out",dst="10.77.0.2",limit="hard",mode="transport",netns="",peer="10.77.0.2",proto="esp",reqid="7",spi="0x000010ab",src="10.77.0.1"} 0.42`,
		`ipsec_sa_expiry_timestamp_seconds{direction="out",dst="10.77.0.2",limit="hard",mode="transport",netns="",peer="10.77.0.2",proto="esp",reqid="7",spi="0x000010ab",src="10.77.0.1"} 1.70000006e+09`,
		`ipsec_sa_integrity_failures_total{direction="in",dst="10.77.0.1",mode="tunnel",netns="",peer="10.77.0.2",proto="esp",reqid="8",spi="0x000010ba",src="10.77.0.2"} 3`,
		`ipsec_sa_replay_failures_total{direction="in",dst="10.77.0.1",mode="tunnel",netns="",peer="10.77.0.2",proto="esp",reason="duplicate",reqid="8",spi="0x000010ba",src="10.77.0.2"} 2`,
		`ipsec_peer_bytes_total{direction="in",netns="",peer="10.77.0.2"} 420`,
		`ipsec_sas{direction="in",netns=""} 1`,
		`ipsec_sad_entries{netns=""} 3`,
		`ipsec_sa_omitted 0`,
	} {
		if !strings.Contains(got, line+"\n") {
			t.Errorf("missing %s", line)
		}
	}
	for _, absent := range []string{
		`ipsec_sa_limit_bytes{direction="in"`,              // unlimited: no series
		`ipsec_sa_expiry_timestamp_seconds{direction="in"`, // no time limit
		`ipsec_sa_last_used_timestamp_seconds{direction="in"`,
	} {
		if strings.Contains(got, absent) {
			t.Errorf("unexpected %s...", absent)
		}
	}
	if problems, err := testutil.GatherAndLint(registryOf(t, c)); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// TestSACollectorCap: capped or turned off, per-SA series go and are
// counted in ipsec_sa_omitted, while the peer and namespace families stay
// exactly what they were uncapped.
func TestSACollectorCap(t *testing.T) {
	snaps := map[string]saSnapshot{"": {SAs: sampleSAs(), Local: localOf("10.77.0.1")}}
	full := scrapeText(t, newSACollector(slog.New(slog.DiscardHandler), fakeNamespaces(""), fakeSAReader(snaps), true, 0))
	aggregates := func(s string) string {
		var keep []string
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, "ipsec_peer_") || strings.HasPrefix(l, "ipsec_sas{") || strings.HasPrefix(l, "ipsec_sad_") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	for _, c := range []struct {
		perSA   bool
		max     int
		perSAs  int
		omitted string
	}{{true, 1, 1, "1"}, {false, 0, 0, "2"}, {true, 2, 2, "0"}} {
		got := scrapeText(t, newSACollector(slog.New(slog.DiscardHandler), fakeNamespaces(""), fakeSAReader(snaps), c.perSA, c.max))
		if aggregates(got) != aggregates(full) {
			t.Errorf("per-sa=%v max=%d: aggregates changed:\n%s\nwant\n%s", c.perSA, c.max, aggregates(got), aggregates(full))
		}
		if n := strings.Count(got, "\nipsec_sa_info{"); n != c.perSAs {
			t.Errorf("per-sa=%v max=%d: %d SAs with series, want %d", c.perSA, c.max, n, c.perSAs)
		}
		if !strings.Contains(got, "\nipsec_sa_omitted "+c.omitted+"\n") {
			t.Errorf("per-sa=%v max=%d: omitted not %s", c.perSA, c.max, c.omitted)
		}
	}
}

// TestSAPeerBooks: the per-peer counters keep the share of SAs that are
// gone (rekeyed), so they never fall; an unreadable namespace keeps what
// was known; SA direction comes from the kernel's attribute when present.
func TestSAPeerBooks(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	out := func(spi uint32, bytes uint64) xfrmnl.SA {
		return xfrmnl.SA{Family: unix.AF_INET, Src: a, Dst: b, SPI: spi, Proto: unix.IPPROTO_ESP, Bytes: bytes, Packets: bytes / 10}
	}
	snaps := map[string]saSnapshot{}
	c := newSACollector(slog.New(slog.DiscardHandler), fakeNamespaces("vpn"), fakeSAReader(snaps), true, 0)
	peerBytes := func() string {
		for _, l := range strings.Split(scrapeText(t, c), "\n") {
			if strings.HasPrefix(l, `ipsec_peer_bytes_total{direction="out"`) {
				return l[strings.LastIndex(l, " ")+1:]
			}
		}
		return "none"
	}
	snaps["vpn"] = saSnapshot{SAs: []xfrmnl.SA{out(1, 100), out(2, 50)}, Local: localOf("10.0.0.1")}
	if got := peerBytes(); got != "150" {
		t.Fatalf("first scrape: %s", got)
	}
	// SA 1 deleted by a rekey, SA 3 is its successor, SA 2 moved on.
	snaps["vpn"] = saSnapshot{SAs: []xfrmnl.SA{out(2, 60), out(3, 10)}, Local: localOf("10.0.0.1")}
	if got := peerBytes(); got != "170" {
		t.Fatalf("after rekey: %s, want 100 (retired) + 60 + 10", got)
	}
	// The SPI of SA 3 reused by a new SA (counters restart).
	snaps["vpn"] = saSnapshot{SAs: []xfrmnl.SA{out(2, 60), out(3, 4)}, Local: localOf("10.0.0.1")}
	if got := peerBytes(); got != "174" {
		t.Fatalf("after SPI reuse: %s, want 100 + 10 (retired) + 60 + 4", got)
	}
	// The namespace cannot be read: nothing is retired.
	delete(snaps, "vpn")
	if err := c.Update(make(chan prometheus.Metric, 100)); err == nil {
		t.Fatal("no error for an unreadable namespace")
	}
	snaps["vpn"] = saSnapshot{SAs: []xfrmnl.SA{out(2, 60), out(3, 4)}, Local: localOf("10.0.0.1")}
	if got := peerBytes(); got != "174" {
		t.Fatalf("after a failed read: %s, want 174", got)
	}
	// The kernel's direction attribute wins over addresses.
	sa := out(9, 1)
	sa.Dir = xfrmnl.SADirIn
	if p := classify("", &sa, localOf("10.0.0.1")); p.dir != dirIn || p.peer != a {
		t.Errorf("dir attribute ignored: %+v", p)
	}
	if p := classify("", &sa, nil); p.dir != dirIn {
		t.Errorf("dir attribute ignored without addresses: %+v", p)
	}
	sa.Dir = 0
	if p := classify("", &sa, nil); p.dir != dirUnknown || p.peer.IsValid() || p.labels()[1] != "" {
		t.Errorf("no local address: %+v", p)
	}
}

func TestExpiryAndRatio(t *testing.T) {
	for _, c := range []struct {
		add, use, addLim, useLim, want uint64
		ok                             bool
	}{
		{100, 0, 0, 0, 0, false},
		{100, 0, 50, 0, 150, true},
		{100, 0, 0, 50, 0, false}, // use limit, never used
		{100, 120, 0, 50, 170, true},
		{100, 120, 60, 50, 160, true},
		{100, 120, 90, 50, 170, true},
	} {
		got, ok := expiryTime(c.add, c.use, c.addLim, c.useLim)
		if got != c.want || ok != c.ok {
			t.Errorf("expiryTime(%d, %d, %d, %d) = %d %v, want %d %v", c.add, c.use, c.addLim, c.useLim, got, ok, c.want, c.ok)
		}
	}
	if usedRatio(5, 0) != 1 || usedRatio(30, 20) != 1 || usedRatio(-1, 20) != 0 || usedRatio(5, 20) != 0.25 {
		t.Error("usedRatio")
	}
}

// TestSAPeerBooksFinals: the final counters from delete and hard-expire
// notifications make the per-peer totals exact: an SA's traffic after the
// last scrape counts, an SA that lived between two scrapes counts, a late
// notification adds only what the last-seen counters missed, and one that
// comes while the SA is still in the dump waits until it is gone.
func TestSAPeerBooksFinals(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	out := func(spi uint32, packets uint64) xfrmnl.SA {
		return xfrmnl.SA{Family: unix.AF_INET, Src: a, Dst: b, SPI: spi, Proto: unix.IPPROTO_ESP, Packets: packets}
	}
	books := newPeerBooks()
	now := time.Unix(1700000000, 0)
	local := localOf("10.0.0.1")
	packets := func(live, finals []xfrmnl.SA) uint64 {
		t.Helper()
		books.begin()
		for i := range live {
			books.see(identOf(netnsx.ID{}, &live[i]), classify("", &live[i], local), totalsOf(&live[i]))
		}
		var fs []finalSA
		for i := range finals {
			fs = append(fs, finalSA{id: identOf(netnsx.ID{}, &finals[i]), peer: classify("", &finals[i], local), totals: totalsOf(&finals[i])})
		}
		series := books.update(fs, nil, now)
		if len(series) != 1 {
			t.Fatalf("%d peers", len(series))
		}
		return series[0].totals.packets
	}
	for _, step := range []struct {
		what         string
		live, finals []xfrmnl.SA
		want         uint64
	}{
		{"two SAs", []xfrmnl.SA{out(1, 100), out(3, 50)}, nil, 150},
		{"1 deleted at 130, 2 lived and died in between", []xfrmnl.SA{out(3, 50)}, []xfrmnl.SA{out(1, 130), out(2, 20)}, 200},
		{"3 gone, its notification late", []xfrmnl.SA{out(4, 5)}, nil, 205},
		{"3's final (70) arrives", []xfrmnl.SA{out(4, 5)}, []xfrmnl.SA{out(3, 70)}, 225},
		{"4's final while still dumped", []xfrmnl.SA{out(4, 9)}, []xfrmnl.SA{out(4, 12)}, 229},
		{"4 gone", nil, nil, 232},
	} {
		if got := packets(step.live, step.finals); got != step.want {
			t.Fatalf("%s: %d packets, want %d", step.what, got, step.want)
		}
	}
}

// TestSACollectorDuplicateIdentity: two SAs that differ only in what the
// labels do not show (here the mark) must not make the scrape fail with a
// duplicate series: the second is left out and counted, and both count in
// the peer totals.
func TestSACollectorDuplicateIdentity(t *testing.T) {
	sas := sampleSAs()[:1]
	twin := sas[0]
	twin.Mark, twin.MarkMask, twin.Bytes = 0xd00, 0xf00, 60
	sas = append(sas, twin)
	c := newSACollector(slog.New(slog.DiscardHandler), fakeNamespaces(""), fakeSAReader(map[string]saSnapshot{"": {SAs: sas, Local: localOf("10.77.0.1")}}), true, 0)
	got := scrapeText(t, c)
	if n := strings.Count(got, "\nipsec_sa_info{"); n != 1 || !strings.Contains(got, "\nipsec_sa_omitted 1\n") {
		t.Errorf("%d SAs exported, want 1 and one omitted:\n%s", n, got)
	}
	if !strings.Contains(got, `ipsec_peer_bytes_total{direction="out",netns="",peer="10.77.0.2"} 900`) {
		t.Errorf("peer bytes should be 840 + 60:\n%s", got)
	}
}

// TestSACollectorNoXfrm: a kernel without XFRM netlink (xfrm_user not
// loaded) is "no data", not a failed scrape.
func TestSACollectorNoXfrm(t *testing.T) {
	c := newSACollector(slog.New(slog.DiscardHandler), fakeNamespaces(""), func(netnsx.Namespace) (saNamespace, error) {
		return saNamespace{}, fmt.Errorf("opening xfrm netlink socket: %w", unix.EPROTONOSUPPORT)
	}, true, 0)
	if err := c.Update(make(chan prometheus.Metric, 10)); !errors.Is(err, ErrNoData) {
		t.Errorf("got %v, want ErrNoData", err)
	}
}
