package deploy_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	exampleUnit = repoRoot + "/examples/systemd/ipsec_exporter.service"
	// tlsDropIn turns on TLS and basic auth (docs/deploy.md, "systemd").
	tlsDropIn = repoRoot + "/examples/systemd/tls.conf"
)

// neededCaps is what the exporter needs on kernels >= 5.11; the lab test
// (TestLabCapabilities) measures it and docs/deploy.md has the table.
var neededCaps = []string{"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"}

// unitFile maps "Section.Key" to every value given for it, in order.
type unitFile map[string][]string

func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	var continued string
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		line := scanner.Text()
		if continued != "" {
			line = continued + " " + strings.TrimSpace(line)
			continued = ""
		}
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, ";") {
			continue
		}
		if before, ok := strings.CutSuffix(trimmed, "\\"); ok {
			continued = before
			continue
		}
		if strings.HasPrefix(trimmed, "[") && strings.HasSuffix(trimmed, "]") {
			section = strings.Trim(trimmed, "[]")
			continue
		}
		key, value, ok := strings.Cut(trimmed, "=")
		if !ok {
			t.Fatalf("%s: line without '=': %q", path, trimmed)
		}
		k := section + "." + strings.TrimSpace(key)
		u[k] = append(u[k], strings.TrimSpace(value))
	}
	if err := scanner.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u unitFile) last(key string) string {
	v := u[key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func TestSystemdUnitHardening(t *testing.T) {
	u := parseUnit(t, exampleUnit)
	for key, want := range map[string]string{
		"Service.NoNewPrivileges":         "yes",
		"Service.ProtectSystem":           "strict",
		"Service.ProtectHome":             "yes",
		"Service.PrivateTmp":              "yes",
		"Service.PrivateDevices":          "yes",
		"Service.DynamicUser":             "yes",
		"Service.ProtectKernelModules":    "yes",
		"Service.ProtectControlGroups":    "yes",
		"Service.RestrictSUIDSGID":        "yes",
		"Service.LockPersonality":         "yes",
		"Service.MemoryDenyWriteExecute":  "yes",
		"Service.SystemCallArchitectures": "native",
	} {
		if got := u.last(key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	for _, key := range []string{"Service.CapabilityBoundingSet", "Service.AmbientCapabilities"} {
		got := strings.Fields(strings.Join(u[key], " "))
		slices.Sort(got)
		want := slices.Clone(neededCaps)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s = %v, want exactly %v", key, got, want)
		}
	}
	families := strings.Fields(u.last("Service.RestrictAddressFamilies"))
	for _, f := range []string{"AF_NETLINK", "AF_INET", "AF_INET6", "AF_UNIX"} {
		if !slices.Contains(families, f) {
			t.Errorf("RestrictAddressFamilies lacks %s: %v", f, families)
		}
	}
	if slices.Contains(families, "AF_PACKET") {
		t.Error("RestrictAddressFamilies allows AF_PACKET, which the exporter never uses")
	}
	filter := strings.Fields(u.last("Service.SystemCallFilter"))
	for _, sc := range []string{"@system-service", "bpf", "perf_event_open"} {
		if !slices.Contains(filter, sc) {
			t.Errorf("SystemCallFilter lacks %s: %v", sc, filter)
		}
	}
	// Settings that would hide what the exporter reads.
	for key, bad := range map[string]string{
		"Service.PrivateNetwork": "yes", "Service.PrivateUsers": "yes", "Service.ProcSubset": "pid",
		"Service.ProtectKernelTunables": "yes", "Service.User": "root",
	} {
		if u.last(key) == bad {
			t.Errorf("%s=%s breaks the exporter (see the unit's comments)", key, bad)
		}
	}
	// Plain HTTP on loopback until the TLS drop-in is installed.
	execStart := strings.Fields(u.last("Service.ExecStart"))
	if !slices.Contains(execStart, "--web.listen-address=127.0.0.1:10871") {
		t.Errorf("ExecStart does not listen on 127.0.0.1:10871 only: %q", execStart)
	}
	for _, a := range execStart {
		if strings.HasPrefix(a, "--web.config.file") {
			t.Errorf("ExecStart needs a web config (TLS) before the first start: %q", execStart)
		}
	}
	if len(u["Service.LoadCredential"]) > 0 {
		t.Errorf("the unit loads credentials that exist only after the TLS step: %v", u["Service.LoadCredential"])
	}
	// The defaults work under the three capabilities (named namespaces
	// it may not enter are skipped and counted: TestLabCapabilities), so
	// the unit does not override them.
	for _, a := range execStart {
		if strings.HasPrefix(a, "--collector.netns.") {
			t.Errorf("ExecStart overrides %s: the default works under the unit's capabilities", a)
		}
	}
	if u.last("Install.WantedBy") != "multi-user.target" {
		t.Errorf("Install.WantedBy = %q", u.last("Install.WantedBy"))
	}
}

// TestSystemdTLSDropIn: the drop-in clears the unit's ExecStart and runs
// the same binary with the same flags, but on every address and with the
// web config, which it loads as a credential with the certificate and key
// it names.
func TestSystemdTLSDropIn(t *testing.T) {
	u, d := parseUnit(t, exampleUnit), parseUnit(t, tlsDropIn)
	starts := d["Service.ExecStart"]
	if len(starts) != 2 || starts[0] != "" {
		t.Fatalf("drop-in ExecStart = %q, want an empty ExecStart= (clearing the unit's) and one command", starts)
	}
	want := map[string]bool{}
	for _, a := range strings.Fields(u.last("Service.ExecStart")) {
		if !strings.HasPrefix(a, "--web.listen-address=") {
			want[a] = true
		}
	}
	want["--web.listen-address=:10871"] = true
	want["--web.config.file=${CREDENTIALS_DIRECTORY}/web-config.yml"] = true
	got := map[string]bool{}
	for _, a := range strings.Fields(starts[1]) {
		got[a] = true
	}
	for a := range want {
		if !got[a] {
			t.Errorf("drop-in ExecStart lacks %s: %q", a, starts[1])
		}
	}
	for a := range got {
		if !want[a] {
			t.Errorf("drop-in ExecStart has %s, which the unit does not: %q", a, starts[1])
		}
	}
	creds := strings.Join(d["Service.LoadCredential"], " ")
	for _, name := range []string{"web-config.yml:", "tls.crt:", "tls.key:"} {
		if !strings.Contains(creds, name) {
			t.Errorf("drop-in LoadCredential lacks %s (the example web config names tls.crt and tls.key next to it)", name)
		}
	}
}

// unitArgs are an ExecStart's flags for startExporter: the listen address
// dropped (it picks a free loopback port) and the web config replaced.
func unitArgs(execStart, webConfig string) []string {
	var args []string
	for _, a := range strings.Fields(execStart)[1:] {
		switch {
		case strings.HasPrefix(a, "--web.listen-address="):
		case strings.HasPrefix(a, "--web.config.file="):
			args = append(args, "--web.config.file="+webConfig)
		default:
			args = append(args, a)
		}
	}
	return args
}

// TestSystemdUnitFlags starts the binary with the unit's own ExecStart
// arguments, so a renamed flag fails here rather than on a user's node, and
// scrapes it over plain HTTP as the first start does.
func TestSystemdUnitFlags(t *testing.T) {
	u := parseUnit(t, exampleUnit)
	e := startExporter(t, nil, unitArgs(u.last("Service.ExecStart"), "")...)
	e.waitListening(t)
	if code, body := e.scrape(t); code != 200 {
		t.Errorf("scrape with the unit's flags: status %d\n%s", code, body)
	}
}

// TestSystemdTLSStep follows docs/deploy.md's TLS step: its certificate
// commands run as written (for localhost and 127.0.0.1, in a temporary
// directory instead of /etc/ipsec_exporter), then the binary runs with the
// drop-in's flags and the example web config, and a client that trusts only
// that certificate scrapes it with the example password.
func TestSystemdTLSStep(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	doc, err := os.ReadFile(deployDoc)
	if err != nil {
		t.Fatal(err)
	}
	script := fencedBlock(t, string(doc), "openssl req")
	dir := t.TempDir()
	var lines []string
	for _, line := range strings.Split(script, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "NODE=") {
			line = "NODE=localhost NODE_IP=127.0.0.1"
		}
		lines = append(lines, strings.ReplaceAll(line, "/etc/ipsec_exporter", dir))
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", strings.Join(lines, "\n"))
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the doc's certificate commands: %v\n%s\n%s", err, strings.Join(lines, "\n"), out)
	}
	if fi, err := os.Stat(filepath.Join(dir, "tls.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("tls.key after the doc's commands: %v, %v (want mode 0600)", fi, err)
	}
	config, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	configPath := filepath.Join(dir, "web-config.yml")
	if err := os.WriteFile(configPath, config, 0o600); err != nil {
		t.Fatal(err)
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		t.Fatal("tls.crt holds no certificate")
	}
	setup := tlsSetup{configPath: configPath, client: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}}
	d := parseUnit(t, tlsDropIn)
	e := startExporter(t, nil, unitArgs(d.last("Service.ExecStart"), configPath)...)
	e.waitListening(t)
	if code, body := setup.scrape(t, e.addr, exampleUser, examplePassword); code != 200 || !strings.Contains(body, "ipsec_scrape_collector_success") {
		t.Errorf("scrape over TLS with the doc's certificate: status %d\n%s", code, body)
	}
	if code, _ := setup.scrape(t, e.addr, "", ""); code != http.StatusUnauthorized {
		t.Errorf("scrape without credentials: status %d, want 401", code)
	}
	// The certificate names the node as the doc says: by name too.
	_, port, _ := net.SplitHostPort(e.addr)
	if code, _ := setup.scrape(t, "localhost:"+port, exampleUser, examplePassword); code != 200 {
		t.Errorf("scrape of https://localhost:%s: status %d", port, code)
	}
}

// fencedBlock returns the body of the first ```sh block of doc that
// contains marker, with the Markdown list indentation removed.
func fencedBlock(t *testing.T, doc, marker string) string {
	t.Helper()
	lines := strings.Split(doc, "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```sh" {
			continue
		}
		indent := lines[i][:len(lines[i])-len(strings.TrimLeft(lines[i], " "))]
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, strings.TrimPrefix(lines[i], indent))
		}
		if b := strings.Join(body, "\n"); strings.Contains(b, marker) {
			return b
		}
	}
	t.Fatalf("docs/deploy.md has no sh block with %q", marker)
	return ""
}

