package lab

import (
	"crypto/sha256"
	"debug/elf"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// The fetch tests run apt itself: against a small archive served by the
// test (APT_CONFIG points apt at it and at lists of the test's own), and
// once against Debian's archive for a real kernel. Each has an empty lab
// cache (IPSEC_LAB_CACHE).

// testSpec is a kernel family only the test's archive has.
var testSpec = KernelSpec{Name: "test", Prefix: "linux-image-0.0.0-", Package: `^linux-image-0\.0\.0-[0-9]+-labtest-unsigned$`}

// aptArchive is a flat apt repository (`deb [trusted=yes] URL ./`) over
// HTTP, with an apt configuration that sees only it.
type aptArchive struct {
	t      *testing.T
	dir    string
	srv    *httptest.Server
	mu     sync.Mutex
	files  map[string][]byte // path -> content; a path not here is a 404
	stanza []string          // Packages entries
}

func requireApt(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb", "depmod"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: the lab fetches Debian packages with apt (Debian hosts only)", tool)
		}
	}
}

// newAptArchive starts the archive and points apt (APT_CONFIG) and the lab
// cache (IPSEC_LAB_CACHE, empty) at the test's own directories.
func newAptArchive(t *testing.T) *aptArchive {
	t.Helper()
	requireApt(t)
	a := &aptArchive{t: t, dir: t.TempDir(), files: map[string][]byte{}}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		b, ok := a.files[strings.TrimPrefix(path.Clean(r.URL.Path), "/")]
		a.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(a.srv.Close)
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d", "lists/partial", "cache/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(a.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	a.write("etc/sources.list", fmt.Sprintf("deb [trusted=yes] %s/ ./\n", a.srv.URL))
	a.write("status", "")
	// The sandbox user is the test's own: apt's _apt user may not read
	// the test's temporary directories.
	a.write("apt.conf", fmt.Sprintf(`Dir::Etc %q;
Dir::Etc::sourcelist %q;
Dir::Etc::sourceparts %q;
Dir::Etc::parts %q;
Dir::Etc::preferencesparts %q;
Dir::State::Lists %q;
Dir::State::status %q;
Dir::Cache %q;
APT::Sandbox::User %q;
`, a.path("etc"), a.path("etc/sources.list"), a.path("etc/sources.list.d"), a.path("etc/apt.conf.d"),
		a.path("etc/preferences.d"), a.path("lists"), a.path("status"), a.path("cache"), u.Username))
	t.Setenv("APT_CONFIG", a.path("apt.conf"))
	t.Setenv("IPSEC_LAB_CACHE", filepath.Join(t.TempDir(), "lab"))
	return a
}

func (a *aptArchive) path(p string) string { return filepath.Join(a.dir, p) }

func (a *aptArchive) write(p, content string) {
	a.t.Helper()
	if err := os.WriteFile(a.path(p), []byte(content), 0o644); err != nil {
		a.t.Fatal(err)
	}
}

// addKernel builds a kernel package (boot/vmlinuz-REL, an empty
// lib/modules/REL) and lists it; serve false lists it without the file,
// as lists older than the archive do.
func (a *aptArchive) addKernel(abi int, version string, serve bool) {
	a.t.Helper()
	release := fmt.Sprintf("0.0.0-%d-labtest", abi)
	a.addDeb(fmt.Sprintf("linux-image-0.0.0-%d-labtest-unsigned", abi), version, "kmod", serve, map[string]string{
		"boot/vmlinuz-" + release:               "kernel " + version,
		"lib/modules/" + release + "/kernel/.k": "",
	})
}

// addDeb builds the package name=version with files (path -> content) and
// the Depends field depends, and lists it (served or not, as addKernel).
func (a *aptArchive) addDeb(name, version, depends string, serve bool, files map[string]string) {
	a.t.Helper()
	tree := filepath.Join(a.t.TempDir(), "pkg")
	control := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: amd64\nMaintainer: lab test <lab@test>\nDepends: %s\nDescription: lab fetch test package\n", name, version, depends)
	files["DEBIAN/control"] = control
	for p, content := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(tree, p)), 0o755); err != nil {
			a.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tree, p), []byte(content), 0o644); err != nil {
			a.t.Fatal(err)
		}
	}
	deb := filepath.Join(a.t.TempDir(), "p.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "-b", tree, deb).CombinedOutput(); err != nil {
		a.t.Fatalf("dpkg-deb -b: %v\n%s", err, out)
	}
	b, err := os.ReadFile(deb)
	if err != nil {
		a.t.Fatal(err)
	}
	file := fmt.Sprintf("pool/%s_%s_amd64.deb", name, version)
	a.mu.Lock()
	defer a.mu.Unlock()
	if serve {
		a.files[file] = b
	}
	a.stanza = append(a.stanza, fmt.Sprintf("%sFilename: %s\nSize: %d\nSHA256: %x\n", control, file, len(b), sha256.Sum256(b)))
	a.files["Packages"] = []byte(strings.Join(a.stanza, "\n"))
}

