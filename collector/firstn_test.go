package collector

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestFirstN: whatever the order values come in (ascending, descending as
// the kernel's policy dump, shuffled), the first n in order are kept and
// the rest counted; with n 0 every value is kept; reset starts again.
func TestFirstN(t *testing.T) {
	cmpInt := func(a, b *int) int { return cmp.Compare(*a, *b) }
	for _, tc := range []struct {
		name string
		n    int
		in   []int
	}{
		{"ascending", 10, ints(0, 1000, 1)},
		{"descending", 10, ints(999, -1, -1)},
		{"shuffled", 37, shuffled(ints(0, 1000, 1))},
		{"fewer than n", 50, shuffled(ints(0, 20, 1))},
		{"no limit", 0, shuffled(ints(0, 300, 1))},
		{"duplicates", 5, []int{3, 3, 1, 1, 2, 2, 9, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFirstN(tc.n, cmpInt)
			for i := range tc.in {
				f.offer(&tc.in[i])
			}
			want := slices.Sorted(slices.Values(tc.in))
			if tc.n > 0 && len(want) > tc.n {
				want = want[:tc.n]
			}
			if got := f.sorted(); !slices.Equal(got, want) {
				t.Errorf("kept %v, want %v", got, want)
			}
			if f.dropped != len(tc.in)-len(want) {
				t.Errorf("dropped %d, want %d", f.dropped, len(tc.in)-len(want))
			}
			f.reset()
			f.offer(&tc.in[0])
			if got := f.sorted(); len(got) != 1 || got[0] != tc.in[0] || f.dropped != 0 {
				t.Errorf("after reset: kept %v, dropped %d", got, f.dropped)
			}
		})
	}
}

func ints(from, to, step int) []int {
	var s []int
	for i := from; i != to; i += step {
		s = append(s, i)
	}
	return s
}

func shuffled(s []int) []int {
	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	return s
}
