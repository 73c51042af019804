package deploy_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// userFiles are the files a release must carry for users: every dashboard,
// the rules and Alertmanager example, every systemd and Kubernetes example,
// the docs. Matched against the repository, so a new example that is not
// added to .promu.yml's tarball list fails TestRelease.
var userFiles = []string{
	"dashboards/*.json", "examples/prometheus/rules.yml", "examples/alertmanager/*.yml",
	"examples/systemd/*", "examples/kubernetes/*.yaml", "docs/*.md", "dashboards/README.md", "README.md", "LICENSE",
	"deploy/helm/ipsec-exporter/", // the whole chart
}

// TestRelease runs `make release` twice, into two directories, and checks
// what a user downloads: one tarball per .promu.yml platform named as promu
// names them, sha256sums.txt matching them, in each the binary for its
// architecture and every user file (byte for byte as in the repository,
// under its repository path), entries owned by 0 with the commit's time;
// the amd64 binary's --version carries VERSION, the commit and the commit's
// time; and both runs give the same bytes.
func TestRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the release")
	}
	first, second := t.TempDir(), t.TempDir()
	for _, out := range []string{first, second} {
		cmd := exec.Command("make", "-s", "release", "RELEASE_OUT="+out)
		cmd.Dir = repoRoot
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make release: %v\n%s", err, b)
		}
	}
	sums := readFile(t, filepath.Join(first, "sha256sums.txt"))
	if again := readFile(t, filepath.Join(second, "sha256sums.txt")); again != sums {
		t.Errorf("two releases of the same commit differ:\n%s\n%s", sums, again)
	}

	version := strings.TrimSpace(readFile(t, repoRoot+"/VERSION"))
	commitTime := gitOutput(t, "log", "-1", "--format=%ct")
	epoch, err := strconv.ParseInt(commitTime, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	want := wantedFiles(t)
	var names []string
	for _, p := range readPromu(t).Crossbuild.Platforms {
		goos, goarch, _ := strings.Cut(p, "/")
		top := fmt.Sprintf("ipsec_exporter-%s.%s-%s", version, goos, goarch)
		names = append(names, top+".tar.gz")
		t.Run(top, func(t *testing.T) {
			files := readTarball(t, filepath.Join(first, top+".tar.gz"), top, time.Unix(epoch, 0))
			bin, ok := files["ipsec_exporter"]
			if !ok {
				t.Fatal("no ipsec_exporter binary at the top")
			}
			checkArch(t, bin, goarch)
			for _, f := range want {
				got, ok := files[f]
				if !ok {
					t.Errorf("%s is missing (add it to .promu.yml's tarball files)", f)
					continue
				}
				if !bytes.Equal(got, []byte(readFile(t, repoRoot+"/"+f))) {
					t.Errorf("%s differs from the repository's", f)
				}
				delete(files, f)
			}
			delete(files, "ipsec_exporter")
			for f := range files {
				t.Errorf("%s is in the tarball but is not a user file", f)
			}
			if goarch == "amd64" {
				checkVersion(t, bin, version, epoch)
			}
		})
	}
	// sha256sums.txt: exactly the tarballs, with their sums.
	var listed []string
	for _, line := range strings.Split(strings.TrimSpace(sums), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("sha256sums.txt line %q", line)
		}
		listed = append(listed, name)
		h := sha256.Sum256([]byte(readFile(t, filepath.Join(first, name))))
		if hex.EncodeToString(h[:]) != sum {
			t.Errorf("sha256sums.txt: %s has sum %x, not %s", name, h, sum)
		}
	}
	slices.Sort(listed)
	slices.Sort(names)
	if !slices.Equal(listed, names) {
		t.Errorf("sha256sums.txt lists %v, want the tarballs %v", listed, names)
	}
}

// wantedFiles expands userFiles in the repository.
func wantedFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pattern := range userFiles {
		matches, err := filepath.Glob(repoRoot + "/" + pattern)
		if err != nil {
			t.Fatal(err)
		}
		if len(matches) == 0 && pattern == "LICENSE" {
			t.Log("no LICENSE in the repository yet")
			continue
		}
		if len(matches) == 0 {
			t.Fatalf("no file matches %s", pattern)
		}
		for _, m := range matches {
			if !strings.HasSuffix(pattern, "/") {
				files = append(files, strings.TrimPrefix(m, repoRoot+"/"))
				continue
			}
			err := filepath.WalkDir(m, func(path string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					files = append(files, strings.TrimPrefix(path, repoRoot+"/"))
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return files
}

// readTarball returns the regular files under top, by path relative to it,
// and checks every entry's owner, time and that nothing lies outside top.
func readTarball(t *testing.T, path, top string, mtime time.Time) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if !gz.ModTime.IsZero() {
		t.Errorf("gzip header has a time stamp (%s): not reproducible", gz.ModTime)
	}
	files := map[string][]byte{}
	r := tar.NewReader(gz)
	for {
		h, err := r.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(mtime) {
			t.Errorf("%s: owner %d:%d, time %s; want 0:0 and the commit's time %s", h.Name, h.Uid, h.Gid, h.ModTime, mtime)
		}
		rel, ok := strings.CutPrefix(strings.TrimSuffix(h.Name, "/"), top)
		if !ok {
			t.Errorf("%s is outside %s/", h.Name, top)
			continue
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimPrefix(rel, "/")] = b
	}
}

func checkArch(t *testing.T, bin []byte, goarch string) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("the binary is not ELF: %v", err)
	}
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[goarch]
	if f.Machine != want {
		t.Errorf("binary for %s is %s", goarch, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary is dynamically linked (it must run on any node and in a distroless image)")
		}
	}
}

// checkVersion runs the released binary: its build info is VERSION, the
// commit and the commit's time, built as reproducible.
func checkVersion(t *testing.T, bin []byte, version string, epoch int64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ipsec_exporter")
	if err := os.WriteFile(path, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("--version: %v\n%s", err, out)
	}
	for _, want := range []string{
		"ipsec_exporter, version " + version + " ",
		"revision: " + gitOutput(t, "rev-parse", "HEAD"),
		"build user:       reproducible@reproducible",
		"build date:       " + time.Unix(epoch, 0).UTC().Format("20060102-15:04:05"),
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--version lacks %q:\n%s", want, out)
		}
	}
}

func gitOutput(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}
