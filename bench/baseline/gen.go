// Package baseline holds the programs `make bench` compares ours with: the
// reference approach (bpf/bench_reference.bpf.c: kprobe + kretprobe on
// xfrm_input and xfrm_output with a hash-map update per packet, as
// NetObserv's agent does) and empty programs on any hook set (the floor).
// Benchmark code only: the exporter never imports it.
package baseline

// The BPF objects are built from ../../bpf/ with the pinned clang, like
// internal/verdict's, one per architecture (kprobes read pt_regs): the
// generated benchreference_{x86,arm64}_bpfel.{go,o} are committed and never
// edited.
//go:generate go tool bpf2go -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 benchReference ../../bpf/bench_reference.bpf.c
