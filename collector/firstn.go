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
	n       int
	cmp     func(a, b *T) int
	heap    []T // a max-heap by cmp
	dropped int
}

func newFirstN[T any](n int, cmp func(a, b *T) int) *firstN[T] {
	return &firstN[T]{n: n, cmp: cmp}
}

// offer keeps v if it is among the first n so far.
func (f *firstN[T]) offer(v *T) {
	if f.n == 0 || len(f.heap) < f.n {
		f.heap = append(f.heap, *v)
		f.up(len(f.heap) - 1)
		return
	}
	f.dropped++
	if f.cmp(v, &f.heap[0]) >= 0 {
		return // after every kept one
	}
	f.heap[0] = *v // the last kept one makes room
	f.down(0)
}

// merge offers every value o kept and adds what o dropped.
func (f *firstN[T]) merge(o *firstN[T]) {
	for i := range o.heap {
		f.offer(&o.heap[i])
	}
	f.dropped += o.dropped
}

// sorted returns the kept values in order.
func (f *firstN[T]) sorted() []T {
	s := slices.Clone(f.heap)
	slices.SortFunc(s, func(a, b T) int { return f.cmp(&a, &b) })
	return s
}

func (f *firstN[T]) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if f.cmp(&f.heap[i], &f.heap[parent]) <= 0 {
			return
		}
		f.heap[i], f.heap[parent] = f.heap[parent], f.heap[i]
		i = parent
	}
}

func (f *firstN[T]) down(i int) {
	for {
		largest := i
		for _, c := range []int{2*i + 1, 2*i + 2} {
			if c < len(f.heap) && f.cmp(&f.heap[c], &f.heap[largest]) > 0 {
				largest = c
			}
		}
		if largest == i {
			return
		}
		f.heap[i], f.heap[largest] = f.heap[largest], f.heap[i]
		i = largest
	}
}
