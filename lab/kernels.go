package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Kernels is the lab's kernel matrix: every VM test runs on each of them, in
// this order. Adding a kernel is one line. The newest package matching Package
// in the machine's apt lists is used (run `apt-get update` to see new ones).
var Kernels = []KernelSpec{
	// Both kernels run under single-threaded TCG. Multi-threaded TCG races
	// with the kernel's int3-based text patching: 6.12 panicked early
	// ("Oops: int3") in about one boot in 70 (lab.md), and a 6.1 VM hung with
	// a CPU stuck in asm_exc_int3 while BPF trampolines were being attached.
	// Single-threaded TCG showed neither.
	{Name: "6.1", Prefix: "linux-image-6.1.0-", Package: `^linux-image-6\.1\.0-[0-9]+-cloud-{arch}-unsigned$`, TCGSingleThread: true},
	{Name: "6.12", Prefix: "linux-image-6.12.", Package: `^linux-image-6\.12\.[0-9]+\+deb12-cloud-{arch}-unsigned$`, TCGSingleThread: true},
}

// KernelSpec names a family of Debian kernel packages.
type KernelSpec struct {
	Name            string // short name used on the command line and in IPSEC_LAB_KERNEL
	Prefix          string // for `apt-cache pkgnames`
	Package         string // regexp the package name must match; {arch} is the Debian architecture
	TCGSingleThread bool   // use -accel tcg,thread=single
	Arch            Arch   // zero: Amd64 (see On)
}

// On is the spec for architecture a.
func (s KernelSpec) On(a Arch) KernelSpec {
	s.Arch = a
	return s
}

// arch is the spec's architecture, Amd64 unless On chose another.
func (s KernelSpec) arch() Arch {
	if s.Arch.Name == "" {
		return Amd64
	}
	return s.Arch
}

// Kernel is a fetched and unpacked kernel package.
type Kernel struct {
	Spec    KernelSpec
	Arch    Arch
	Package string // Debian package name
	Version string // the package's Debian version
	Root    string // unpacked package tree (boot/, lib/modules/)
	Release string // uname -r
	Vmlinuz string
}

// Debian names the exact package as apt-get takes it (name=version), so a
// run's output says which build of the drifting kernel packages ran.
func (k *Kernel) Debian() string { return k.Package + "=" + k.Version }

// FindKernel returns the spec with the given short name.
func FindKernel(name string) (KernelSpec, error) {
	var names []string
	for _, k := range Kernels {
		if k.Name == name {
			return k, nil
		}
		names = append(names, k.Name)
	}
	return KernelSpec{}, fmt.Errorf("unknown kernel %q (have %s)", name, strings.Join(names, ", "))
}

// CacheDir is where kernels and other downloads are kept, outside the repo:
// IPSEC_LAB_CACHE if set (CI points it at an empty directory of its own, so
// every run downloads, unpacks and runs depmod), else
// ${XDG_CACHE_HOME:-~/.cache}/ipsec_exporter/lab.
func CacheDir() (string, error) {
	if dir := os.Getenv("IPSEC_LAB_CACHE"); dir != "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return "", fmt.Errorf("IPSEC_LAB_CACHE: %w", err)
		}
		return abs, nil
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("cache dir: %w", err)
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "ipsec_exporter", "lab"), nil
}

// Fetch resolves the newest package of spec, downloads and unpacks it (once,
// cached by name and version) and builds its modules.dep.
func Fetch(spec KernelSpec, logf func(string, ...any)) (*Kernel, error) {
	start := time.Now()
	base, err := debsDir()
	if err != nil {
		return nil, err
	}
	pkg, err := newestPackage(spec, base)
	if err != nil {
		return nil, err
	}
	d, err := fetchDeb(pkg, base, &debStep{"depmod", depmod}, logf)
	if err != nil {
		return nil, err
	}
	k := &Kernel{Spec: spec, Arch: spec.arch(), Package: d.Name, Version: d.Version, Root: d.Root}
	mods, err := filepath.Glob(filepath.Join(k.Root, "lib/modules/*"))
	if err != nil || len(mods) != 1 {
		return nil, fmt.Errorf("kernel %s: want one lib/modules dir, have %v", k.Debian(), mods)
	}
	k.Release = filepath.Base(mods[0])
	k.Vmlinuz = filepath.Join(k.Root, "boot", "vmlinuz-"+k.Release)
	logf("kernel %s ready in %s", k.Debian(), since(start))
	return k, nil
}

