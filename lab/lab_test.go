package lab

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCPIOReadsBack: the archive we write is one cpio(1) lists and extracts
// with the same names, types and contents.
func TestCPIOReadsBack(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed (make deps)")
	}
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	for _, err := range []error{
		c.File("/lab/bin/x.test", 0o755, []byte("binary")),
		c.File("odd", 0o644, []byte("12345")), // lengths not multiple of 4
		c.Symlink("/var/run", "/run"),
		c.CharDev("/dev/console", 5, 1),
		c.Dir("/empty"),
		c.Close(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-id", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := cmd.CombinedOutput(); err != nil && !strings.Contains(string(out), "console") {
		t.Fatalf("cpio -id: %v\n%s", err, out) // mknod may fail unprivileged; nothing else may
	}
	list := exec.Command("cpio", "-itv", "--quiet")
	list.Stdin = bytes.NewReader(buf.Bytes())
	out, err := list.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	for _, want := range []string{"lab/bin/x.test", "odd", "var/run -> /run", "dev/console", "empty", "crw-------"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("cpio -t lacks %q:\n%s", want, out)
		}
	}
	for name, want := range map[string]string{"lab/bin/x.test": "binary", "odd": "12345"} {
		got, err := exec.Command("cat", filepath.Join(dir, name)).Output()
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", name, got, err, want)
		}
	}
	if err := c.File("odd", 0o644, nil); err == nil {
		t.Errorf("a duplicate entry was accepted")
	}
}

// TestNewestPackage: kernel packages compare by their numbers, not as text.
func TestNewestPackage(t *testing.T) {
	for _, c := range []struct{ a, b string }{
		{"linux-image-6.1.0-9-cloud-amd64-unsigned", "linux-image-6.1.0-56-cloud-amd64-unsigned"},
		{"linux-image-6.12.99+deb12-cloud-amd64-unsigned", "linux-image-6.12.117+deb12-cloud-amd64-unsigned"},
	} {
		if !VersionLess(c.a, c.b) || VersionLess(c.b, c.a) {
			t.Errorf("VersionLess(%s, %s) wrong", c.a, c.b)
		}
	}
}

// TestSummaryFails: the run fails for a failing package, a package that
// never reported, a VM problem; it passes only when every package exited 0.
func TestSummaryFails(t *testing.T) {
	pkgs := []TestPackage{{ImportPath: "x/a"}, {ImportPath: "x/b"}}
	feed := func(lines ...string) *kernelResult {
		r := &kernelResult{kernel: "6.12", pkgs: map[string]int{}, took: map[string]time.Duration{}}
		var out bytes.Buffer
		for _, l := range lines {
			r.line(&out, l)
		}
		return r
	}
	ok := feed(Marker+"init 6.12", Marker+"pkg-start x/a", "=== RUN   TestLabX", "--- PASS: TestLabX (0.1s)",
		Marker+"pkg-end x/a 0 3.10 5.20", Marker+"pkg-end x/b 0", Marker+"done")
	var sum bytes.Buffer
	if err := summarize(&sum, pkgs, []*kernelResult{ok}, time.Second); err != nil {
		t.Errorf("all passed, got %v", err)
	}
	if !strings.Contains(sum.String(), "ok 2.1s") {
		t.Errorf("summary lacks the package's run time:\n%s", sum.String())
	}
	for name, r := range map[string]*kernelResult{
		"failed package":  feed(Marker+"pkg-end x/a 1", Marker+"pkg-end x/b 0", Marker+"done"),
		"missing package": feed(Marker+"pkg-end x/a 0", Marker+"done"),
		"garbled exit":    feed(Marker+"pkg-end x/a 0", Marker+"pkg-end x/b ?", Marker+"done"),
	} {
		if err := summarize(&bytes.Buffer{}, pkgs, []*kernelResult{r}, time.Second); err == nil {
			t.Errorf("%s: summary passed", name)
		}
	}
	hung := feed(Marker+"pkg-end x/a 0", Marker+"pkg-end x/b 0")
	hung.problems = []string{"VM timed out after 10m0s"}
	if err := summarize(&bytes.Buffer{}, pkgs, []*kernelResult{hung}, time.Second); err == nil {
		t.Errorf("a timed-out VM passed")
	}
}

// TestFindTestPackages: the scenario package itself has TestLab tests, this
// package (host-only tests) has none.
func TestFindTestPackages(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Skip(err)
	}
	pkgs, err := FindTestPackages(root, "./lab/...")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, p := range pkgs {
		found = append(found, p.ImportPath)
	}
	if len(found) != 1 || !strings.HasSuffix(found[0], "/lab/scenario") {
		t.Errorf("found %v, want only lab/scenario", found)
	}
}

// TestTail: lines written while the tail runs arrive whole, CRs dropped,
// and a last line without newline is delivered at the end.
func TestTail(t *testing.T) {
	f := filepath.Join(t.TempDir(), "serial")
	if err := writeFile(f, "one\r\ntw"); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	got := make(chan []string)
	go func() {
		var lines []string
		tail(f, done, func(l string) { lines = append(lines, l) })
		got <- lines
	}()
	time.Sleep(150 * time.Millisecond)
	if err := appendFile(f, "o\nthree"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	close(done)
	lines := <-got
	if strings.Join(lines, "|") != "one|two|three" {
		t.Errorf("lines %q", lines)
	}
}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o644) }

func appendFile(p, s string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	return errors.Join(err, f.Close())
}
