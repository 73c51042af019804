//go:build amd64

// x86 instructions (rep movsb, lock xadd) for the x86-only insnprof plugin.

package bench

import "testing"

// TestMarkHelpers checks the assembly the instrument check runs in the lab
// does what its counts assume: n lock xadds add n, and rep movsb copies n
// bytes. (Mark itself is a NOP without the plugin.)
func TestMarkHelpers(t *testing.T) {
	var c uint64
	lockAdds(&c, 50000)
	if c != 50000 {
		t.Errorf("lockAdds(50000) added %d", c)
	}
	src, dst := []byte("abcdef"), make([]byte, 6)
	repMovsb(&dst[0], &src[0], uintptr(len(src)))
	if string(dst) != "abcdef" {
		t.Errorf("repMovsb copied %q", dst)
	}
	first := Mark()
	if second := Mark(); second != first+1 || second != markSeq {
		t.Errorf("Mark returned %d then %d (count %d): not its sequence number", first, second, markSeq)
	}
}