// newestPackage asks apt for the package names of spec and picks the highest
// version. Without apt lists it falls back to the newest package in the
// cache (base).
func newestPackage(spec KernelSpec, base string) (string, error) {
	re := regexp.MustCompile(strings.ReplaceAll(spec.Package, "{arch}", spec.arch().Name))
	var names []string
	out, err := aptCommand(base, "apt-cache", "pkgnames", spec.Prefix).Output()
	if err == nil {
		for _, n := range strings.Fields(string(out)) {
			if re.MatchString(n) {
				names = append(names, n)
			}
		}
	}
	if len(names) == 0 {
		for _, stem := range cachedDebs(base) {
			if name, _, _ := strings.Cut(stem, "_"); re.MatchString(name) {
				names = append(names, name)
			}
		}
	}
	if len(names) == 0 {
		return "", fmt.Errorf("no package matches %s in the apt lists and none is in the lab cache %s: run `make deps` (apt-get update; bookworm and bookworm-security in the apt sources)", re, base)
	}
	sort.Slice(names, func(i, j int) bool { return VersionLess(names[i], names[j]) })
	return names[len(names)-1], nil
}

var digits = regexp.MustCompile(`[0-9]+`)

// VersionLess compares the numbers in two version strings or package names
// in order (6.1 < 6.12; linux-image-6.1.0-9 < linux-image-6.1.0-56).
func VersionLess(a, b string) bool {
	x, y := digits.FindAllString(a, -1), digits.FindAllString(b, -1)
	for i := 0; i < len(x) && i < len(y); i++ {
		p, _ := strconv.Atoi(x[i])
		q, _ := strconv.Atoi(y[i])
		if p != q {
			return p < q
		}
	}
	return len(x) < len(y)
}

// depmod builds modules.dep for the kernel tree root, so that Modules can
// resolve dependencies with modprobe -d.
func depmod(root string) error {
	mods, _ := filepath.Glob(filepath.Join(root, "lib/modules/*"))
	if len(mods) != 1 {
		return fmt.Errorf("want one lib/modules dir, have %v", mods)
	}
	if out, err := exec.Command("depmod", "-b", root, filepath.Base(mods[0])).CombinedOutput(); err != nil {
		return fmt.Errorf("depmod: %w\n%s", err, out)
	}
	return nil
}

// Modules returns the host paths of the given modules and their dependencies,
// in load order, without duplicates; built-in modules are skipped. Compressed
// modules (.ko.xz on 6.12) are decompressed into the cache, because busybox
// insmod hands the file to init_module as it is.
func (k *Kernel) Modules(names []string) ([]string, error) {
	var paths []string
	seen := map[string]bool{}
	for _, name := range names {
		out, err := exec.Command("modprobe", "-d", k.Root, "-S", k.Release, "--show-depends", name).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("kernel %s: module %s: %w\n%s", k.Release, name, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "insmod" || seen[f[1]] {
				continue
			}
			seen[f[1]] = true
			p, err := k.plainModule(f[1])
			if err != nil {
				return nil, err
			}
			paths = append(paths, p)
		}
	}
	return paths, nil
}

func (k *Kernel) plainModule(p string) (string, error) {
	if !strings.HasSuffix(p, ".xz") {
		return p, nil
	}
	dst := filepath.Join(filepath.Dir(k.Root), "plain", strings.TrimSuffix(filepath.Base(p), ".xz"))
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	out, err := exec.Command("xz", "-dc", p).Output()
	if err != nil {
		return "", fmt.Errorf("xz -dc %s: %w", p, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(filepath.Dir(dst), filepath.Base(dst)+".tmp*")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(out); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return dst, os.Rename(f.Name(), dst)
}

// LabModules are loaded at boot in every lab VM. Built-in ones are skipped per
// kernel. 6.1 has no default RNG until sha3/sha512/jitterentropy/drbg are
// loaded, and ESP SAs fail without it.
var LabModules = []string{
	"sha3_generic", "sha512_generic", "jitterentropy_rng", "drbg",
	"xfrm_user", "xfrm_interface", "esp4", "esp6", "veth",
	"ctr", "gcm", "ghash_generic", "authenc", "seqiv", "echainiv", // with the Arch's CryptoModules
	"pcrypt", "crypto_user",
	"sch_ingress", "cls_bpf",
	"virtio_pci", "virtio_net",
}
