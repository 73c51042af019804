// Package wire counts every packet on the node's interfaces by IPsec class
// with a TC BPF program, and the plaintext packets to or from IPsec peers it
// learns from the kernel's SAs and policies.
package wire

// The BPF object is built from ../../bpf/ with a pinned clang: `make
// generate` passes the Makefile's CLANG as BPF_CLANG (default clang-14).
// The generated wire_bpfel.{go,o} are committed and never edited. The
// program needs only uapi headers (no vmlinux.h, no CO-RE), so one bpfel
// object serves every little-endian architecture; Debian keeps asm/ under
// the multiarch include directory, hence the -I.
// ($DOLLAR is go generate's way of passing a literal $ to the shell.)
//go:generate sh -c "go tool bpf2go -cc $DOLLAR{BPF_CLANG:-clang-14} -strip $DOLLAR{BPF_STRIP:-llvm-strip-14} -cflags '-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu' -target bpfel -type wire_counter -type peer_key -type peer_counters wire ../../bpf/wire.bpf.c"
