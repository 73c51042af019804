package deploy_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSystemCallFilter runs the exporter under strace with the unit's flags
// and every default collector, scrapes it, stops it, and checks that each
// system call it made is allowed by the unit's SystemCallFilter (expanded by
// systemd-analyze). The host cannot load tracing programs, so the verdict
// collector's attach path stops early here; its calls (bpf,
// perf_event_open) are in the filter by name.
func TestSystemCallFilter(t *testing.T) {
	for _, tool := range []string{"strace", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	allowed := expandFilter(t, strings.Fields(parseUnit(t, exampleUnit).last("Service.SystemCallFilter")))

	trace := filepath.Join(t.TempDir(), "strace.out")
	addr := freeAddr(t)
	cmd := exec.Command("strace", "-f", "-qq", "-o", trace, "--", exporterBinary(t),
		"--web.listen-address="+addr, "--collector.netns.dir=")
	if out, err := exec.Command("strace", "-o", "/dev/null", "true").CombinedOutput(); err != nil {
		t.Skipf("strace cannot trace here: %v %s", err, out)
	}
	output := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = output, output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e := &exporter{cmd: cmd, addr: addr, output: output, exited: make(chan struct{})}
	go func() { e.err = cmd.Wait(); close(e.exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-e.exited })
	e.waitListening(t)
	for range 3 {
		scrapePlain(t, addr)
	}
	// SIGTERM to the exporter (strace's child), so its shutdown is traced too.
	child := straceChild(t, cmd.Process.Pid)
	if err := syscall.Kill(child, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("exporter did not stop")
	}

	used := map[string]bool{}
	f, err := os.Open(trace)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	call := regexp.MustCompile(`^\d+ +([a-z0-9_]+)\(`)
	scanner := bufio.NewScanner(f)
	scanner.Buffer(nil, 1<<20)
	for scanner.Scan() {
		if m := call.FindStringSubmatch(scanner.Text()); m != nil {
			used[m[1]] = true
		}
	}
	if len(used) < 10 {
		t.Fatalf("only %d system calls traced: strace output unreadable?", len(used))
	}
	for name := range used {
		if !allowed[name] {
			t.Errorf("system call %s is not allowed by SystemCallFilter: the service would get EPERM", name)
		}
	}
	t.Logf("%d distinct system calls, all allowed", len(used))
}

// expandFilter resolves a SystemCallFilter allow list (system calls and
// @groups) into system call names with systemd-analyze's own tables.
func expandFilter(t *testing.T, filter []string) map[string]bool {
	t.Helper()
	out, err := exec.Command("systemd-analyze", "syscall-filter").Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter: %v", err)
	}
	groups := map[string][]string{}
	var group string
	for _, line := range strings.Split(string(out), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "@"):
			group = trimmed
		case trimmed == "" || strings.HasPrefix(trimmed, "#") || group == "":
		default:
			groups[group] = append(groups[group], trimmed)
		}
	}
	allowed := map[string]bool{}
	var add func(string)
	add = func(entry string) {
		if !strings.HasPrefix(entry, "@") {
			allowed[entry] = true
			return
		}
		members, ok := groups[entry]
		if !ok {
			t.Fatalf("unknown system call group %s", entry)
		}
		groups[entry] = nil // each group once
		for _, m := range members {
			add(m)
		}
	}
	for _, entry := range filter {
		if strings.HasPrefix(entry, "~") {
			t.Fatalf("deny-list entry %q in an allow list: expandFilter does not handle it", entry)
		}
		add(entry)
	}
	return allowed
}

// straceChild returns the pid strace started.
func straceChild(t *testing.T, stracePid int) int {
	t.Helper()
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(stracePid) + "/task/*/children")
	for _, p := range tasks {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		fields := strings.Fields(string(data))
		if len(fields) > 0 {
			pid, err := strconv.Atoi(fields[0])
			if err == nil {
				return pid
			}
		}
	}
	t.Fatalf("no child of strace (pid %d)", stracePid)
	return 0
}
