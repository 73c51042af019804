package deploy_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// The capability claim of docs/deploy.md, examples/systemd and
// examples/kubernetes, measured: TestLabCapabilities runs the exporter as an
// unprivileged user with exactly these capabilities (ambient, as systemd's
// AmbientCapabilities gives them), compares it with a run as root, then
// takes each capability away in turn.
var claimedCaps = []capability{
	{unix.CAP_BPF, "CAP_BPF"},
	{unix.CAP_PERFMON, "CAP_PERFMON"},
	{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"},
}

type capability struct {
	bit  uintptr
	name string
}

// nobody is the unprivileged identity of the capability runs.
const nobody = 65534

// capRun is what one exporter run showed.
type capRun struct {
	label    string
	serving  bool
	exitCode int               // when it exited instead of serving
	success  map[string]string // collector -> value of ipsec_scrape_collector_success ("absent" if none)
	families []string          // ipsec_* metric names in the scrape
	state    []string          // samples of ipsec_* metrics saying what is loaded and attached
	// BPF programs, links and maps the process holds fds for: information
	// only, as a loader may close a program's fd once its link holds it.
	progs    int
	progList []string // the programs' names (or types), sorted
	links    int
	maps     int
	memlock  uint64 // bytes, summed over the BPF fds' fdinfo "memlock"
	rssKB    uint64 // VmRSS after the scrapes
	hwmKB    uint64 // VmHWM (peak RSS)
	problems []string
	body     string // the last scrape
}

// ownNetns is what examples/systemd and examples/kubernetes pass: read the
// exporter's own network namespace only. Entering the named ones
// (--collector.netns.dir) needs CAP_SYS_ADMIN; the last rows measure that.
var ownNetns = []string{"--collector.netns.dir="}

func TestLabCapabilities(t *testing.T) {
	scenario.RequireVM(t)
	collectors := defaultCollectors(t)
	t.Logf("kernel %s, collectors enabled by default: %v", scenario.Kernel(), collectors)

	// Traffic on an interface of the exporter's own namespace (the VM's has
	// only lo), protected by an SA and a policy there, so the wire, verdict,
	// SA and policy collectors all have something to show; and ESP between
	// two named namespaces for the last rows. Before every scrape.
	hostTraffic := hostVeth(t)
	hostESP(t)
	pair := scenario.NewPair(t)
	esp := pair.ESP(t, scenario.ESPOptions{})
	traffic := func() {
		hostTraffic()
		pair.A.Ping(t, esp.BAddr, 3)
	}

	ambient := func(caps []capability) *syscall.SysProcAttr {
		attr := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		for _, c := range caps {
			attr.AmbientCaps = append(attr.AmbientCaps, c.bit)
		}
		return attr
	}
	names := func(caps []capability) string {
		var n []string
		for _, c := range caps {
			n = append(n, c.name)
		}
		if len(n) == 0 {
			return "none"
		}
		return strings.Join(n, " ")
	}

	root := runWithCaps(t, "root (all capabilities)", nil, ownNetns, collectors, traffic, 3)
	if !root.serving {
		t.Fatalf("the exporter does not even serve as root:\n%s", strings.Join(root.problems, "\n"))
	}
	for _, c := range collectors {
		if root.success[c] != "1" {
			t.Errorf("collector %s fails even as root: %s", c, strings.Join(root.problems, "; "))
		}
	}
	claimed := runWithCaps(t, fmt.Sprintf("uid %d + %s", nobody, names(claimedCaps)), ambient(claimedCaps), ownNetns, collectors, traffic, 20)
	runs := []capRun{root, claimed}

	// The claim is sufficient: the same collectors succeed, the same BPF
	// programs are loaded and attached and the same metric families come
	// out as root.
	if !claimed.serving {
		t.Fatalf("with the claimed capabilities the exporter does not serve:\n%s", strings.Join(claimed.problems, "\n"))
	}
	for _, c := range collectors {
		if root.success[c] == "1" && claimed.success[c] != "1" {
			t.Errorf("collector %s succeeds as root but not with %s", c, names(claimedCaps))
		}
	}
	if !slices.Equal(claimed.state, root.state) {
		t.Errorf("loaded or attached BPF programs differ from root's:\nroot:    %v\nclaimed: %v", root.state, claimed.state)
	}
	if missing := diff(root.families, claimed.families); len(missing) > 0 {
		t.Errorf("metric families root has but the claimed capabilities lack (a permission error hidden as no data?): %v", missing)
	}

	// The claim is necessary: without any one of them something breaks.
	for i, drop := range claimedCaps {
		rest := slices.Delete(slices.Clone(claimedCaps), i, i+1)
		r := runWithCaps(t, fmt.Sprintf("uid %d + %s (no %s)", nobody, names(rest), drop.name), ambient(rest), ownNetns, collectors, traffic, 2)
		runs = append(runs, r)
		if r.serving && sameOutcome(r, claimed, collectors) {
			t.Errorf("%s is claimed, but nothing breaks without it", drop.name)
		}
	}
	runs = append(runs, runWithCaps(t, fmt.Sprintf("uid %d, no capabilities", nobody), ambient(nil), ownNetns, collectors, traffic, 2))

	// Named namespaces (the default --collector.netns.dir): entering one
	// needs CAP_SYS_ADMIN. Without it they are skipped and counted, and no
	// collector fails; with it they are read.
	named := []string{"--collector.netns.dir=/var/run/netns"}
	withoutAdmin := runWithCaps(t, fmt.Sprintf("uid %d + %s, named namespaces", nobody, names(claimedCaps)), ambient(claimedCaps), named, collectors, traffic, 2)
	admin := append(slices.Clone(claimedCaps), capability{unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"})
	withAdmin := runWithCaps(t, fmt.Sprintf("uid %d + %s, named namespaces", nobody, names(admin)), ambient(admin), named, collectors, traffic, 2)
	runs = append(runs, withoutAdmin, withAdmin)
	pairLabel := `netns="` + pair.A.Name + `"`
	for _, r := range []capRun{withoutAdmin, withAdmin} {
		for _, c := range collectors {
			if r.success[c] != "1" {
				t.Errorf("%s: collector %s fails", r.label, c)
			}
		}
	}
	if v, _ := metricValue(withoutAdmin.body, `ipsec_netns_skipped{reason="permission"}`); v == "" || v == "0" {
		t.Errorf("named namespaces without CAP_SYS_ADMIN: ipsec_netns_skipped{reason=\"permission\"} %q, want the namespaces it may not enter", v)
	}
	if strings.Contains(withoutAdmin.body, pairLabel) {
		t.Errorf("named namespaces without CAP_SYS_ADMIN: %s read, which docs/deploy.md says cannot be", pairLabel)
	}
	if !strings.Contains(withAdmin.body, pairLabel) || !slices.Contains(withAdmin.families, "ipsec_sa_info") {
		t.Errorf("named namespaces with CAP_SYS_ADMIN: no series of the namespace pair (%s) in the scrape", pairLabel)
	}
	if v, _ := metricValue(withAdmin.body, `ipsec_netns_skipped{reason="permission"}`); v != "0" {
		t.Errorf("named namespaces with CAP_SYS_ADMIN: ipsec_netns_skipped{reason=\"permission\"} %q, want 0", v)
	}

	for _, r := range runs {
		for _, p := range r.problems {
			if strings.Contains(p, "panic") || strings.Contains(p, "goroutine ") {
				t.Errorf("%s: the exporter crashed: %s", r.label, p)
			}
		}
	}
	t.Logf("\n%s", table(runs, collectors))
	t.Logf("resources with the claimed capabilities after 20 scrapes under traffic: VmRSS %d KiB, VmHWM %d KiB, BPF memlock %d KiB (%d maps, %d programs, %d links)",
		claimed.rssKB, claimed.hwmKB, claimed.memlock/1024, claimed.maps, claimed.progs, claimed.links)
}

// hostESP protects the traffic hostVeth sends (10.99.0.1 -> 10.99.0.2) with
// an outbound ESP SA and policy in the test's own network namespace, so the
// SA and policy collectors have something to read there. Removed when the
// test ends.
func hostESP(t *testing.T) {
	t.Helper()
	src, dst := net.IPv4(10, 99, 0, 1), net.IPv4(10, 99, 0, 2)
	state := &netlink.XfrmState{
		Src: src, Dst: dst, Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT,
		Spi: 0x9901, Reqid: 0x99,
		Aead: &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: bytes.Repeat([]byte{0x99}, 20), ICVLen: 128},
	}
	if err := netlink.XfrmStateAdd(state); err != nil {
		t.Fatalf("adding SA: %v", err)
	}
	t.Cleanup(func() { _ = netlink.XfrmStateDel(state) })
	policy := &netlink.XfrmPolicy{
		Src: &net.IPNet{IP: src, Mask: net.CIDRMask(32, 32)},
		Dst: &net.IPNet{IP: dst, Mask: net.CIDRMask(32, 32)},
		Dir: netlink.XFRM_DIR_OUT,
		Tmpls: []netlink.XfrmPolicyTmpl{{
			Src: src, Dst: dst, Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT, Reqid: 0x99,
		}},
	}
	if err := netlink.XfrmPolicyAdd(policy); err != nil {
		t.Fatalf("adding policy: %v", err)
	}
	t.Cleanup(func() { _ = netlink.XfrmPolicyDel(policy) })
}

// hostVeth adds an up veth pair to the test's (the VM's initial) network
// namespace, so the wire program has an interface to attach to, and returns
// a function that sends one UDP datagram out of it (to an address with a
// static neighbour entry, so no ARP is needed). Removed when the test ends.
func hostVeth(t *testing.T) func() {
	t.Helper()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "capveth0"}, PeerName: "capveth1"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("adding veth: %v", err)
	}
	t.Cleanup(func() { _ = netlink.LinkDel(veth) })
	var peerMAC net.HardwareAddr
	for _, name := range []string{"capveth0", "capveth1"} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatalf("%s up: %v", name, err)
		}
		peerMAC = l.Attrs().HardwareAddr
	}
	l, err := netlink.LinkByName("capveth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 99, 0, 1), Mask: net.CIDRMask(30, 32)}}); err != nil {
		t.Fatalf("address on capveth0: %v", err)
	}
	dst := net.IPv4(10, 99, 0, 2)
	if err := netlink.NeighAdd(&netlink.Neigh{LinkIndex: l.Attrs().Index, State: netlink.NUD_PERMANENT, IP: dst, HardwareAddr: peerMAC}); err != nil {
		t.Fatalf("neighbour on capveth0: %v", err)
	}
	return func() {
		conn, err := net.Dial("udp4", dst.String()+":9")
		if err != nil {
			t.Fatalf("udp to %s: %v", dst, err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("ipsec_exporter capability test")); err != nil {
			t.Fatalf("udp to %s: %v", dst, err)
		}
	}
}

