package dashboards

import (
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

// boundedLabels have a fixed, small set of values the exporter defines
// (or, for job, the scrape configuration): grouping by them alone keeps a
// panel's series few on any cluster. Every other label (instance, node,
// peer, netns, spi, interface, ...) grows with the cluster.
var boundedLabels = map[string]bool{
	"job": true, "direction": true, "result": true, "class": true, "event": true,
	"collector": true, "limit": true, "reason": true, "counter": true, "program": true,
}

// TestSeriesBounded: no panel draws more than maxSeries series per step,
// however many nodes, peers and SAs the cluster has: every query either
// aggregates to bounded labels only or keeps its topk/bottomk.
func TestSeriesBounded(t *testing.T) {
	for _, q := range dashboardQueries(t) {
		expr, err := promql.ParseExpr(expandForParsing(q.Expr))
		if err != nil {
			t.Errorf("%s: %v", q.Where, err)
			continue
		}
		if !bounded(expr) {
			t.Errorf("%s: the series of this query grow with the cluster; keep the top (or bottom) %d:\n  %s", q.Where, maxSeries, q.Expr)
		}
	}
}

// bounded reports whether expr yields at most maxSeries series, or series
// only over boundedLabels, whatever the data.
func bounded(expr parser.Expr) bool {
	switch e := expr.(type) {
	case *parser.ParenExpr:
		return bounded(e.Expr)
	case *parser.NumberLiteral, *parser.StringLiteral:
		return true
	case *parser.AggregateExpr:
		switch e.Op {
		case parser.TOPK, parser.BOTTOMK, parser.LIMITK:
			k, ok := e.Param.(*parser.NumberLiteral)
			return ok && k.Val <= maxSeries
		}
		if e.Without {
			return false
		}
		for _, l := range e.Grouping {
			if !boundedLabels[l] {
				return false
			}
		}
		return true
	case *parser.BinaryExpr:
		switch e.Op {
		case parser.LOR:
			return bounded(e.LHS) && bounded(e.RHS)
		case parser.LAND, parser.LUNLESS:
			return bounded(e.LHS)
		default:
			// One-to-one matching yields no more series than the smaller
			// side; a scalar side leaves the other's.
			return bounded(e.LHS) || bounded(e.RHS)
		}
	case *parser.Call:
		switch e.Func.Name {
		case "vector", "time", "scalar":
			return true
		}
		for _, arg := range e.Args {
			if arg.Type() == parser.ValueTypeVector && !bounded(arg) {
				return false
			}
			if arg.Type() == parser.ValueTypeMatrix {
				return false // a range function over raw series keeps them all
			}
		}
		return true
	case *parser.VectorSelector:
		// A recording rule's output has the labels its level names
		// (job_direction:...: job and direction).
		if isRecorded(e.Name) {
			for _, l := range strings.Split(strings.Split(e.Name, ":")[0], "_") {
				if !boundedLabels[l] {
					return false
				}
			}
			return true
		}
	}
	return false // a raw selector: one series per target and label set
}
