package collector

import (
	"container/heap"
	"slices"

	"github.com/ipsec-exporter/ipsec_exporter/internal/xfrmnl"
)

// The per-SA cap of the sa collector (--collector.sa.max-series): the SAs
// that get per-SA series are the first max in a stable order (netns, dst,
// SPI, proto), so the same SAs keep their series from scrape to scrape.
// Only those are kept while the dump streams by: a bounded heap whose root
// is the last of the kept ones, so 50,000 SAs cost the memory of max.

// rowSet keeps the SAs that get per-SA series and counts the others.
type rowSet struct {
	perSA   bool
	max     int // 0: no limit
	rows    rowHeap
	dropped int // SAs offered and not kept
}

func newRowSet(perSA bool, max int) *rowSet {
	return &rowSet{perSA: perSA, max: max}
}

// offer takes an SA (copied) if it is among the first max so far.
func (r *rowSet) offer(sa *xfrmnl.SA, peer peerKey) {
	if !r.perSA {
		r.dropped++
		return
	}
	if r.max == 0 || len(r.rows) < r.max {
		heap.Push(&r.rows, saRow{sa: *sa, peer: peer})
		return
	}
	row := saRow{sa: *sa, peer: peer}
	if compareRows(&row, &r.rows[0]) >= 0 {
		r.dropped++ // after every kept one: nothing is worked out for it
		return
	}
	r.rows[0] = row // the last kept one makes room
	heap.Fix(&r.rows, 0)
	r.dropped++
}

// merge offers every row of o (one namespace's) and adds its dropped count.
func (r *rowSet) merge(o *rowSet) {
	for i := range o.rows {
		r.offer(&o.rows[i].sa, o.rows[i].peer)
	}
	r.dropped += o.dropped
}

// sorted returns the kept rows in order.
func (r *rowSet) sorted() []saRow {
	rows := slices.Clone(r.rows)
	slices.SortFunc(rows, func(a, b saRow) int { return compareRows(&a, &b) })
	return rows
}

// rowHeap is a max-heap by compareRows.
type rowHeap []saRow

func (h rowHeap) Len() int           { return len(h) }
func (h rowHeap) Less(i, j int) bool { return compareRows(&h[i], &h[j]) > 0 }
func (h rowHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *rowHeap) Push(x any)        { *h = append(*h, x.(saRow)) }
func (h *rowHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
