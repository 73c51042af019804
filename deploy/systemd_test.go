package deploy_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const exampleUnit = repoRoot + "/examples/systemd/ipsec_exporter.service"

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
	execStart := u.last("Service.ExecStart")
	if !strings.Contains(execStart, "--web.config.file=${CREDENTIALS_DIRECTORY}/web-config.yml") {
		t.Errorf("ExecStart does not read the web config from the credentials: %q", execStart)
	}
	// Without CAP_SYS_ADMIN the exporter cannot enter named namespaces
	// (TestLabCapabilities measures it): the unit must not ask it to.
	if !slices.Contains(strings.Fields(execStart), "--collector.netns.dir=") {
		t.Errorf("ExecStart lacks --collector.netns.dir= (own namespace only), which the capabilities require: %q", execStart)
	}
	creds := strings.Join(u["Service.LoadCredential"], " ")
	for _, name := range []string{"web-config.yml:", "tls.crt:", "tls.key:"} {
		if !strings.Contains(creds, name) {
			t.Errorf("LoadCredential lacks %s (the example web config names tls.crt and tls.key next to it)", name)
		}
	}
	if u.last("Install.WantedBy") != "multi-user.target" {
		t.Errorf("Install.WantedBy = %q", u.last("Install.WantedBy"))
	}
}

// TestSystemdUnitFlags starts the binary with the unit's own ExecStart
// arguments, so a renamed flag fails here rather than on a user's node.
func TestSystemdUnitFlags(t *testing.T) {
	u := parseUnit(t, exampleUnit)
	args := strings.Fields(u.last("Service.ExecStart"))[1:]
	setup := newTLSSetup(t)
	var rewritten []string
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, "--web.listen-address="):
			// startExporter picks a free loopback port.
		case strings.HasPrefix(a, "--web.config.file="):
			rewritten = append(rewritten, "--web.config.file="+setup.configPath)
		default:
			rewritten = append(rewritten, a)
		}
	}
	e := startExporter(t, nil, rewritten...)
	e.waitListening(t)
	if code, body := setup.scrape(t, e.addr, exampleUser, examplePassword); code != 200 {
		t.Errorf("scrape with the unit's flags: status %d\n%s", code, body)
	}
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
	path := filepath.Join(t.TempDir(), "ipsec_exporter.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
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