// runWithCaps starts the exporter with args and attr (nil: as root, like the test),
// waits until it serves or exits, scrapes it `scrapes` times with traffic
// in between, and records what it showed.
func runWithCaps(t *testing.T, label string, attr *syscall.SysProcAttr, args, collectors []string, traffic func(), scrapes int) capRun {
	t.Helper()
	r := capRun{label: label, success: map[string]string{}}
	e := startExporter(t, attr, args...)
	if !waitServing(e, 120*time.Second) {
		select {
		case <-e.exited:
			r.exitCode = e.cmd.ProcessState.ExitCode()
		default:
			r.exitCode = -1 // hung: stopped below
			e.stop()
		}
		r.problems = logProblems(e.output.String())
		for _, c := range collectors {
			r.success[c] = "-"
		}
		return r
	}
	r.serving = true
	var body string
	for range scrapes {
		traffic()
		body = scrapePlain(t, e.addr)
	}
	for _, c := range collectors {
		v, ok := metricValue(body, `ipsec_scrape_collector_success{collector="`+c+`"}`)
		if !ok {
			v = "absent"
		}
		r.success[c] = v
	}
	r.body = body
	r.families = families(body)
	r.state = samplesNamed(body, "attached", "loaded")
	pid := e.cmd.Process.Pid
	r.progList, r.links, r.maps, r.memlock = bpfFDs(t, pid)
	r.progs = len(r.progList)
	r.rssKB, r.hwmKB = memoryKB(t, pid)
	e.stop()
	if code := e.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("%s: exit status %d after SIGTERM", label, code)
	}
	r.problems = logProblems(e.output.String())
	return r
}

