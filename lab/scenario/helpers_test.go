package scenario

import (
	"fmt"
	"testing"
)

// snapshot is every counter a scenario may move: both namespaces'
// xfrm_stat and the four SA views (each SA exists on both nodes).
type snapshot struct {
	a, b               Counters
	aAB, bAB, aBA, bBA Counters
}

func take(t *testing.T, p *Pair, e *ESP) snapshot {
	return snapshot{
		a: p.A.XfrmStat(t), b: p.B.XfrmStat(t),
		aAB: p.A.SACounters(t, e.AB), bAB: p.B.SACounters(t, e.AB),
		aBA: p.A.SACounters(t, e.BA), bBA: p.B.SACounters(t, e.BA),
	}
}

// delta is what moved between two snapshots.
type delta struct{ A, B, AAB, BAB, ABA, BBA Counters }

func (s snapshot) sub(before snapshot) delta {
	return delta{s.a.Sub(before.a), s.b.Sub(before.b), s.aAB.Sub(before.aAB), s.bAB.Sub(before.bAB), s.aBA.Sub(before.aBA), s.bBA.Sub(before.bBA)}
}

func (d delta) String() string {
	return fmt.Sprintf("xfrm_stat A{%s} B{%s}; SA A->B on A{%s} on B{%s}; SA B->A on A{%s} on B{%s}", d.A, d.B, d.AAB, d.BAB, d.ABA, d.BBA)
}

// want checks one counter of a delta and reports it with the whole delta.
func want(t *testing.T, d delta, what string, c Counters, name string, n uint64) {
	t.Helper()
	if c[name] != n {
		t.Errorf("%s %s moved by %d, want %d\n%s", what, name, c[name], n, d)
	}
}