// update runs apt-get update against the archive.
func (a *aptArchive) update() {
	a.t.Helper()
	if out, err := exec.Command("apt-get", "update").CombinedOutput(); err != nil {
		a.t.Fatalf("apt-get update: %v\n%s", err, out)
	}
}

// fetchLog records the downloads Fetch announced ("fetching ...").
type fetchLog struct{ lines []string }

func (l *fetchLog) logf(format string, a ...any) {
	if line := fmt.Sprintf(format, a...); strings.HasPrefix(line, "fetching ") {
		l.lines = append(l.lines, line)
	}
}

// TestFetchDrift: into an empty cache, Fetch takes the newest package name
// and its version from the apt lists, downloads, unpacks and runs depmod;
// a new version of the same name (Debian rebuilds without an ABI bump) is
// fetched again; a cached one is not; without lists the cache is used.
func TestFetchDrift(t *testing.T) {
	a := newAptArchive(t)
	a.addKernel(1, "0.0.1-1", true)
	a.addKernel(2, "0.0.2-1", true)
	a.update()
	var log fetchLog
	k, err := Fetch(testSpec, log.logf)
	if err != nil {
		t.Fatal(err)
	}
	if k.Debian() != "linux-image-0.0.0-2-labtest-unsigned=0.0.2-1" || k.Release != "0.0.0-2-labtest" {
		t.Errorf("fetched %s (uname -r %s), want the newest: linux-image-0.0.0-2-labtest-unsigned=0.0.2-1", k.Debian(), k.Release)
	}
	if b, err := os.ReadFile(k.Vmlinuz); err != nil || string(b) != "kernel 0.0.2-1" {
		t.Errorf("vmlinuz: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(k.Root, "lib/modules", k.Release, "modules.dep")); err != nil {
		t.Errorf("depmod did not run: %v", err)
	}
	a.addKernel(2, "0.0.2-2", true)
	a.update()
	if k, err = Fetch(testSpec, log.logf); err != nil {
		t.Fatal(err)
	}
	if k.Version != "0.0.2-2" {
		t.Errorf("after a rebuild fetched %s, want version 0.0.2-2", k.Debian())
	}
	if b, err := os.ReadFile(k.Vmlinuz); err != nil || string(b) != "kernel 0.0.2-2" {
		t.Errorf("vmlinuz of the rebuild: %q, %v", b, err)
	}
	want := []string{"fetching linux-image-0.0.0-2-labtest-unsigned:amd64=0.0.2-1", "fetching linux-image-0.0.0-2-labtest-unsigned:amd64=0.0.2-2"}
	if strings.Join(log.lines, "|") != strings.Join(want, "|") {
		t.Errorf("fetches %q, want %q", log.lines, want)
	}
	a.srv.Close() // from now on only the cache can answer
	if _, err := Fetch(testSpec, log.logf); err != nil || len(log.lines) != 2 {
		t.Errorf("cached kernel: %v, fetches %q", err, log.lines)
	}
	if err := os.RemoveAll(a.path("lists")); err != nil {
		t.Fatal(err)
	}
	if k, err := Fetch(testSpec, log.logf); err != nil || k.Version != "0.0.2-2" {
		t.Errorf("without apt lists: %v, %+v; want the newest cached", err, k)
	}
}

// TestFetchVanished: lists older than the archive name a package that is
// gone (404). Fetch says to run apt-get update and leaves the cache empty.
func TestFetchVanished(t *testing.T) {
	a := newAptArchive(t)
	a.addKernel(3, "0.0.3-1", false)
	a.update()
	_, err := Fetch(testSpec, t.Logf)
	if err == nil {
		t.Fatal("a package the archive does not have was fetched")
	}
	for _, want := range []string{"linux-image-0.0.0-3-labtest-unsigned:amd64=0.0.3-1", "no longer has it", "run `apt-get update`"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	cache, err := CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(cache, "debs", "linux-image-*")); len(left) != 0 {
		t.Errorf("a failed fetch left %v in the cache", left)
	}
}

// TestFetchNoLists: apt knows no kernel package (no lists, or sources
// without the kernels) and nothing is cached: Fetch names what to run,
// for a kernel of the matrix as for a package name nobody has.
func TestFetchNoLists(t *testing.T) {
	newAptArchive(t) // its lists are empty: no apt-get update
	for _, spec := range []KernelSpec{Kernels[0], testSpec} {
		_, err := Fetch(spec, t.Logf)
		if err == nil || !strings.Contains(err.Error(), "make deps") || !strings.Contains(err.Error(), "apt-get update") {
			t.Errorf("%s without apt lists: %v, want an error naming make deps and apt-get update", spec.Name, err)
		}
	}
	_, err := FetchDeb("strongswan-charon", t.Logf)
	if err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Errorf("a daemon package without apt lists: %v, want an error naming make deps", err)
	}
}

