package collector

import (
	"net/netip"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Per-peer aggregates of the SA counters: one series per namespace, remote
// address and direction, whatever the number of SAs or rekeys.
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

type peerKey struct {
	netns, peer, direction string
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

// saIdent is what makes an SA unique in the kernel (plus its source, so a
// reused SPI towards another peer is another SA).
type saIdent struct {
	netns    string
	src, dst netip.Addr
	spi      uint32
	proto    uint8
	mark     uint32
}

type seenSA struct {
	peer   peerKey
	totals saTotals
}

type retiredShare struct {
	totals   saTotals
	lastSeen time.Time
}

type peerBooks struct {
	last    map[saIdent]seenSA
	retired map[peerKey]*retiredShare
	// pending are final counters of SAs still in the last dump (removed
	// between dump and notification): applied once the SA is gone.
	pending []saView
	// guessed are SAs retired with their last-seen counters, in case
	// their final counters come later.
	guessed map[saIdent]guessedSA
}

type guessedSA struct {
	totals saTotals
	at     time.Time
}

func newPeerBooks() *peerBooks {
	return &peerBooks{last: map[saIdent]seenSA{}, retired: map[peerKey]*retiredShare{}, guessed: map[saIdent]guessedSA{}}
}

func identOf(v saView) saIdent {
	sa := v.sa
	return saIdent{netns: v.peer.netns, src: sa.Src, dst: sa.Dst, spi: sa.SPI, proto: sa.Proto, mark: sa.Mark & sa.MarkMask}
}

func totalsOf(v saView) saTotals {
	sa := v.sa
	return saTotals{bytes: sa.Bytes, packets: sa.Packets, integrity: uint64(sa.IntegrityFailures),
		replay: uint64(sa.ReplayDrops) + uint64(sa.ReplayWindowDrops)}
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

// peerSeries is one peer's values for this scrape.
type peerSeries struct {
	key    peerKey
	sas    int
	totals saTotals
}

func (p peerSeries) emit(ch chan<- prometheus.Metric) {
	l := []string{p.key.netns, p.key.peer, p.key.direction}
	ch <- newConstMetric(peerSAsDesc, prometheus.GaugeValue, float64(p.sas), l...)
	ch <- newConstMetric(peerBytesDesc, prometheus.CounterValue, float64(p.totals.bytes), l...)
	ch <- newConstMetric(peerPacketsDesc, prometheus.CounterValue, float64(p.totals.packets), l...)
	ch <- newConstMetric(peerIntegrityDsc, prometheus.CounterValue, float64(p.totals.integrity), l...)
	ch <- newConstMetric(peerReplayDesc, prometheus.CounterValue, float64(p.totals.replay), l...)
}

// update takes this scrape's SAs (of the namespaces in read, which were
// read completely) and the final counters of SAs the kernel removed, and
// returns every peer's series.
func (b *peerBooks) update(views, finals []saView, read map[string]bool, now time.Time) []peerSeries {
	current := make(map[saIdent]seenSA, len(views))
	for _, v := range views {
		id, t := identOf(v), totalsOf(v)
		if prev, ok := current[id]; ok {
			// Identities differing only in what saIdent leaves out:
			// count both.
			t.add(prev.totals)
		}
		current[id] = seenSA{peer: v.peer, totals: t}
	}
	var pending []saView
	for _, f := range append(b.pending, finals...) {
		id := identOf(f)
		if _, live := current[id]; live {
			pending = append(pending, f)
			continue
		}
		t := totalsOf(f)
		if g, ok := b.guessed[id]; ok {
			t = t.sub(g.totals) // the last-seen share is already retired
			delete(b.guessed, id)
		}
		b.retire(seenSA{peer: f.peer, totals: t}, now)
		delete(b.last, id) // retired now: not again below
	}
	b.pending = pending
	for id, g := range b.guessed {
		if now.Sub(g.at) > peerRetention {
			delete(b.guessed, id)
		}
	}
	for id, old := range b.last {
		cur, still := current[id]
		switch {
		case !read[id.netns] && !still:
			current[id] = old // namespace not read this time: keep what we knew
		case !still:
			b.retire(old, now)
			b.guessed[id] = guessedSA{totals: old.totals, at: now}
		case cur.totals.bytes < old.totals.bytes || cur.totals.packets < old.totals.packets:
			b.retire(old, now) // same identity, new SA (SPI reused)
		}
	}
	b.last = current

	series := map[peerKey]*peerSeries{}
	for _, s := range current {
		p := series[s.peer]
		if p == nil {
			p = &peerSeries{key: s.peer}
			series[s.peer] = p
		}
		p.sas++
		p.totals.add(s.totals)
	}
	for key, r := range b.retired {
		p := series[key]
		if p == nil {
			if now.Sub(r.lastSeen) > peerRetention {
				delete(b.retired, key)
				continue
			}
			p = &peerSeries{key: key}
			series[key] = p
		} else {
			r.lastSeen = now
		}
		p.totals.add(r.totals)
	}
	out := make([]peerSeries, 0, len(series))
	for _, p := range series {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].key, out[j].key
		if a.netns != b.netns {
			return a.netns < b.netns
		}
		if a.peer != b.peer {
			return a.peer < b.peer
		}
		return a.direction < b.direction
	})
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
