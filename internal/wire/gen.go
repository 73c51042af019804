// Package wire counts every packet on the node's interfaces by IPsec class
// with a TC BPF program, and the plaintext packets to or from IPsec peers it
// learns from the kernel's SAs and policies.
package wire

// The program needs only uapi headers; Debian keeps asm/ under the multiarch
// include directory.
//go:generate go tool bpf2go -cc ${BPF_CLANG} -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type wire_key -type wire_value -type peer_key -type unprotected_key wire ../../bpf/wire.bpf.c