// TestFetchDebsWithLibraries: a daemon package and, level by level, the
// lib* packages it needs that the host lacks, each once; libraries the
// host has (libc6) and packages that are not libraries are left out.
func TestFetchDebsWithLibraries(t *testing.T) {
	a := newAptArchive(t)
	a.addDeb("labtestd", "1.0-1", "liblabtest-a1 (>= 1.0), libc6, labtest-data | liblabtest-b1", true, map[string]string{"usr/sbin/labtestd": "daemon"})
	a.addDeb("labtest-cli", "1.0-1", "liblabtest-a1", true, map[string]string{"usr/bin/labtest": "cli"})
	a.addDeb("liblabtest-a1", "1:1.0-1", "liblabtest-b1", true, map[string]string{"usr/lib/liblabtest-a.so.1": "a"})
	a.addDeb("liblabtest-b1", "1.0-1", "libc6", true, map[string]string{"usr/lib/liblabtest-b.so.1": "b"})
	a.addDeb("labtest-data", "1.0-1", "", true, map[string]string{"usr/share/labtest": "data"})
	a.update()
	debs, err := FetchDebsWithLibraries([]string{"labtestd", "labtest-cli"}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range debs {
		got = append(got, d.Name+"="+d.Version)
		if _, err := os.Stat(d.Root); err != nil {
			t.Errorf("%s: %v", d.Name, err)
		}
	}
	want := "labtestd=1.0-1 labtest-cli=1.0-1 liblabtest-a1=1:1.0-1 liblabtest-b1=1.0-1"
	if strings.Join(got, " ") != want {
		t.Errorf("fetched %s, want %s", strings.Join(got, " "), want)
	}
	if b, err := os.ReadFile(filepath.Join(debs[2].Root, "usr/lib/liblabtest-a.so.1")); err != nil || string(b) != "a" {
		t.Errorf("liblabtest-a1's tree: %q, %v", b, err)
	}
}

// TestFetchDebianKernel fetches the newest lab kernel from Debian's archive
// into an empty cache, as a fresh machine does: download, unpack, depmod;
// the lab's modules then resolve. 34 MB; 30-31 s on the build machine at a
// load average of 10-12 (2 CPUs).
func TestFetchDebianKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: downloads a kernel package from Debian's archive")
	}
	requireApt(t)
	spec := Kernels[len(Kernels)-1]
	t.Setenv("IPSEC_LAB_CACHE", t.TempDir())
	base, err := debsDir()
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := newestPackage(spec, base)
	if err != nil {
		t.Skipf("the apt lists have no %s kernel (run `make deps`): %v", spec.Name, err)
	}
	k, err := Fetch(spec, t.Logf)
	if err != nil {
		for _, offline := range []string{"Temporary failure resolving", "Could not resolve", "Could not connect", "Network is unreachable"} {
			if strings.Contains(err.Error(), offline) {
				t.Skipf("Debian's archive is not reachable: %v", err)
			}
		}
		t.Fatal(err)
	}
	policy, err := aptCommand(base, "apt-cache", "policy", pkg).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(policy), "Candidate: "+k.Version+"\n") {
		t.Errorf("fetched %s, apt's candidate is another:\n%s", k.Debian(), policy)
	}
	if fi, err := os.Stat(k.Vmlinuz); err != nil || fi.Size() < 1<<20 {
		t.Errorf("vmlinuz %s: %v", k.Vmlinuz, err)
	}
	mods, err := k.Modules(LabModules)
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) < 10 {
		t.Errorf("the lab modules resolved to %d files: %v", len(mods), mods)
	}
}