// TestSystemdAnalyzeVerify runs systemd's own checks on the unit: syntax,
// unknown keys, and the exposure score of `systemd-analyze security`.
func TestSystemdAnalyzeVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed (package systemd)")
	}
	raw, err := os.ReadFile(exampleUnit)
	if err != nil {
		t.Fatal(err)
	}
	// verify checks that ExecStart's binary exists; point it at ours.
	unit := strings.ReplaceAll(string(raw), "/usr/local/bin/ipsec_exporter", exporterBinary(t))
	dir := t.TempDir()
	path := filepath.Join(dir, "ipsec_exporter.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	// The TLS drop-in where systemd looks for it next to the unit.
	dropIn, err := os.ReadFile(tlsDropIn)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(path+".d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path+".d", "tls.conf"),
		[]byte(strings.ReplaceAll(string(dropIn), "/usr/local/bin/ipsec_exporter", exporterBinary(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	// verify reports unknown keys on stderr but still exits 0: any output
	// is a failure.
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	out, err = exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", path).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "offline") {
			t.Skipf("systemd-analyze security --offline not supported (systemd < 250): %s", out)
		}
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	// The last line is "→ Overall exposure level for ipsec_exporter.service: 2.1 OK 🙂".
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	if !strings.Contains(last, " OK ") && !strings.Contains(last, " SAFE ") {
		t.Errorf("exposure level worse than OK:\n%s", out)
	}
	t.Log(last)
}
