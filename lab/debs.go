package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Deb is a Debian package unpacked in the lab cache.
type Deb struct {
	Name    string // package name
	Version string // the .deb's file name without .deb (name_version_arch)
	Root    string // unpacked tree
	Depends string // the package's Depends field, as dpkg-deb -f prints it
}

// FetchDeb downloads the candidate version of pkg with apt-get download and
// unpacks it into the lab cache (once: later calls find it there). Without
// apt lists it falls back to the newest cached version. pkg may name an
// architecture (busybox-static:arm64).
func FetchDeb(pkg string, logf func(string, ...any)) (*Deb, error) {
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	base := filepath.Join(cache, "debs")
	file, err := candidateDeb(pkg, base)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(base, strings.TrimSuffix(file, ".deb"))
	if _, err := os.Stat(filepath.Join(dir, ".ready")); err != nil {
		logf("fetching %s", file)
		if err := unpackDeb(pkg, dir, nil); err != nil {
			return nil, err
		}
	}
	depends, err := os.ReadFile(filepath.Join(dir, "depends"))
	if err != nil {
		return nil, fmt.Errorf("package %s: %w", pkg, err)
	}
	return &Deb{Name: pkg, Version: filepath.Base(dir), Root: filepath.Join(dir, "root"), Depends: strings.TrimSpace(string(depends))}, nil
}

// candidateDeb is the file name apt-get download would write for pkg, which
// names the version (`apt-get download --print-uris` reads the local lists
// only). Without lists: the newest version in the cache.
func candidateDeb(pkg, cache string) (string, error) {
	// A package of another architecture is name:arch, its file
	// name_version_arch.deb.
	name, arch, _ := strings.Cut(pkg, ":")
	ofArch := func(base string) bool { return arch == "" || strings.HasSuffix(base, "_"+arch) }
	out, err := exec.Command("apt-get", "download", "--print-uris", pkg).Output()
	if err == nil {
		// 'URL' name_version_arch.deb size hash
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && strings.HasPrefix(f[1], name+"_") && strings.HasSuffix(f[1], ".deb") && ofArch(strings.TrimSuffix(f[1], ".deb")) {
				return f[1], nil
			}
		}
	}
	var cached []string
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), name+"_") && ofArch(e.Name()) {
			if _, err := os.Stat(filepath.Join(cache, e.Name(), ".ready")); err == nil {
				cached = append(cached, e.Name()+".deb")
			}
		}
	}
	if len(cached) == 0 {
		return "", fmt.Errorf("package %s is not in the apt lists: run `make deps` (apt-get update)", pkg)
	}
	sort.Slice(cached, func(i, j int) bool { return VersionLess(cached[i], cached[j]) })
	return cached[len(cached)-1], nil
}

// unpackDeb fetches pkg with apt-get download and unpacks it with dpkg-deb
// into dir/root, with its Depends field in dir/depends; then runs after on
// the tree (nil: nothing). dir appears only when all of that worked, so a
// half-done download is never used, and parallel runs may race harmlessly.
func unpackDeb(pkg, dir string, after func(root string) error) error {
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
	cmd := exec.Command("apt-get", "download", pkg)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %w\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s: want one .deb, have %v", pkg, debs)
	}
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
	if after != nil {
		if err := after(root); err != nil {
			return err
		}
	}
	if err := os.Remove(debs[0]); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, ".ready"), nil, 0o644); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, ".ready")); err == nil {
		return nil // another run was faster
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
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
	var out []*Deb
	seen := map[string]bool{}
	all := map[string]bool{} // package name -> Architecture: all
	queue := append([]string(nil), pkgs...)
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if seen[name] {
			continue
		}
		seen[name] = true
		d, err := FetchDeb(name, logf)
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
					all[dep] = archAll(dep)
				}
				if !all[dep] {
					dep += ":" + arch
				}
			}
			if seen[dep] {
				continue
			}
			if installed, err := hostHasPackage(dep); err != nil {
				return nil, err
			} else if !installed {
				queue = append(queue, dep)
			}
		}
	}
	return out, nil
}

// archAll reports whether pkg is an Architecture: all package (data, such
// as libtirpc-common), which apt knows by its plain name only.
func archAll(pkg string) bool {
	out, _ := exec.Command("apt-cache", "show", "--no-all-versions", pkg).Output()
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
