package collector

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
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
// reused SPI towards another peer is another SA), in the namespace itself
// (its ID: a namespace created again under a name has SAs of its own). No
// pointers, so a map of 50,000 of them is cheap to hash and to scan.
type saIdent struct {
	netns    netnsx.ID
	src, dst [16]byte
	spi      uint32
	mark     uint32
	proto    uint8
}

// bookEntry is an SA as the books know it.
type bookEntry struct {
	peer   peerKey
	totals saTotals // as last seen
	gen    uint64   // the scrape that last saw it
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
	id     saIdent
	peer   peerKey
	totals saTotals
}

type peerBooks struct {
	// sas are the SAs seen, updated in place: a scrape of 50,000 SAs
	// does one map lookup per SA and allocates only for new ones.
	sas     map[saIdent]*bookEntry
	gen     uint64 // the scrape being read
	retired map[peerKey]*retiredShare
	// pending are final counters of SAs still in the last dump (removed
	// between dump and notification): applied once the SA is gone.
	pending []finalSA
	// guessed are SAs retired with their last-seen counters, in case
	// their final counters come later.
	guessed map[saIdent]guessedSA
}

func newPeerBooks() *peerBooks {
	return &peerBooks{sas: map[saIdent]*bookEntry{}, retired: map[peerKey]*retiredShare{}, guessed: map[saIdent]guessedSA{}}
}

// begin starts reading a scrape.
func (b *peerBooks) begin() { b.gen++ }

// see records one SA of the scrape being read.
func (b *peerBooks) see(id saIdent, peer peerKey, t saTotals) {
	e := b.sas[id]
	switch {
	case e == nil:
		b.sas[id] = &bookEntry{peer: peer, totals: t, gen: b.gen}
	case e.gen == b.gen:
		// Identities differing only in what saIdent leaves out (an
		// if_id): count both.
		e.totals.add(t)
	default:
		if t.bytes < e.totals.bytes || t.packets < e.totals.packets {
			b.retire(e.peer, e.totals, time.Time{}) // same identity, new SA (SPI reused)
		}
		e.peer, e.totals, e.gen = peer, t, b.gen
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
	ch <- newConstMetric(peerSAsDesc, prometheus.GaugeValue, float64(p.sas), l...)
	ch <- newConstMetric(peerBytesDesc, prometheus.CounterValue, float64(p.totals.bytes), l...)
	ch <- newConstMetric(peerPacketsDesc, prometheus.CounterValue, float64(p.totals.packets), l...)
	ch <- newConstMetric(peerIntegrityDsc, prometheus.CounterValue, float64(p.totals.integrity), l...)
	ch <- newConstMetric(peerReplayDesc, prometheus.CounterValue, float64(p.totals.replay), l...)
}

// update ends a scrape: the SAs seen since begin, the final counters of
// SAs the kernel removed, and the namespaces that exist but could not be
// read (whose SAs are kept as they were). It returns every peer's series.
func (b *peerBooks) update(finals []finalSA, unreadable map[netnsx.ID]bool, now time.Time) []peerSeries {
	b.applyFinals(finals, now)
	b.retireGone(unreadable, now)
	return b.series(now)
}

// applyFinals retires removed SAs with their final counters; one still in
// the dump waits until it is gone.
func (b *peerBooks) applyFinals(finals []finalSA, now time.Time) {
	var pending []finalSA
	for _, f := range append(b.pending, finals...) {
		if e := b.sas[f.id]; e != nil && e.gen == b.gen {
			pending = append(pending, f) // still live
			continue
		}
		t := f.totals
		if g, ok := b.guessed[f.id]; ok {
			t = t.sub(g.totals) // the last-seen share is already retired
			delete(b.guessed, f.id)
		}
		b.retire(f.peer, t, now)
		delete(b.sas, f.id) // retired now: not again below
	}
	b.pending = pending
	for id, g := range b.guessed {
		if now.Sub(g.at) > peerRetention {
			delete(b.guessed, id)
		}
	}
}

// retireGone retires, with their last-seen counters, the SAs this scrape
// did not see, except in namespaces it could not read.
func (b *peerBooks) retireGone(unreadable map[netnsx.ID]bool, now time.Time) {
	for id, e := range b.sas {
		if e.gen == b.gen || unreadable[id.netns] {
			continue
		}
		b.retire(e.peer, e.totals, now)
		b.guessed[id] = guessedSA{totals: e.totals, at: now}
		delete(b.sas, id)
	}
}

// series sums the SAs and the retired shares per peer, and drops the shares
// of peers gone for peerRetention.
func (b *peerBooks) series(now time.Time) []peerSeries {
	byPeer := map[peerKey]*peerSeries{}
	for _, e := range b.sas {
		p := byPeer[e.peer]
		if p == nil {
			p = &peerSeries{key: e.peer}
			byPeer[e.peer] = p
		}
		p.sas++
		p.totals.add(e.totals)
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

// retire adds an SA's counters to its peer's retired share; a zero now
// leaves the share's last-seen time alone (the SA's peer is live).
func (b *peerBooks) retire(peer peerKey, t saTotals, now time.Time) {
	r := b.retired[peer]
	if r == nil {
		r = &retiredShare{lastSeen: now}
		b.retired[peer] = r
	}
	r.totals.add(t)
	if !now.IsZero() {
		r.lastSeen = now
	}
}
