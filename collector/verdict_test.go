package collector

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/ipsec-exporter/ipsec_exporter/internal/peers"
	"github.com/ipsec-exporter/ipsec_exporter/internal/verdict"
	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
	"github.com/ipsec-exporter/ipsec_exporter/lab/testtool"
)

// mapsSource serves real verdict maps (they load on hosts that refuse
// tracing programs) with a fixed hook table, as *verdict.Verdicts would.
type mapsSource struct{ *verdict.Maps }

func (mapsSource) Mode() string { return "fentry" }
func (mapsSource) Hooks() []verdict.Hook {
	return []verdict.Hook{
		{Program: "fentry_xfrm_input", Kind: "fentry", Target: "xfrm_input", Attached: true},
		{Program: "fexit_xfrm_input_state_lookup", Kind: "fexit", Target: "xfrm_input_state_lookup",
			Err: errors.New("not supported")},
	}
}
func (mapsSource) Missed() map[string]uint64 { return map[string]uint64{"fentry_xfrm_input": 2} }
func (mapsSource) ProgramStats() map[string]*ebpf.ProgramStats {
	return map[string]*ebpf.ProgramStats{"fentry_xfrm_input": {Runtime: 1500 * time.Millisecond, RunCount: 42}}
}

func newTestMaps(t *testing.T, size uint32, entries []verdict.Entry) mapsSource {
	t.Helper()
	m, err := verdict.NewMaps(size)
	if errors.Is(err, fs.ErrPermission) {
		t.Skipf("creating BPF maps needs root or CAP_BPF: %v", err)
	}
	if err != nil {
		t.Fatalf("creating verdict maps: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if err := m.Set(entries); err != nil {
		t.Fatal(err)
	}
	return mapsSource{m}
}

var testEntries = []verdict.Entry{
	{Direction: "encrypt", Result: "ok", Peer: netip.MustParseAddr("10.0.0.2"), Packets: 5, Bytes: 420},
	{Direction: "decrypt", Result: "ok", Peer: netip.MustParseAddr("10.0.0.2"), Packets: 4, Bytes: 336},
	{Direction: "decrypt", Result: "integrity", Peer: netip.MustParseAddr("fd00::2"), Packets: 3, Bytes: 300},
}

func statsFile(t *testing.T, value string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bpf_stats_enabled")
	if err := os.WriteFile(p, []byte(value+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVerdictCollectorRealMaps(t *testing.T) {
	src := newTestMaps(t, 16, testEntries)
	if err := src.SetError("map_full", 7); err != nil {
		t.Fatal(err)
	}
	c := newVerdictCollector(slog.New(slog.DiscardHandler), src, nil, nil)
	c.statsSysctl = statsFile(t, "1")
	want := `
# HELP ipsec_xfrm_packets_total ` + verdictPacketsHelp + `
# TYPE ipsec_xfrm_packets_total counter
ipsec_xfrm_packets_total{direction="decrypt",peer="10.0.0.2",result="ok"} 4
ipsec_xfrm_packets_total{direction="decrypt",peer="fd00::2",result="integrity"} 3
ipsec_xfrm_packets_total{direction="encrypt",peer="10.0.0.2",result="ok"} 5
# HELP ipsec_xfrm_bytes_total ` + verdictBytesHelp + `
# TYPE ipsec_xfrm_bytes_total counter
ipsec_xfrm_bytes_total{direction="decrypt",peer="10.0.0.2",result="ok"} 336
ipsec_xfrm_bytes_total{direction="decrypt",peer="fd00::2",result="integrity"} 300
ipsec_xfrm_bytes_total{direction="encrypt",peer="10.0.0.2",result="ok"} 420
# HELP ipsec_bpf_verdict_map_entries Counter keys in the verdict map.
# TYPE ipsec_bpf_verdict_map_entries gauge
ipsec_bpf_verdict_map_entries 3
# HELP ipsec_bpf_verdict_map_max_entries Capacity of the verdict map (--bpf.verdict-map-size).
# TYPE ipsec_bpf_verdict_map_max_entries gauge
ipsec_bpf_verdict_map_max_entries 16
# HELP ipsec_bpf_verdict_map_overflow_total Verdicts not counted because their key was new and the verdict map was full.
# TYPE ipsec_bpf_verdict_map_overflow_total counter
ipsec_bpf_verdict_map_overflow_total 7
# HELP ipsec_bpf_verdict_program_attached Whether a verdict BPF program is attached (1) or not (0: the kernel lacks its hook; see the log).
# TYPE ipsec_bpf_verdict_program_attached gauge
ipsec_bpf_verdict_program_attached{hook="fentry/xfrm_input",program="fentry_xfrm_input"} 1
ipsec_bpf_verdict_program_attached{hook="fexit/xfrm_input_state_lookup",program="fexit_xfrm_input_state_lookup"} 0
# HELP ipsec_bpf_verdict_programs_attached Number of verdict BPF programs attached; 0 means no verdicts are counted (see ipsec_bpf_verdict_load_error_info).
# TYPE ipsec_bpf_verdict_programs_attached gauge
ipsec_bpf_verdict_programs_attached 1
# HELP ipsec_bpf_verdict_hook_mode The hook mode of the verdict programs (fentry, kprobe, or none when they could not be loaded); always 1.
# TYPE ipsec_bpf_verdict_hook_mode gauge
ipsec_bpf_verdict_hook_mode{mode="fentry"} 1
# HELP ipsec_bpf_verdict_program_missed_total Runs of a verdict program the kernel skipped (BPF recursion, or a kprobe hit inside another kprobe handler); each may cost a verdict.
# TYPE ipsec_bpf_verdict_program_missed_total counter
ipsec_bpf_verdict_program_missed_total{program="fentry_xfrm_input"} 2
# HELP ipsec_bpf_verdict_program_run_seconds_total Time spent running a verdict program; only while kernel.bpf_stats_enabled=1.
# TYPE ipsec_bpf_verdict_program_run_seconds_total counter
ipsec_bpf_verdict_program_run_seconds_total{program="fentry_xfrm_input"} 1.5
# HELP ipsec_bpf_verdict_program_runs_total Runs of a verdict program; only while kernel.bpf_stats_enabled=1.
# TYPE ipsec_bpf_verdict_program_runs_total counter
ipsec_bpf_verdict_program_runs_total{program="fentry_xfrm_input"} 42
`
	if err := testutil.CollectAndCompare(adapt(t, c), strings.NewReader(want),
		"ipsec_xfrm_packets_total", "ipsec_xfrm_bytes_total", "ipsec_bpf_verdict_map_entries",
		"ipsec_bpf_verdict_map_max_entries", "ipsec_bpf_verdict_map_overflow_total",
		"ipsec_bpf_verdict_program_attached", "ipsec_bpf_verdict_programs_attached",
		"ipsec_bpf_verdict_hook_mode", "ipsec_bpf_verdict_program_missed_total",
		"ipsec_bpf_verdict_program_run_seconds_total", "ipsec_bpf_verdict_program_runs_total"); err != nil {
		t.Error(err)
	}
}

func TestVerdictCollectorNoRunStatsWithoutSysctl(t *testing.T) {
	c := newVerdictCollector(slog.New(slog.DiscardHandler), newTestMaps(t, 4, nil), nil, nil)
	c.statsSysctl = statsFile(t, "0")
	n, err := testutil.GatherAndCount(registryOf(t, c), "ipsec_bpf_verdict_program_runs_total", "ipsec_bpf_verdict_program_run_seconds_total")
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d run-time series while kernel.bpf_stats_enabled=0: the kernel keeps none", n)
	}
}

// A kernel that refuses BPF (like this project's build hosts): the collector
// starts, logs why once, says it in a metric, and the scrape succeeds.
func TestVerdictCollectorDegraded(t *testing.T) {
	var logs bytes.Buffer
	loadErr := fmt.Errorf("fentry: loading: %w", fs.ErrPermission)
	c := newVerdictCollector(slog.New(slog.NewTextHandler(&logs, nil)), nil, loadErr, nil)
	want := `
# HELP ipsec_bpf_verdict_load_error_info Present (1) when the verdict programs could not be loaded, with the reason class; the log has the details.
# TYPE ipsec_bpf_verdict_load_error_info gauge
ipsec_bpf_verdict_load_error_info{reason="permission_denied"} 1
# HELP ipsec_bpf_verdict_programs_attached Number of verdict BPF programs attached; 0 means no verdicts are counted (see ipsec_bpf_verdict_load_error_info).
# TYPE ipsec_bpf_verdict_programs_attached gauge
ipsec_bpf_verdict_programs_attached 0
# HELP ipsec_bpf_verdict_hook_mode The hook mode of the verdict programs (fentry, kprobe, or none when they could not be loaded); always 1.
# TYPE ipsec_bpf_verdict_hook_mode gauge
ipsec_bpf_verdict_hook_mode{mode="none"} 1
`
	if err := testutil.CollectAndCompare(adapt(t, c), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if n := strings.Count(logs.String(), "verdict BPF programs not loaded"); n != 1 {
		t.Errorf("%d log lines about the load failure, want 1:\n%s", n, logs.String())
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close of a degraded collector: %v", err)
	}
}

// The registered factory on this host: where tracing programs are refused,
// it still returns a working collector (no --bpf.strict).
func TestVerdictFactoryOnThisHost(t *testing.T) {
	if scenario.InVM() {
		t.Skip("a lab kernel loads the programs; TestLabVerdictExporter covers it")
	}
	c, err := registrations["verdict"].factory(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("factory without --bpf.strict failed: %v", err)
	}
	defer func() { _ = c.(*verdictCollector).Close() }()
	vc := c.(*verdictCollector)
	if vc.src != nil {
		t.Skip("this host loads and attaches the verdict programs")
	}
	// The host refuses tracing programs: a known reason class, not the
	// catch-all, and what a scrape shows.
	if vc.loadErr == "load_failed" || vc.loadErr == "unknown" {
		t.Errorf("load failure on this host not classified: reason %q", vc.loadErr)
	}
	n, err := testutil.GatherAndCount(registryOf(t, vc), "ipsec_bpf_verdict_load_error_info")
	if err != nil || n != 1 {
		t.Errorf("ipsec_bpf_verdict_load_error_info: %d series (%v), want 1", n, err)
	}
	t.Logf("degraded on this host, reason %q", vc.loadErr)
}

func TestLoadErrorReason(t *testing.T) {
	for err, want := range map[error]string{
		fmt.Errorf("x: %w", fs.ErrPermission):                                                          "permission_denied",
		fmt.Errorf("x: %w", ebpf.ErrNotSupported):                                                      "not_supported",
		fmt.Errorf("fentry: %w: fentry/xfrm_input: %w", verdict.ErrRequiredHook, ebpf.ErrNotSupported): "not_supported",
		fmt.Errorf("fentry: %w: fentry/xfrm_input: %w", verdict.ErrRequiredHook, errors.New("attach")): "hook_unavailable",
		errors.New("something else"):                                                                   "load_failed",
	} {
		if got := loadErrorReason(err); got != want {
			t.Errorf("loadErrorReason(%v) = %q, want %q", err, got, want)
		}
	}
}

func TestVerdictCollectorPeerNames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peers.yaml")
	if err := os.WriteFile(path, []byte("10.0.0.2: node-b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tracker, err := peers.New(peers.Config{NamesFile: path})
	if err != nil {
		t.Fatal(err)
	}
	defer tracker.Close()
	c := newVerdictCollector(slog.New(slog.DiscardHandler), newTestMaps(t, 16, testEntries), nil, tracker)
	want := `
# HELP ipsec_xfrm_packets_total ` + verdictPacketsHelp + `
# TYPE ipsec_xfrm_packets_total counter
ipsec_xfrm_packets_total{direction="decrypt",peer="10.0.0.2",peer_name="node-b",result="ok"} 4
ipsec_xfrm_packets_total{direction="decrypt",peer="fd00::2",peer_name="",result="integrity"} 3
ipsec_xfrm_packets_total{direction="encrypt",peer="10.0.0.2",peer_name="node-b",result="ok"} 5
`
	if err := testutil.CollectAndCompare(adapt(t, c), strings.NewReader(want), "ipsec_xfrm_packets_total"); err != nil {
		t.Error(err)
	}
	// Rewritten in the other format: picked up at the next scrape.
	later := time.Now().Add(2 * time.Second)
	if err := os.WriteFile(path, []byte("# peers\n10.0.0.2 node-b2\nfd00:0::2 node-c\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	want = strings.NewReplacer(`"node-b"`, `"node-b2"`, `peer_name=""`, `peer_name="node-c"`).Replace(want)
	if err := testutil.CollectAndCompare(adapt(t, c), strings.NewReader(want), "ipsec_xfrm_packets_total"); err != nil {
		t.Errorf("after rewriting the peer names file: %v", err)
	}
	// A broken rewrite keeps the last good names.
	if err := os.WriteFile(path, []byte("not an address at all\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	later = later.Add(2 * time.Second)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if err := testutil.CollectAndCompare(adapt(t, c), strings.NewReader(want), "ipsec_xfrm_packets_total"); err != nil {
		t.Errorf("after breaking the peer names file: %v", err)
	}
}

// promtool check metrics on a real scrape of the collector.
func TestVerdictMetricsPromtool(t *testing.T) {
	promtool := testtool.Find(t, "promtool", "prometheus")
	if promtool == "" {
		t.Skip("no promtool: metric lint skipped")
	}
	c := newVerdictCollector(slog.New(slog.DiscardHandler), newTestMaps(t, 16, testEntries), nil, nil)
	c.statsSysctl = statsFile(t, "1")
	degraded := newVerdictCollector(slog.New(slog.DiscardHandler), nil, errors.New("x"), nil)
	for name, col := range map[string]*verdictCollector{"loaded": c, "degraded": degraded} {
		families, err := registryOf(t, col).Gather()
		if err != nil {
			t.Fatal(err)
		}
		var text bytes.Buffer
		for _, f := range families {
			if _, err := expfmt.MetricFamilyToText(&text, f); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = &text
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: promtool check metrics: %v\n%s\n%s", name, err, out, text.String())
		}
	}
}

// Scrapes must not leak file descriptors (map iteration, batch cursors).
func TestVerdictCollectorNoFDLeak(t *testing.T) {
	c := newVerdictCollector(slog.New(slog.DiscardHandler), newTestMaps(t, 16, testEntries), nil, nil)
	reg := registryOf(t, c)
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	before := countFDs(t)
	for range 200 {
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	if after := countFDs(t); after > before {
		t.Errorf("open fds grew from %d to %d over 200 scrapes", before, after)
	}
}

// Failures whose peer is not known show as peer="unknown"; the known-peer
// set holds the peers of verdicts that came from an SA, never those taken
// from packets (a spoofed no_state source must not make itself known).
func TestVerdictCollectorKnownPeers(t *testing.T) {
	entries := append([]verdict.Entry{
		{Direction: "decrypt", Result: "no_state", Packets: 9, Bytes: 900},
		{Direction: "decrypt", Result: "no_state", Peer: netip.MustParseAddr("10.9.9.9"), Packets: 1, Bytes: 56},
	}, testEntries...)
	src := newTestMaps(t, 16, entries)
	c := newVerdictCollector(slog.New(slog.DiscardHandler), src, nil, nil)
	want := `
# HELP ipsec_xfrm_packets_total ` + verdictPacketsHelp + `
# TYPE ipsec_xfrm_packets_total counter
ipsec_xfrm_packets_total{direction="decrypt",peer="10.0.0.2",result="ok"} 4
ipsec_xfrm_packets_total{direction="decrypt",peer="10.9.9.9",result="no_state"} 1
ipsec_xfrm_packets_total{direction="decrypt",peer="fd00::2",result="integrity"} 3
ipsec_xfrm_packets_total{direction="decrypt",peer="unknown",result="no_state"} 9
ipsec_xfrm_packets_total{direction="encrypt",peer="10.0.0.2",result="ok"} 5
# HELP ipsec_bpf_verdict_known_peers ` + `Addresses in the known-peer set: failures whose peer comes from the packet (no_state, header_error) are counted under peers of this set, all others under peer=\"unknown\".
# TYPE ipsec_bpf_verdict_known_peers gauge
ipsec_bpf_verdict_known_peers 2
`
	if err := testutil.CollectAndCompare(adapt(t, c), strings.NewReader(want),
		"ipsec_xfrm_packets_total", "ipsec_bpf_verdict_known_peers"); err != nil {
		t.Error(err)
	}
	c.SetTrackedPeers([]netip.Addr{netip.MustParseAddr("::ffff:10.0.0.7")})
	if _, err := registryOf(t, c).Gather(); err != nil {
		t.Fatal(err)
	}
	if n, _ := src.KnownPeers(); n != 3 {
		t.Errorf("%d known peers after a tracker gave one more, want 3", n)
	}
}

// --bpf.verdict-map-size is checked before any collector starts: 0 and
// sizes the kernel would stall on preallocating are refused, naming the flag
// and the bound.
func TestVerdictMapSizeFlagCheck(t *testing.T) {
	old := *bpfVerdictMapSize
	t.Cleanup(func() { *bpfVerdictMapSize = old })
	for _, tc := range []struct {
		size uint32
		ok   bool
	}{{0, false}, {20000000, false}, {verdict.MaxMapSize + 1, false}, {1, true}, {verdict.DefaultMapSize, true}, {verdict.MaxMapSize, true}} {
		*bpfVerdictMapSize = tc.size
		err := CheckFlags()
		if tc.ok && err != nil && strings.Contains(err.Error(), "bpf.verdict-map-size") {
			t.Errorf("size %d refused: %v", tc.size, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "--bpf.verdict-map-size: must be between 1 and 262144")) {
			t.Errorf("size %d: error %v, want one naming the flag and its bounds", tc.size, err)
		}
	}
}
