// Package baseline holds the programs `make bench` compares ours with: the
// reference approach (bpf/bench_reference.bpf.c: kprobe + kretprobe on
// xfrm_input and xfrm_output with a hash-map update per packet, as
// NetObserv's agent does) and empty programs on any hook set (the floor).
// Benchmark code only: the exporter never imports it.
package baseline

// The BPF object is built from ../../bpf/ with the pinned clang, like
// internal/verdict's; the generated benchreference_x86_bpfel.{go,o} are
// committed and never edited. amd64 only: bpf/vmlinux.h is x86's.
// ($DOLLAR is go generate's way of passing a literal $ to the shell.)
//go:generate sh -c "go tool bpf2go -cc $DOLLAR{BPF_CLANG:-clang-14} -strip $DOLLAR{BPF_STRIP:-llvm-strip-14} -cflags '-O2 -g -Wall -Werror' -target amd64 benchReference ../../bpf/bench_reference.bpf.c"
