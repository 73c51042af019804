#include "textflag.h"

// func mark()
// nopl 0x50534e49(%rax,%rax,1): an 8-byte NOP whose displacement spells
// "INSP"; bench/qemu/insnprof.c dumps its counters when it executes one.
TEXT ·mark(SB), NOSPLIT, $0-0
	BYTE $0x0f; BYTE $0x1f; BYTE $0x84; BYTE $0x00
	BYTE $0x49; BYTE $0x4e; BYTE $0x53; BYTE $0x50
	RET

// func repMovsb(dst, src *byte, n uintptr)
// n iterations of one rep-prefixed string instruction: the plugin's rep
// count is checked against it (TestLabBenchInstrument).
TEXT ·repMovsb(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	REP; MOVSB
	RET

// func lockAdds(p *uint64, n uintptr)
// n lock-prefixed instructions (lock xadd), for the plugin's lock count.
TEXT ·lockAdds(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), DI
	MOVQ n+8(FP), CX
loop:
	TESTQ CX, CX
	JZ done
	MOVQ $1, AX // xadd leaves the old value in AX
	LOCK; XADDQ AX, (DI)
	DECQ CX
	JMP loop
done:
	RET
