package verdict

// The BPF object is built from ../../bpf/ with a pinned clang: `make
// generate` passes the Makefile's CLANG as BPF_CLANG (default clang-14).
// The generated xfrmverdict_x86_bpfel.{go,o} are committed and never edited.
// amd64 only: bpf/vmlinux.h and the kprobe argument macros are x86's.
// ($DOLLAR is go generate's way of passing a literal $ to the shell.)
//go:generate sh -c "go tool bpf2go -cc $DOLLAR{BPF_CLANG:-clang-14} -strip $DOLLAR{BPF_STRIP:-llvm-strip-14} -cflags '-O2 -g -Wall -Werror' -target amd64 -type verdict_key -type verdict_value -type verdict_dir -type verdict_result -type verdict_error -type known_peer_key xfrmVerdict ../../bpf/xfrm_verdict.bpf.c"
