package lab

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Deb is a Debian package unpacked in the lab cache.
type Deb struct {
	Name    string // package name
	Version string // Debian version
	Arch    string // Debian architecture: amd64, arm64, all
	Root    string // unpacked tree
	Depends string // the package's Depends field, as dpkg-deb -f prints it
}

// FetchDeb downloads the candidate version of pkg with apt-get download and
// unpacks it into the lab cache (once: later calls find it there). Without
// apt lists it falls back to the newest cached version. pkg may name an
// architecture (busybox-static:arm64).
func FetchDeb(pkg string, logf func(string, ...any)) (*Deb, error) {
	base, err := debsDir()
	if err != nil {
		return nil, err
	}
	return fetchDeb(pkg, base, nil, logf)
}

// debsDir is where fetched packages are unpacked, one directory per
// name_version_arch, as apt-get download names the .deb.
func debsDir() (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(cache, "debs"), nil
}

// debStep is work done once on a package's unpacked tree, before it is
// marked ready (the kernels' depmod).
type debStep struct {
	name string
	run  func(root string) error
}

// fetchDeb fetches the candidate version of pkg into base (once) and runs
// step on its tree when it unpacks it (nil: nothing).
func fetchDeb(pkg, base string, step *debStep, logf func(string, ...any)) (*Deb, error) {
	stems, err := candidateDebs([]string{pkg}, base)
	if err != nil {
		return nil, err
	}
	return fetchStem(stems[pkg], base, step, logf)
}

// fetchStem fetches the package file stem names (see parseDebStem) into
// base, once, as fetchDeb does.
func fetchStem(stem, base string, step *debStep, logf func(string, ...any)) (*Deb, error) {
	d, err := parseDebStem(stem)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(base, stem)
	d.Root = filepath.Join(dir, "root")
	if pin := d.pin(); !readyFor(dir, pin) {
		logf("fetching %s", pin)
		if err := unpackDeb(pin, dir, step, logf); err != nil {
			return nil, err
		}
	}
	depends, err := os.ReadFile(filepath.Join(dir, "depends"))
	if err != nil {
		return nil, fmt.Errorf("package %s=%s: %w", d.Name, d.Version, err)
	}
	d.Depends = strings.TrimSpace(string(depends))
	return d, nil
}

// parseDebStem reads name and version from apt-get download's file name
// without .deb: name_version_arch, the version's epoch colon written %3a.
func parseDebStem(stem string) (*Deb, error) {
	f := strings.Split(stem, "_")
	if len(f) != 3 {
		return nil, fmt.Errorf("package file %s.deb: want name_version_arch.deb", stem)
	}
	version, err := url.PathUnescape(f[1])
	if err != nil {
		return nil, fmt.Errorf("package file %s.deb: %w", stem, err)
	}
	return &Deb{Name: f[0], Version: version, Arch: f[2]}, nil
}

// pin names exactly this package for apt-get download. The architecture
// matters: name=version alone means the host's architecture, and most
// library packages have the same version on amd64 and arm64, so an arm64
// lab would unpack amd64 libraries under arm64 names.
func (d *Deb) pin() string {
	if d.Arch == "" || d.Arch == "all" {
		return d.Name + "=" + d.Version
	}
	return d.Name + ":" + d.Arch + "=" + d.Version
}

// aptCommand is the apt tool (apt-get, apt-cache) with its binary package
// cache in base, beside the packages. Debian's container images switch that
// cache off (Dir::Cache::pkgcache ""), and then every apt call parses all
// the lists again: 2.0 s of CPU per call on the build machine, 0.5 s with
// the cache, and the lab makes one or two calls per package.
func aptCommand(base, tool string, args ...string) *exec.Cmd {
	_ = os.MkdirAll(base, 0o755) // without it apt works as before, uncached
	opts := []string{"-o", "Dir::Cache::pkgcache=" + filepath.Join(base, "pkgcache.bin")}
	return exec.Command(tool, append(opts, args...)...)
}

// cachedDebs are the file names (name_version_arch, see parseDebStem) of
// the packages fully unpacked in base by their exact pin (readyFor), the
// ones fetchStem would use without fetching.
func cachedDebs(base string) []string {
	var stems []string
	entries, _ := os.ReadDir(base)
	for _, e := range entries {
		if d, err := parseDebStem(e.Name()); err == nil && readyFor(filepath.Join(base, e.Name()), d.pin()) {
			stems = append(stems, e.Name())
		}
	}
	return stems
}

