package bench

// Mark executes the instruction bench/qemu/insnprof.c watches for: the
// plugin writes what the guest executed since the previous mark. Without
// the plugin (or on real hardware) it is a NOP. Marks are numbered by the
// plugin in the order the guest executes them; MarkSeq is this process's
// count, which the bench prints next to what each window measured.
func Mark() int {
	mark()
	markSeq++
	return markSeq
}

var markSeq int
