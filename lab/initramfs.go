package lab

import (
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// In-VM paths that tests rely on (exported to them as environment variables
// by the init script).
const (
	VMExporter = "/usr/bin/ipsec_exporter"
	VMIP       = "/usr/sbin/ip" // Debian's iproute2, with xfrm; busybox's ip has none
)

// Initramfs describes what goes into a VM's initramfs besides the base
// system (busybox, the kernel's lab modules, Debian's ip).
type Initramfs struct {
	Init  string            // the /init shell script
	Files map[string]string // VM path -> host file
	Trees map[string]string // VM dir -> host dir, copied recursively
	// Shared are files other parts may also add (shared libraries: Debian's
	// ip and the IKE daemons need the same libc): each is added once.
	Shared map[string]string // VM path -> host file
}

// Write writes the initramfs for kernel k to out.
func (ir *Initramfs) Write(out string, k *Kernel) error {
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer f.Close()
	c := newCPIOWriter(f)
	if err := ir.write(c, k); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := c.Close(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return f.Close()
}

func (ir *Initramfs) write(c *cpioWriter, k *Kernel) error {
	for _, d := range []string{"/proc", "/sys", "/dev", "/run", "/tmp", "/etc", "/bin", "/sbin", "/usr/bin", "/usr/sbin", "/root"} {
		if err := c.Dir(d); err != nil {
			return err
		}
	}
	if err := c.Symlink("/var/run", "/run"); err != nil {
		return err
	}
	// The kernel opens /dev/console for init before devtmpfs is mounted.
	if err := c.CharDev("/dev/console", 5, 1); err != nil {
		return err
	}
	if err := c.File("/init", 0o755, []byte(ir.Init)); err != nil {
		return err
	}
	if err := c.File("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n")); err != nil {
		return err
	}
	busybox, err := archBusybox(k.Arch)
	if err != nil {
		return err
	}
	if err := c.CopyFile("/bin/busybox", busybox); err != nil {
		return err
	}
	if err := addModules(c, k); err != nil {
		return err
	}
	if k.Arch.Foreign() {
		err = addArchIP(c, k.Arch)
	} else {
		err = addIP(c)
	}
	if err != nil {
		return err
	}
	for vm, host := range ir.Files {
		if err := c.CopyFile(vm, host); err != nil {
			return err
		}
	}
	for vm, host := range ir.Trees {
		if err := addTree(c, vm, host); err != nil {
			return err
		}
	}
	for vm, host := range ir.Shared {
		if c.seen[clean(vm)] {
			continue
		}
		if err := c.CopyFile(vm, host); err != nil {
			return err
		}
	}
	return nil
}

// staticBusybox finds busybox and checks that it needs no shared libraries
// (Debian's busybox-static, not the dynamic busybox package).
func staticBusybox() (string, error) {
	p, err := exec.LookPath("busybox")
	if err != nil {
		return "", fmt.Errorf("busybox not found: run `make deps` (busybox-static)")
	}
	f, err := elf.Open(p)
	if err != nil {
		return "", fmt.Errorf("busybox: %w", err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return "", fmt.Errorf("%s is dynamically linked: install busybox-static (`make deps`)", p)
		}
	}
	return p, nil
}

// archBusybox is the host's static busybox, or for a foreign architecture
// the one of its busybox-static package.
func archBusybox(a Arch) (string, error) {
	if !a.Foreign() {
		return staticBusybox()
	}
	d, err := FetchDeb(a.pkg("busybox-static"), func(string, ...any) {})
	if err != nil {
		return "", err
	}
	return filepath.Join(d.Root, "bin", "busybox"), nil
}

// addModules copies the lab modules and writes /lab/modules.list, the load
// order for the init script.
//
// The results port's modules (the Arch's PortModules, where they are not
// built in) go first, in /lab/port-modules.list: the init script loads them
// before it opens the port.
func addModules(c *cpioWriter, k *Kernel) error {
	port, err := k.Modules(k.Arch.PortModules)
	if err != nil {
		return err
	}
	mods, err := k.Modules(append(slices.Clone(LabModules), k.Arch.CryptoModules...))
	if err != nil {
		return err
	}
	for _, l := range []struct {
		file string
		mods []string
	}{{"/lab/port-modules.list", port}, {"/lab/modules.list", mods}} {
		var list []string
		for _, m := range l.mods {
			vm := path.Join("/lib/modules", k.Release, filepath.Base(m))
			if c.seen[clean(vm)] {
				continue // a port module, already loaded
			}
			if err := c.CopyFile(vm, m); err != nil {
				return err
			}
			list = append(list, vm)
		}
		if err := c.File(l.file, 0o644, []byte(strings.Join(list, "\n")+"\n")); err != nil {
			return err
		}
	}
	return nil
}

// addIP copies the host's iproute2 ip and the shared libraries ldd lists, at
// their host paths, so the dynamic loader finds them.
func addIP(c *cpioWriter) error {
	ip, err := exec.LookPath("ip")
	if err != nil {
		return fmt.Errorf("ip not found: run `make deps` (iproute2)")
	}
	if err := c.CopyFile(VMIP, ip); err != nil {
		return err
	}
	out, err := exec.Command("ldd", ip).Output()
	if err != nil {
		return fmt.Errorf("ldd %s: %w", ip, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		var lib string
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			lib = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			lib = f[0]
		default:
			continue
		}
		if c.seen[clean(lib)] {
			continue
		}
		if err := c.CopyFile(lib, lib); err != nil {
			return err
		}
	}
	return nil
}

// addArchIP adds Debian's ip of a foreign architecture, from its iproute2
// package, with the shared libraries and loader of that architecture's
// packages.
func addArchIP(c *cpioWriter, a Arch) error {
	// zlib1g: libelf's and libbpf's zlib, the one library package whose name
	// does not start with lib.
	debs, err := FetchDebsWithLibraries([]string{a.pkg("iproute2"), a.pkg("zlib1g")}, func(string, ...any) {})
	if err != nil {
		return err
	}
	r := &libResolver{arch: a, debs: debs, shared: map[string]string{}}
	ip, ok := r.inPackages("/bin/ip")
	if !ok {
		return fmt.Errorf("%s has no /bin/ip", a.pkg("iproute2"))
	}
	if err := r.addNeeded(ip); err != nil {
		return err
	}
	if err := c.CopyFile(VMIP, ip); err != nil {
		return err
	}
	for vm, host := range r.shared {
		if !c.seen[clean(vm)] {
			if err := c.CopyFile(vm, host); err != nil {
				return err
			}
		}
	}
	return nil
}

// addTree copies the host directory dir (following symlinks) to vm.
func addTree(c *cpioWriter, vm, dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		target := path.Join(vm, filepath.ToSlash(rel))
		if d.IsDir() {
			return c.Dir(target)
		}
		return c.CopyFile(target, p)
	})
}
