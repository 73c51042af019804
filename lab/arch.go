package lab

import (
	"fmt"
	"runtime"
	"strings"
)

// Arch is a CPU architecture the lab boots: which Debian packages, which
// qemu, which devices. Everything architecture-specific of the lab is here.
type Arch struct {
	Name    string   // GOARCH and Debian architecture (amd64, arm64)
	Qemu    string   // the qemu system emulator
	Machine []string // qemu machine arguments
	// TCGCPU is the -cpu under software emulation: everything the kernel's
	// crypto drivers can use.
	TCGCPU  string
	Console string // the kernel's console device (the first serial port)
	// ResultsPort is the qemu arguments that make the file a second port,
	// and ResultsDevice that port in the VM.
	ResultsPort   func(file string) []string
	ResultsDevice string
	// LibDirs are where Debian keeps this architecture's shared libraries,
	// in the order ldd reports them.
	LibDirs []string
	// PortModules are what the results port needs (modules on some
	// kernels, built in on others).
	PortModules []string
	// CryptoModules are the accelerated AES and GHASH drivers the lab
	// loads, and what they need (x86's use cryptd, which Debian's arm64
	// kernels do not build).
	CryptoModules []string
}

// Amd64 is the lab's default architecture.
var Amd64 = Arch{
	Name:          "amd64",
	Qemu:          "qemu-system-x86_64",
	TCGCPU:        "max", // aes, pclmulqdq, avx2
	Console:       "ttyS0",
	ResultsPort:   func(file string) []string { return []string{"-serial", "file:" + file} },
	ResultsDevice: "/dev/ttyS1",
	LibDirs:       []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib"},
	CryptoModules: []string{"aesni_intel", "ghash_clmulni_intel", "cryptd"},
}

// Arm64 boots Debian's arm64 kernels on qemu's virt machine. virt has one
// PL011 UART (ttyAMA0), so the results port is a virtio console (hvc0,
// built into Debian's arm64 cloud kernels). pauth-impdef: TCG emulates
// pointer authentication (which the kernel uses on every function return)
// with the architected QARMA cipher unless told to use a cheap one.
var Arm64 = Arch{
	Name:    "arm64",
	Qemu:    "qemu-system-aarch64",
	Machine: []string{"-machine", "virt"},
	TCGCPU:  "max,pauth-impdef=on",
	Console: "ttyAMA0",
	ResultsPort: func(file string) []string {
		return []string{"-device", "virtio-serial-pci", "-chardev", "file,id=results,path=" + file, "-device", "virtconsole,chardev=results"}
	},
	ResultsDevice: "/dev/hvc0",
	PortModules:   []string{"virtio_pci", "virtio_console"}, // modules on 6.1, built in on 6.12
	LibDirs:       []string{"/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"},
	CryptoModules: []string{"aes_ce_blk", "ghash_ce"},
}

// Arches are the architectures the lab can boot.
var Arches = []Arch{Amd64, Arm64}

// FindArch returns the architecture with the given name.
func FindArch(name string) (Arch, error) {
	var names []string
	for _, a := range Arches {
		if a.Name == name {
			return a, nil
		}
		names = append(names, a.Name)
	}
	return Arch{}, fmt.Errorf("unknown architecture %q (have %s)", name, strings.Join(names, ", "))
}

// Foreign says whether the host cannot run the architecture's binaries:
// its busybox, ip and libraries then come from its Debian packages
// (name:arch) instead of the host.
func (a Arch) Foreign() bool { return a.Name != runtime.GOARCH }

// pkg is the Debian package name for this architecture.
func (a Arch) pkg(name string) string {
	if !a.Foreign() {
		return name
	}
	return name + ":" + a.Name
}
