package main

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// table is a Markdown table: a header row and rows of cells; right
// aligns the columns that hold numbers.
type table struct {
	Header []string
	Right  []bool
	Rows   [][]string
}

func (t *table) add(cells ...string) { t.Rows = append(t.Rows, cells) }

// Markdown renders the table.
func (t table) Markdown() string {
	if len(t.Rows) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("| " + strings.Join(t.Header, " | ") + " |\n|")
	for i := range t.Header {
		if i < len(t.Right) && t.Right[i] {
			b.WriteString("---:|")
		} else {
			b.WriteString("---|")
		}
	}
	b.WriteString("\n")
	for _, r := range t.Rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	return b.String()
}

// newTable makes a table whose first `left` columns are text and the rest
// numbers.
func newTable(left int, header ...string) table {
	t := table{Header: header, Right: make([]bool, len(header))}
	for i := left; i < len(header); i++ {
		t.Right[i] = true
	}
	return t
}

// perKernel makes header cells "K what" for every kernel and what.
func perKernel(ks []string, what ...string) []string {
	var h []string
	for _, k := range ks {
		for _, w := range what {
			h = append(h, k+" "+w)
		}
	}
	return h
}

// num formats a figure, "–" where there is none.
func num(v float64, decimals int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	s := fmt.Sprintf("%.*f", decimals, v)
	if decimals == 0 {
		return thousands(s)
	}
	return s
}

// thousands puts commas into an integer string: 12,345.
func thousands(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func pct(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.1f%%", 100*v)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// verdict is a target's outcome on one kernel.
type verdict struct {
	Value string // the measured figure
	State string // met, **missed**, or not measured
}

func judge(value string, ok bool, measured bool) verdict {
	switch {
	case value != "" && value[0] == '-':
		// Programs cannot make the path shorter: a negative figure is
		// noise larger than what was to be measured.
		return verdict{Value: value, State: "below the noise"}
	case !measured:
		return verdict{Value: value, State: "not measured"}
	case ok:
		return verdict{Value: value, State: "met"}
	}
	return verdict{Value: value, State: "**missed**"}
}
