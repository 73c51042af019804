package verdict

// The BPF objects are built from ../../bpf/ with a pinned clang: `make
// generate` sets BPF2GO_CC to the Makefile's CLANG (clang-14), and bpf2go
// takes the llvm-strip of the same version. One object per architecture,
// xfrmverdict_{x86,arm64}_bpfel.{go,o}, committed and never edited: the
// kprobe argument macros read pt_regs, whose layout is the architecture's,
// and bpf/vmlinux.h picks that architecture's kernel types.
//go:generate go tool bpf2go -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target amd64,arm64 -type verdict_key -type verdict_value -type verdict_dir -type verdict_result -type verdict_error -type known_peer_key xfrmVerdict ../../bpf/xfrm_verdict.bpf.c

// The table's test program (bpf/verdict_counters_test.bpf.c), for the host
// tests only (_test suffix: not in the exporter's binary).
//go:generate go tool bpf2go -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target amd64,arm64 -output-suffix _test tableTest ../../bpf/verdict_counters_test.bpf.c
