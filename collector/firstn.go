package collector

import "slices"

// The per-object caps (--collector.sa.max-series, --collector.policy.max-series)
// give series to the first n objects in a stable order, so the same SAs
// and policies keep their series from scrape to scrape. firstN keeps only
// those while a dump streams by: a bounded heap whose root is the last of
// the kept ones, so 50,000 SAs cost the memory of n.

// firstN keeps copies of the first n values offered in cmp order (every
// value when n is 0) and counts the others.
type firstN[T any] struct {
	n     int
	cmp   func(a, b *T) int
	items []T
	// heap holds positions in items, a max-heap by cmp: sifting moves
	// ints, not values (a dump in the opposite order, as the kernel's
	// policy dump is, replaces the root on every value).
	heap    []int
	dropped int
}

func newFirstN[T any](n int, cmp func(a, b *T) int) *firstN[T] {
	return &firstN[T]{n: n, cmp: cmp}
}

// offer keeps a copy of v if it is among the first n so far.
func (f *firstN[T]) offer(v *T) {
	if f.n == 0 || len(f.items) < f.n {
		f.items = append(f.items, *v)
		f.heap = append(f.heap, len(f.items)-1)
		f.up(len(f.heap) - 1)
		return
	}
	f.dropped++
	if f.cmp(v, &f.items[f.heap[0]]) >= 0 {
		return // after every kept one
	}
	f.items[f.heap[0]] = *v // the last kept one makes room
	f.down(0)
}

// full tells whether offering a value means dropping one.
func (f *firstN[T]) full() bool { return f.n > 0 && len(f.items) >= f.n }

// last is the last of the kept values in order: while full, only a value
// before it is kept.
func (f *firstN[T]) last() *T { return &f.items[f.heap[0]] }

// reset forgets the values, keeping the memory for the next scrape.
func (f *firstN[T]) reset() {
	f.items, f.heap, f.dropped = f.items[:0], f.heap[:0], 0
}

// sorted returns the kept values in order.
func (f *firstN[T]) sorted() []T {
	s := slices.Clone(f.items)
	slices.SortFunc(s, func(a, b T) int { return f.cmp(&a, &b) })
	return s
}

func (f *firstN[T]) less(i, j int) bool { return f.cmp(&f.items[f.heap[i]], &f.items[f.heap[j]]) < 0 }

func (f *firstN[T]) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !f.less(parent, i) {
			return
		}
		f.heap[i], f.heap[parent] = f.heap[parent], f.heap[i]
		i = parent
	}
}

func (f *firstN[T]) down(i int) {
	for {
		largest := i
		if c := 2*i + 1; c < len(f.heap) && f.less(largest, c) {
			largest = c
		}
		if c := 2*i + 2; c < len(f.heap) && f.less(largest, c) {
			largest = c
		}
		if largest == i {
			return
		}
		f.heap[i], f.heap[largest] = f.heap[largest], f.heap[i]
		i = largest
	}
}
