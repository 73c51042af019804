package lab

import (
	"debug/elf"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// The IKE daemons of the lab VM: Debian 12's strongSwan (charon, swanctl)
// and Libreswan (pluto, whack, addconn, NSS's certutil), from their .debs
// (fetched with apt-get download into the lab cache like the kernels, never
// committed), at their Debian paths, with the shared libraries they need.
// lab/scenario starts them, one per network namespace.

// ikeDaemon is what one daemon needs in the VM.
type ikeDaemon struct {
	name     string
	packages []string
	// files are paths inside the packages, copied to the same VM path;
	// ELF files among them bring their shared libraries.
	files []string
	// hostLibs are host libraries loaded at run time (dlopen), which no
	// DT_NEEDED entry lists, with companion files (NSS's .chk signatures).
	hostLibs []string
}

// strongSwanPlugins is enough for IKEv2 with PSK and ESP through the kernel
// (lab.md: 12 plugins); charon loads exactly these (strongswan.conf `load`).
var strongSwanPlugins = []string{
	"random", "nonce", "aes", "sha1", "sha2", "hmac", "gcm", "gmp", "kdf",
	"kernel-netlink", "socket-default", "vici",
}

var ikeDaemons = []ikeDaemon{
	{
		name: "strongswan",
		packages: []string{"strongswan-charon", "strongswan-swanctl", "libstrongswan",
			"strongswan-libcharon", "libstrongswan-standard-plugins"},
		files: append([]string{VMCharon, VMSwanctl}, pluginFiles(strongSwanPlugins)...),
		// glibc dlopens libgcc_s for pthread_cancel; charon and swanctl abort
		// without it.
		hostLibs: []string{"libgcc_s.so.1"},
	},
	{
		name:     "libreswan",
		packages: []string{"libreswan", "libnss3-tools"},
		files:    []string{VMPluto, VMWhack, VMAddconn, VMCertutil},
		// NSS dlopens its softoken and checks it against the .chk files.
		hostLibs: []string{"libgcc_s.so.1", "libsoftokn3.so", "libsoftokn3.chk", "libfreeblpriv3.so", "libfreeblpriv3.chk"},
	},
}

// VM paths of the daemons' programs (Debian's own).
const (
	VMCharon   = "/usr/lib/ipsec/charon"
	VMSwanctl  = "/usr/sbin/swanctl"
	VMPluto    = "/usr/libexec/ipsec/pluto"
	VMWhack    = "/usr/libexec/ipsec/whack"
	VMAddconn  = "/usr/libexec/ipsec/addconn"
	VMCertutil = "/usr/bin/certutil"
)

func pluginFiles(names []string) []string {
	var out []string
	for _, n := range names {
		out = append(out, "/usr/lib/ipsec/plugins/libstrongswan-"+n+".so")
	}
	return out
}

// AddIKEDaemons adds strongSwan and Libreswan to the initramfs (fetched
// first if the lab cache lacks them).
func (ir *Initramfs) AddIKEDaemons(logf func(string, ...any)) error {
	files, shared, err := IKEDaemonFiles(logf)
	if err != nil {
		return err
	}
	if ir.Files == nil {
		ir.Files = map[string]string{}
	}
	if ir.Shared == nil {
		ir.Shared = map[string]string{}
	}
	maps.Copy(ir.Files, files)
	maps.Copy(ir.Shared, shared)
	return nil
}

// IKEDaemonFiles fetches the daemons' packages and returns what the VM needs:
// files (VM path -> host file) and the shared libraries, which other parts
// of the initramfs (Debian's ip) may need too (Initramfs.Shared).
func IKEDaemonFiles(logf func(string, ...any)) (files, shared map[string]string, err error) {
	files, shared = map[string]string{}, map[string]string{}
	for _, d := range ikeDaemons {
		debs, err := FetchDebsWithLibraries(d.packages, logf)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", d.name, err)
		}
		r := &libResolver{arch: Amd64, debs: debs, shared: shared}
		for _, f := range d.files {
			host, ok := r.inPackages(f)
			if !ok {
				return nil, nil, fmt.Errorf("%s: %s is in none of %v", d.name, f, d.packages)
			}
			files[f] = host
			if err := r.addNeeded(host); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", d.name, err)
			}
		}
		for _, lib := range d.hostLibs {
			vm, host, ok := r.find(lib, nil)
			if !ok {
				return nil, nil, fmt.Errorf("%s: %s not found on the host: run `make deps`", d.name, lib)
			}
			shared[vm] = host
			if strings.Contains(lib, ".so") {
				if err := r.addNeeded(host); err != nil {
					return nil, nil, fmt.Errorf("%s: %w", d.name, err)
				}
			}
		}
	}
	return files, shared, nil
}

// libResolver finds an ELF file's shared libraries, transitively, the way
// the dynamic loader would in the VM: its RUNPATH, then the fetched
// packages' library directories, then the host's (only for the host's
// architecture). The directories are the architecture's LibDirs, in the
// order ldd reports them, so a library Debian's ip also needs gets the same
// VM path.
type libResolver struct {
	arch   Arch
	debs   []*Deb
	shared map[string]string // VM path -> host file, filled in
	done   map[string]bool   // host files already resolved
}

// inPackages returns the host file of VM path p in the first fetched
// package that has it.
func (r *libResolver) inPackages(p string) (string, bool) {
	for _, d := range r.debs {
		host := filepath.Join(d.Root, filepath.FromSlash(p))
		if st, err := os.Stat(host); err == nil && st.Mode().IsRegular() {
			return host, true
		}
	}
	return "", false
}

// find looks a library up by name: in runpath (VM directories), the
// fetched packages and the host.
func (r *libResolver) find(name string, runpath []string) (vm, host string, ok bool) {
	for _, dir := range append(runpath, r.arch.LibDirs...) {
		if host, ok := r.inPackages(path.Join(dir, name)); ok {
			return path.Join(dir, name), host, true
		}
	}
	if r.arch.Foreign() {
		return "", "", false
	}
	for _, dir := range r.arch.LibDirs {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, p, true
		}
	}
	return "", "", false
}

// addNeeded adds the program interpreter and every DT_NEEDED library of the
// ELF file host, and theirs.
func (r *libResolver) addNeeded(host string) error {
	if r.done == nil {
		r.done = map[string]bool{}
	}
	if r.done[host] {
		return nil
	}
	r.done[host] = true
	f, err := elf.Open(host)
	if err != nil {
		return fmt.Errorf("%s: %w", host, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return fmt.Errorf("%s: interpreter: %w", host, err)
			}
			interp := strings.TrimRight(string(b), "\x00")
			if p, ok := r.inPackages(interp); ok {
				r.shared[interp] = p
				continue
			}
			if _, err := os.Stat(interp); err != nil || r.arch.Foreign() {
				return fmt.Errorf("%s: interpreter %s not found", host, interp)
			}
			r.shared[interp] = interp
		}
	}
	needed, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%s: %w", host, err)
	}
	var runpath []string
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		vals, _ := f.DynString(tag)
		for _, v := range vals {
			runpath = append(runpath, strings.Split(v, ":")...)
		}
	}
	for _, lib := range needed {
		vm, libHost, ok := r.find(lib, runpath)
		if !ok {
			return fmt.Errorf("%s needs %s, which neither the host nor the fetched packages have: run `make deps`", host, lib)
		}
		r.shared[vm] = libHost
		if err := r.addNeeded(libHost); err != nil {
			return err
		}
	}
	return nil
}
