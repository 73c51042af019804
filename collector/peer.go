package collector

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The per-peer books of the sa collector: the SA counters summed per
// namespace, remote address and direction (ipsec_peer_*), whatever the
// number of SAs or rekeys.
//
// A sum over the current SAs would fall at every rekey when the old SA is
// deleted, which rate() reads as a counter reset and over-counts. So the
// books keep the counters of every SA that is gone as the peer's "retired"
// share, and the peer counters only grow. The counters kept are the SA's
// final ones, from the kernel's delete or hard-expire notification (the
// event listener's TakeFinals), so what an SA carried after the last scrape
// counts too, and so does an SA that lived between two scrapes. Without a
// notification (listener overrun, or none running) they are the counters
// of the last scrape that saw the SA; a notification that arrives after
// that adds only the difference. A peer's retired share is dropped
// peerRetention after its last SA is gone (the series then ends).

const peerRetention = 15 * time.Minute

var (
	peerLabels       = []string{"netns", "peer", "direction"}
	peerSAsDesc      = prometheus.NewDesc(prometheus.BuildFQName(namespace, "peer", "sas"), "SAs the namespace has with the peer in this direction now.", peerLabels, nil)
	peerBytesDesc    = prometheus.NewDesc(prometheus.BuildFQName(namespace, "peer", "bytes_total"), "Bytes through all SAs with the peer in this direction, those since deleted (rekeyed) included.", peerLabels, nil)
	peerPacketsDesc  = prometheus.NewDesc(prometheus.BuildFQName(namespace, "peer", "packets_total"), "Packets through all SAs with the peer in this direction, those since deleted included.", peerLabels, nil)
	peerIntegrityDsc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "peer", "integrity_failures_total"), "Inbound packets from the peer dropped by the ICV check, over all its SAs.", peerLabels, nil)
	peerReplayDesc   = prometheus.NewDesc(prometheus.BuildFQName(namespace, "peer", "replay_failures_total"), "Inbound packets from the peer dropped by the anti-replay check (duplicate or outside the window), over all its SAs.", peerLabels, nil)
)

// peerKey is one series of the books.
type peerKey struct {
	netns string
	peer  netip.Addr // invalid when the direction is unknown
	dir   saDirection
}

func (k peerKey) labels() []string {
	peer := ""
	if k.peer.IsValid() {
		peer = k.peer.String()
	}
	return []string{k.netns, peer, k.dir.String()}
}

func comparePeerKeys(a, b peerKey) int {
	return cmp.Or(cmp.Compare(a.netns, b.netns), a.peer.Compare(b.peer), cmp.Compare(a.dir.String(), b.dir.String()))
}

// saTotals are one SA's counters, or a sum of them.
type saTotals struct {
	bytes, packets, integrity, replay uint64
}

func (t *saTotals) add(o saTotals) {
	t.bytes += o.bytes
	t.packets += o.packets
	t.integrity += o.integrity
	t.replay += o.replay
}

// sub is t - o per counter, never below zero.
func (t saTotals) sub(o saTotals) saTotals {
	d := func(a, b uint64) uint64 {
		if a > b {
			return a - b
		}
		return 0
	}
	return saTotals{d(t.bytes, o.bytes), d(t.packets, o.packets), d(t.integrity, o.integrity), d(t.replay, o.replay)}
}

// saIdent is what makes an SA unique in the kernel (plus its source, so a
// reused SPI towards another peer is another SA).
type saIdent struct {
	netns    string
	src, dst netip.Addr
	spi      uint32
	proto    uint8
	mark     uint32
}

// seenSA is an SA as a scrape saw it.
type seenSA struct {
	peer   peerKey
	totals saTotals
}

type retiredShare struct {
	totals   saTotals
	lastSeen time.Time
}

type guessedSA struct {
	totals saTotals
	at     time.Time
}

// finalSA is an SA the kernel removed, with its counters at the end.
type finalSA struct {
	id   saIdent
	seen seenSA
}

type peerBooks struct {
	// last and next are the SAs of the previous scrape and of the one
	// being read; swapped at each update, so their memory is reused.
	last, next map[saIdent]seenSA
	retired    map[peerKey]*retiredShare
	// pending are final counters of SAs still in the last dump (removed
	// between dump and notification): applied once the SA is gone.
	pending []finalSA
	// guessed are SAs retired with their last-seen counters, in case
	// their final counters come later.
	guessed map[saIdent]guessedSA
}

func newPeerBooks() *peerBooks {
	return &peerBooks{last: map[saIdent]seenSA{}, next: map[saIdent]seenSA{},
		retired: map[peerKey]*retiredShare{}, guessed: map[saIdent]guessedSA{}}
}