// waitServing reports whether the exporter accepts connections before it
// exits or the timeout passes (attaching fentry programs under emulation
// takes a while).
func waitServing(e *exporter, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-e.exited:
			return false
		default:
		}
		if conn, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
			conn.Close()
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

func scrapePlain(t *testing.T, addr string) string {
	t.Helper()
	client := &http.Client{Timeout: 60 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: status %d\n%s", resp.StatusCode, body)
	}
	return string(body)
}

// families lists the ipsec_* metric names of an exposition, sorted.
func families(body string) []string {
	var names []string
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, _, _ := strings.Cut(rest, " ")
			if strings.HasPrefix(name, "ipsec_") {
				names = append(names, name)
			}
		}
	}
	sort.Strings(names)
	return names
}

func diff(want, got []string) []string {
	var missing []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			missing = append(missing, w)
		}
	}
	return missing
}

func sameOutcome(a, b capRun, collectors []string) bool {
	for _, c := range collectors {
		if a.success[c] != b.success[c] {
			return false
		}
	}
	return slices.Equal(a.state, b.state) && len(diff(b.families, a.families)) == 0
}

// samplesNamed returns the sample lines of ipsec_* metrics whose name
// contains one of parts, sorted.
func samplesNamed(body string, parts ...string) []string {
	var out []string
	for _, line := range strings.Split(body, "\n") {
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		if strings.HasPrefix(name, "ipsec_") && slices.ContainsFunc(parts, func(p string) bool { return strings.Contains(name, p) }) {
			out = append(out, line)
		}
	}
	sort.Strings(out)
	return out
}