// TestFetchForeignLibraries fetches an arm64 library package with its
// library closure into an empty cache, as the arm64 lab does for its ip,
// and checks that every shared object unpacked is an AArch64 one: a
// library package has the same version on both architectures, and a pin
// without the architecture fetched the host's (CI: "ip needs libbpf.so.1,
// which neither the host nor the fetched packages have").
func TestFetchForeignLibraries(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: downloads packages from Debian's archive")
	}
	requireApt(t)
	if out, err := exec.Command("dpkg", "--print-foreign-architectures").Output(); err != nil || !strings.Contains(string(out), "arm64") {
		t.Skip("dpkg has no arm64 architecture (make deps with --arm64 adds it)")
	}
	t.Setenv("IPSEC_LAB_CACHE", t.TempDir())
	debs, err := FetchDebsWithLibraries([]string{"libbpf1:arm64"}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	var objects int
	for _, d := range debs {
		if d.Arch != "arm64" && d.Arch != "all" {
			t.Errorf("%s %s: architecture %q", d.Name, d.Version, d.Arch)
		}
		err := filepath.WalkDir(d.Root, func(p string, e fs.DirEntry, err error) error {
			if err != nil || !e.Type().IsRegular() || !strings.Contains(e.Name(), ".so") {
				return err
			}
			f, err := elf.Open(p)
			if err != nil {
				return nil // a linker script or data
			}
			defer f.Close()
			objects++
			if f.Machine != elf.EM_AARCH64 {
				t.Errorf("%s: %s, want AArch64 (package %s)", p, f.Machine, d.Name)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if objects < 3 {
		t.Errorf("%d shared objects in %d packages: libbpf1:arm64 and its libraries (libelf1, zlib1g) want at least 3", objects, len(debs))
	}
}

// TestCachedDebsWantTheirPin: a tree whose .ready does not name the pin of
// its own file name (an empty one, from before pins named the
// architecture) is not offered as cached; one that does is.
func TestCachedDebsWantTheirPin(t *testing.T) {
	base := t.TempDir()
	for stem, ready := range map[string]string{
		"libmnl0_1.0.4-3_arm64":   "libmnl0:arm64=1.0.4-3",
		"libelf1_0.188-2.1_arm64": "",
		"tzdata_2024a-0_all":      "tzdata=2024a-0",
	} {
		if err := os.MkdirAll(filepath.Join(base, stem), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(base, stem, ".ready"), []byte(ready), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := cachedDebs(base)
	slices.Sort(got)
	if want := []string{"libmnl0_1.0.4-3_arm64", "tzdata_2024a-0_all"}; !slices.Equal(got, want) {
		t.Errorf("cached %q, want %q", got, want)
	}
}