// candidateDebs maps each of pkgs to the file name, without .deb, apt-get
// download would write for it, which names the version (`apt-get download
// --print-uris` reads the local lists only), in one apt call when apt knows
// them all (each call costs apt's start: 0.5 s of CPU). A package apt does
// not know: the newest version in the cache, else an error.
func candidateDebs(pkgs []string, base string) (map[string]string, error) {
	stems := map[string]string{}
	args := append([]string{"download", "--print-uris"}, pkgs...)
	if out, err := aptCommand(base, "apt-get", args...).CombinedOutput(); err == nil {
		// 'URL' name_version_arch.deb size hash
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || !strings.HasSuffix(f[1], ".deb") {
				continue
			}
			stem := strings.TrimSuffix(f[1], ".deb")
			for _, pkg := range pkgs {
				if isDebOf(stem, pkg) {
					stems[pkg] = stem
				}
			}
		}
	}
	for _, pkg := range pkgs {
		if _, ok := stems[pkg]; ok {
			continue
		}
		stem, err := candidateDeb(pkg, base)
		if err != nil {
			return nil, err
		}
		stems[pkg] = stem
	}
	return stems, nil
}

// isDebOf reports whether stem (name_version_arch) is a file of pkg, which
// may name an architecture (name:arch, a package of another architecture).
func isDebOf(stem, pkg string) bool {
	name, arch, _ := strings.Cut(pkg, ":")
	return strings.HasPrefix(stem, name+"_") && (arch == "" || strings.HasSuffix(stem, "_"+arch))
}

// candidateDeb is candidateDebs for one package, which one apt call with
// others did not resolve.
func candidateDeb(pkg, base string) (string, error) {
	out, err := aptCommand(base, "apt-get", "download", "--print-uris", pkg).CombinedOutput()
	if err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && strings.HasSuffix(f[1], ".deb") && isDebOf(strings.TrimSuffix(f[1], ".deb"), pkg) {
				return strings.TrimSuffix(f[1], ".deb"), nil
			}
		}
	}
	var cached []string
	for _, stem := range cachedDebs(base) {
		if isDebOf(stem, pkg) {
			cached = append(cached, stem)
		}
	}
	if len(cached) == 0 {
		return "", fmt.Errorf("package %s is not in the apt lists and not in the lab cache %s: run `make deps` (apt-get update)", pkg, base)
	}
	// By version, not by file name: an epoch is written %3a there.
	version := func(stem string) string {
		d, err := parseDebStem(stem)
		if err != nil {
			return ""
		}
		return d.Version
	}
	sort.Slice(cached, func(i, j int) bool { return VersionLess(version(cached[i]), version(cached[j])) })
	return cached[len(cached)-1], nil
}