// bpfFDs lists the BPF programs a process holds (by name), counts its links
// and maps, and sums their memlock.
func bpfFDs(t *testing.T, pid int) (progs []string, links, maps int, memlock uint64) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("listing the exporter's fds: %v", err)
	}
	for _, ent := range entries {
		target, err := os.Readlink(filepath.Join(dir, ent.Name()))
		if err != nil || !strings.HasPrefix(target, "anon_inode:bpf") {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, ent.Name()))
		if err != nil {
			continue
		}
		fields := map[string]string{}
		for _, line := range strings.Split(string(info), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok {
				fields[k] = strings.TrimSpace(v)
			}
		}
		n, _ := strconv.ParseUint(fields["memlock"], 10, 64)
		memlock += n
		switch target {
		case "anon_inode:bpf-prog":
			progs = append(progs, progName(fields))
		case "anon_inode:bpf_link":
			links++
		case "anon_inode:bpf-map":
			maps++
		}
	}
	sort.Strings(progs)
	return progs, links, maps, memlock
}

// progName names a program by its id (the test runs as root, so it may
// look programs up), falling back to its type.
func progName(fdinfo map[string]string) string {
	id, err := strconv.ParseUint(fdinfo["prog_id"], 10, 32)
	if err == nil {
		if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id)); err == nil {
			defer p.Close()
			if info, err := p.Info(); err == nil && info.Name != "" {
				return info.Name
			}
		}
	}
	return "type " + fdinfo["prog_type"]
}

func memoryKB(t *testing.T, pid int) (rss, hwm uint64) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		n, _ := strconv.ParseUint(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = n
		case "VmHWM:":
			hwm = n
		}
	}
	return rss, hwm
}

// logProblems returns what the exporter's warnings and errors say, one
// short line per distinct (collector, error), and anything that is not a
// log line (such as a panic).
func logProblems(output string) []string {
	var out []string
	for _, line := range strings.Split(output, "\n") {
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "time=") {
			if !strings.Contains(line, "level=WARN") && !strings.Contains(line, "level=ERROR") {
				continue
			}
			line = summarize(line)
		}
		if !slices.Contains(out, line) {
			out = append(out, line)
		}
	}
	return out
}

// summarize turns a logfmt line into "collector: error" (the error's first
// line, cut at 160 characters), or "msg" when it has no error.
func summarize(line string) string {
	field := func(key string) string {
		i := strings.Index(line, " "+key+"=")
		if i < 0 {
			return ""
		}
		v := line[i+len(key)+2:]
		if strings.HasPrefix(v, `"`) {
			if unquoted, err := strconv.QuotedPrefix(v); err == nil {
				v, _ = strconv.Unquote(unquoted)
				return v
			}
		}
		v, _, _ = strings.Cut(v, " ")
		return v
	}
	text := field("err")
	if text == "" {
		text = field("msg")
	}
	text, _, _ = strings.Cut(text, "\n")
	if len(text) > 160 {
		text = text[:160] + "..."
	}
	if c := field("collector"); c != "" {
		return c + ": " + text
	}
	return text
}

// table renders the runs as the markdown table of docs/deploy.md.
func table(runs []capRun, collectors []string) string {
	var b strings.Builder
	b.WriteString("| run | serves | " + strings.Join(collectors, " | ") + " | BPF fds progs/links | state metrics at 0 | what the log says |\n")
	b.WriteString("|---|---|" + strings.Repeat("---|", len(collectors)) + "---|---|---|\n")
	for _, r := range runs {
		serving := "yes"
		if !r.serving {
			serving = fmt.Sprintf("no (exit %d)", r.exitCode)
		}
		var cells []string
		for _, c := range collectors {
			cells = append(cells, r.success[c])
		}
		said := strings.Join(r.problems, "<br>")
		if said == "" {
			said = "-"
		}
		said = strings.ReplaceAll(said, "|", "\\|")
		var zero []string
		for _, sample := range r.state {
			if strings.HasSuffix(sample, " 0") {
				zero = append(zero, strings.TrimSuffix(sample, " 0"))
			}
		}
		zeros := strings.Join(zero, "<br>")
		if zeros == "" {
			zeros = "-"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d/%d | %s | %s |\n", r.label, serving, strings.Join(cells, " | "), r.progs, r.links, zeros, said)
	}
	return b.String()
}
