/* The kernel's types for the architecture the object is compiled for:
 * bpf2go -target amd64 / arm64 defines __TARGET_ARCH_x86 / __TARGET_ARCH_arm64,
 * which also picks the pt_regs layout of bpf_tracing.h's kprobe argument
 * macros. Both headers are bpftool dumps of a Debian kernel's BTF (README.md). */
#if defined(__TARGET_ARCH_x86)
#include "vmlinux_x86.h"
#elif defined(__TARGET_ARCH_arm64)
#include "vmlinux_arm64.h"
#else
#error "no vmlinux header for this architecture: bpf2go -target amd64 or arm64"
#endif