// see records one SA of the scrape being read.
func (b *peerBooks) see(id saIdent, s seenSA) {
	if prev, ok := b.next[id]; ok {
		// Identities differing only in what saIdent leaves out: count
		// both.
		s.totals.add(prev.totals)
	}
	b.next[id] = s
}

// forget drops what a namespace added to the scrape being read (its dump
// failed half-way): its SAs are then kept as the last scrape saw them.
func (b *peerBooks) forget(netns string) {
	for id := range b.next {
		if id.netns == netns {
			delete(b.next, id)
		}
	}
}

// peerSeries is one peer's values for this scrape.
type peerSeries struct {
	key    peerKey
	sas    int
	totals saTotals
}

func (p peerSeries) emit(ch chan<- prometheus.Metric) {
	l := p.key.labels()
	ch <- prometheus.MustNewConstMetric(peerSAsDesc, prometheus.GaugeValue, float64(p.sas), l...)
	ch <- prometheus.MustNewConstMetric(peerBytesDesc, prometheus.CounterValue, float64(p.totals.bytes), l...)
	ch <- prometheus.MustNewConstMetric(peerPacketsDesc, prometheus.CounterValue, float64(p.totals.packets), l...)
	ch <- prometheus.MustNewConstMetric(peerIntegrityDsc, prometheus.CounterValue, float64(p.totals.integrity), l...)
	ch <- prometheus.MustNewConstMetric(peerReplayDesc, prometheus.CounterValue, float64(p.totals.replay), l...)
}

// update ends a scrape: the SAs seen since the last update, the final
// counters of SAs the kernel removed, and the namespaces that exist but
// could not be read (whose SAs are kept as they were). It returns every
// peer's series.
func (b *peerBooks) update(finals []finalSA, unreadable map[string]bool, now time.Time) []peerSeries {
	current := b.next
	b.applyFinals(current, finals, now)
	b.retireGone(current, unreadable, now)
	b.last, b.next = current, b.last
	clear(b.next)
	return b.series(current, now)
}

// applyFinals retires removed SAs with their final counters; one still in
// the dump waits until it is gone.
func (b *peerBooks) applyFinals(current map[saIdent]seenSA, finals []finalSA, now time.Time) {
	var pending []finalSA
	for _, f := range append(b.pending, finals...) {
		if _, live := current[f.id]; live {
			pending = append(pending, f)
			continue
		}
		t := f.seen.totals
		if g, ok := b.guessed[f.id]; ok {
			t = t.sub(g.totals) // the last-seen share is already retired
			delete(b.guessed, f.id)
		}
		b.retire(seenSA{peer: f.seen.peer, totals: t}, now)
		delete(b.last, f.id) // retired now: not again below
	}
	b.pending = pending
	for id, g := range b.guessed {
		if now.Sub(g.at) > peerRetention {
			delete(b.guessed, id)
		}
	}
}

// retireGone retires, with their last-seen counters, the SAs of the last
// scrape that are gone, and the old share of an SPI reused by a new SA.
func (b *peerBooks) retireGone(current map[saIdent]seenSA, unreadable map[string]bool, now time.Time) {
	for id, old := range b.last {
		cur, still := current[id]
		switch {
		case !still && unreadable[id.netns]:
			current[id] = old // namespace not read this time: keep what we knew
		case !still:
			b.retire(old, now)
			b.guessed[id] = guessedSA{totals: old.totals, at: now}
		case cur.totals.bytes < old.totals.bytes || cur.totals.packets < old.totals.packets:
			b.retire(old, now) // same identity, new SA (SPI reused)
		}
	}
}

// series sums the current SAs and the retired shares per peer, and drops
// the shares of peers gone for peerRetention.
func (b *peerBooks) series(current map[saIdent]seenSA, now time.Time) []peerSeries {
	byPeer := map[peerKey]*peerSeries{}
	for _, s := range current {
		p := byPeer[s.peer]
		if p == nil {
			p = &peerSeries{key: s.peer}
			byPeer[s.peer] = p
		}
		p.sas++
		p.totals.add(s.totals)
	}
	for key, r := range b.retired {
		p := byPeer[key]
		if p == nil {
			if now.Sub(r.lastSeen) > peerRetention {
				delete(b.retired, key)
				continue
			}
			p = &peerSeries{key: key}
			byPeer[key] = p
		} else {
			r.lastSeen = now
		}
		p.totals.add(r.totals)
	}
	out := make([]peerSeries, 0, len(byPeer))
	for _, p := range byPeer {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b peerSeries) int { return comparePeerKeys(a.key, b.key) })
	return out
}

func (b *peerBooks) retire(s seenSA, now time.Time) {
	r := b.retired[s.peer]
	if r == nil {
		r = &retiredShare{}
		b.retired[s.peer] = r
	}
	r.totals.add(s.totals)
	r.lastSeen = now
}