// unpackDeb fetches pin (name=version) with apt-get download and unpacks it
// with dpkg-deb into dir/root, with its Depends field in dir/depends; then
// runs step on the tree (nil: nothing) and logs how long each part took.
// dir appears only when all of that worked, so a half-done download is
// never used, and parallel runs may race harmlessly.
func unpackDeb(pin, dir string, step *debStep, logf func(string, ...any)) error {
	// The cache directory may not exist yet (a fresh machine, or CI's empty
	// lab cache); a unique temporary directory inside it, because parallel
	// runs may fetch the same package.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("lab cache: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".tmp*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	cmd := aptCommand(filepath.Dir(dir), "apt-get", "download", pin)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return downloadError(pin, out, err)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s: want one .deb, have %v", pin, debs)
	}
	fi, err := os.Stat(debs[0])
	if err != nil {
		return err
	}
	took := fmt.Sprintf("apt-get download %s (%.1f MB)", since(start), float64(fi.Size())/1e6)
	start = time.Now()
	root := filepath.Join(tmp, "root")
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %w\n%s", debs[0], err, out)
	}
	depends, err := exec.Command("dpkg-deb", "-f", debs[0], "Depends").Output()
	if err != nil {
		return fmt.Errorf("dpkg-deb -f %s Depends: %w", debs[0], err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "depends"), depends, 0o644); err != nil {
		return err
	}
	took += ", dpkg-deb -x " + since(start)
	if step != nil {
		start = time.Now()
		if err := step.run(root); err != nil {
			return fmt.Errorf("%s: %w", pin, err)
		}
		took += ", " + step.name + " " + since(start)
	}
	logf("fetched %s: %s", pin, took)
	if err := os.Remove(debs[0]); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, ".ready"), []byte(pin), 0o644); err != nil {
		return err
	}
	if readyFor(dir, pin) {
		return nil // another run was faster
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// readyFor reports whether dir holds the unpacked package pin: its .ready
// file names the pin it was fetched by. A tree from before pins named the
// architecture (an empty .ready) may hold the host's architecture under
// another's name, so it is fetched again.
func readyFor(dir, pin string) bool {
	b, err := os.ReadFile(filepath.Join(dir, ".ready"))
	return err == nil && string(b) == pin
}

func since(t time.Time) string { return time.Since(t).Round(10 * time.Millisecond).String() }

// downloadError says what to run when apt-get download of pin failed. The
// archive drops superseded kernel packages within days, so lists older than
// that name files that are gone (404); lists updated while the lab runs no
// longer have the version it picked.
func downloadError(pin string, out []byte, err error) error {
	text := string(out)
	switch {
	case strings.Contains(text, " 404 "):
		return fmt.Errorf("apt-get download %s: the apt lists name it but the archive no longer has it (Debian replaced it): run `apt-get update` (as root) and try again; the lab then picks the newest package\n%s", pin, out)
	case strings.Contains(text, "was not found") || strings.Contains(text, "Unable to locate package"):
		return fmt.Errorf("apt-get download %s: it vanished from the apt lists while the lab ran (apt-get update in between?): run the lab again\n%s", pin, out)
	}
	return fmt.Errorf("apt-get download %s: %w\n%s", pin, err, out)
}

// dependName matches the first alternative of one Depends clause: its
// package name, without version or architecture qualifier.
var dependName = regexp.MustCompile(`^\s*([a-z0-9][a-z0-9+.-]+)`)

// FetchDebsWithLibraries fetches pkgs and, transitively, the library
// packages (lib*) they depend on that the host does not have installed, so
// that every shared library the daemons load is either on the host (like
// the libraries of Debian's ip) or in a fetched tree. Other dependencies
// (scripts, data, services) are left out: the lab runs the binaries only.
// Packages of another architecture (iproute2:arm64) take their libraries
// from that architecture's packages.
func FetchDebsWithLibraries(pkgs []string, logf func(string, ...any)) ([]*Deb, error) {
	start := time.Now()
	base, err := debsDir()
	if err != nil {
		return nil, err
	}
	var out []*Deb
	seen := map[string]bool{}
	all := map[string]bool{} // package name -> Architecture: all
	// Level by level of the dependency graph, so that apt is asked once
	// per level, not once per package.
	var level []string
	for _, p := range pkgs {
		if !seen[p] {
			seen[p] = true
			level = append(level, p)
		}
	}
	for len(level) > 0 {
		stems, err := candidateDebs(level, base)
		if err != nil {
			return nil, err
		}
		var next []string
		for _, name := range level {
			d, err := fetchStem(stems[name], base, nil, logf)
			if err != nil {
				return nil, err
			}
			out = append(out, d)
			for _, clause := range strings.Split(d.Depends, ",") {
				m := dependName.FindStringSubmatch(strings.Split(clause, "|")[0])
				if m == nil || !strings.HasPrefix(m[1], "lib") {
					continue
				}
				dep := m[1]
				if _, arch, ok := strings.Cut(name, ":"); ok && !seen[dep] {
					// Asked once per name: apt-cache takes seconds on a busy machine.
					if _, known := all[dep]; !known {
						all[dep] = archAll(base, dep)
					}
					if !all[dep] {
						dep += ":" + arch
					}
				}
				if seen[dep] {
					continue
				}
				seen[dep] = true
				if installed, err := hostHasPackage(dep); err != nil {
					return nil, err
				} else if !installed {
					next = append(next, dep)
				}
			}
		}
		level = next
	}
	logf("%d packages ready in %s", len(out), since(start))
	return out, nil
}

// archAll reports whether pkg is an Architecture: all package (data, such
// as libtirpc-common), which apt knows by its plain name only.
func archAll(base, pkg string) bool {
	out, _ := aptCommand(base, "apt-cache", "show", "--no-all-versions", pkg).Output()
	return strings.Contains(string(out), "\nArchitecture: all\n")
}

// hostHasPackage reports whether pkg is installed on the host.
func hostHasPackage(pkg string) (bool, error) {
	out, err := exec.Command("dpkg-query", "-W", "-f=${db:Status-Status}", pkg).Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return false, nil // not known to dpkg
	}
	if err != nil {
		return false, fmt.Errorf("dpkg-query %s: %w", pkg, err)
	}
	return strings.TrimSpace(string(out)) == "installed", nil
}
