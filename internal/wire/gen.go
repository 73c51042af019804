// Package wire counts every packet on the node's interfaces by IPsec class
// with a TC BPF program, and the plaintext packets to or from IPsec peers it
// learns from the kernel's SAs and policies.
package wire

// The BPF object is built from ../../bpf/ with a pinned clang: `make
// generate` sets BPF2GO_CC to the Makefile's CLANG (clang-14), and bpf2go
// takes the llvm-strip of the same version. The generated wire_bpfel.{go,o}
// are committed and never edited. The program needs only uapi headers (no
// vmlinux.h, no CO-RE, no pt_regs), so one bpfel object serves amd64 and
// arm64 alike. Debian keeps asm/types.h (which only includes the generic
// one, the same on every architecture) under the build host's multiarch
// directory: both are named, clang skips the one that does not exist.
//go:generate go tool bpf2go -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" -target bpfel -type wire_counter -type peer_key -type peer_counters wire ../../bpf/wire.bpf.c
