// Package docs_test checks the documents in docs/ against the code they
// describe.
package docs_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const (
	metricsDoc = "metrics.md"
	// labScrape is a real scrape of the exporter in the lab, captured by
	// the end-to-end run (cd dashboards && go test ./e2e -e2e -update).
	labScrape = "../dashboards/testdata/lab-scrape.prom"
	repoRoot  = ".."
)

// TestMetricsDocMatchesCode: docs/metrics.md has one row per family the
// code can expose (the code, not a scrape, is the list: some families
// appear only on a load error or an overflow), with the code's type, label
// names and file; and no row for a family the code does not have.
func TestMetricsDocMatchesCode(t *testing.T) {
	c := loadCode(t)
	rows := loadDoc(t)
	for _, name := range sortedKeys(c.families) {
		f := c.families[name]
		r, ok := rows[name]
		if !ok {
			t.Errorf("%s (declared at %s) has no row in docs/metrics.md; add one:\n%s", name, f.decls[0], skeletonRow(f))
			continue
		}
		if r.Type != f.Type {
			t.Errorf("docs/metrics.md:%d: %s is a %s in the code, the row says %q", r.line, name, f.Type, r.Type)
		}
		required, optional := labelSplit(f.LabelSets)
		if !sameSet(r.Required, required) || !sameSet(r.Optional, optional) {
			t.Errorf("docs/metrics.md:%d: %s has labels %s in the code, the row says %s",
				r.line, name, labelCell(required, optional), labelCell(r.Required, r.Optional))
		}
		if !slices.Equal(r.Files, f.Files) {
			t.Errorf("docs/metrics.md:%d: %s is declared in %v, the row says %v", r.line, name, f.Files, r.Files)
		}
	}
	for name, r := range rows {
		if _, ok := c.families[name]; !ok {
			t.Errorf("docs/metrics.md:%d: %s has a row but no code declares it", r.line, name)
		}
	}
}

// TestMetricsDocCoversLabScrape: every family of a real lab scrape has a
// row, with the row's type, and each series carries one of the label sets
// the code declares for it. A family in the scrape that no code declares
// means the scrape is stale: re-capture it.
func TestMetricsDocCoversLabScrape(t *testing.T) {
	c := loadCode(t)
	rows := loadDoc(t)
	f, err := os.Open(labScrape)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	scraped, err := parser.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("%s: %v", labScrape, err)
	}
	if len(scraped) == 0 {
		t.Fatalf("%s holds no metric family", labScrape)
	}
	for _, name := range sortedKeys(scraped) {
		mf := scraped[name]
		r, ok := rows[name]
		if !ok {
			t.Errorf("%s is in the lab scrape but has no row in docs/metrics.md", name)
		}
		code, ok := c.families[name]
		if !ok {
			t.Errorf("%s is in the lab scrape but no code declares it: the scrape is stale; re-capture it (cd dashboards && go test ./e2e -e2e -update)", name)
			continue
		}
		typ := strings.ToLower(mf.GetType().String())
		if r != nil && r.Type != typ {
			t.Errorf("docs/metrics.md:%d: %s is a %s in the lab scrape, the row says %q", r.line, name, typ, r.Type)
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName())
			}
			if !slices.ContainsFunc(code.LabelSets, func(set []string) bool { return sameSet(set, labels) }) {
				t.Errorf("%s in the lab scrape has labels %v; the code declares %v", name, labels, code.LabelSets)
				break
			}
		}
	}
}

// TestMetricsDocReferencesExist: what a row names as the reader (Go
// identifiers) and as the source exists, so the one hop from a metric to
// its source stays true when the code moves. A source in backticks is a BPF
// map of bpf/, a Go identifier of the production code, a flag, a file of the
// repository, or a word the BPF C or the production Go code uses (a program,
// a kernel function it hooks, a netlink message, a /proc file). Kernel
// constants (XFRM_MSG_DELSA) may instead be the kernel's own, from its BTF
// (bpf/vmlinux*.h): the Go code names some of them by constants of its own.
func TestMetricsDocReferencesExist(t *testing.T) {
	c := loadCode(t)
	rows := loadDoc(t)
	src := readSources(t, c)
	for _, name := range sortedKeys(rows) {
		r := rows[name]
		if len(r.Reader) == 0 {
			t.Errorf("docs/metrics.md:%d: %s names no reader (a Go identifier in backticks)", r.line, name)
		}
		for _, ref := range r.Reader {
			if err := c.resolve(ref); err != nil {
				t.Errorf("docs/metrics.md:%d: %s: reader `%s`: %v", r.line, name, ref, err)
			}
		}
		if r.KernelText == "" {
			t.Errorf("docs/metrics.md:%d: %s: the source cell is empty (write \"none\" for what the exporter measures itself)", r.line, name)
		}
		for _, ref := range r.Kernel {
			if err := src.check(c, ref); err != nil {
				t.Errorf("docs/metrics.md:%d: %s: source `%s`: %v", r.line, name, ref, err)
			}
		}
		for _, ref := range r.Maps {
			if !src.maps[ref] {
				t.Errorf("docs/metrics.md:%d: %s: `%s` follows the word map but bpf/ defines no such map", r.line, name, ref)
			}
		}
	}
}

// docRow is one row of a family table in docs/metrics.md.
type docRow struct {
	line               int
	Type               string
	Required, Optional []string
	Files              []string
	Reader, Kernel     []string // the references in backticks
	KernelText         string   // the source cell as written
	Maps               []string // the references right after the word "map"
}

var (
	backticked = regexp.MustCompile("`([^`]+)`")
	mapRef     = regexp.MustCompile("\\bmaps? `([^`]+)`(?:(?:,| and) `([^`]+)`)*")
	linkTarget = regexp.MustCompile(`\]\(([^)]+)\)`)
	familyName = regexp.MustCompile("^`([a-zA-Z_:][a-zA-Z0-9_:]*)`$")
	// kernelConstant is how the kernel's uapi spells its constants.
	kernelConstant = regexp.MustCompile(`^[A-Z][A-Z0-9_]+$`)
	goReference    = regexp.MustCompile(`^[a-z][a-z0-9]*\.[A-Za-z_]\w*(\.[A-Za-z_]\w*)?$`)
)

// The columns of a family table, by their header.
var columns = []string{"Family", "Type", "Labels", "File", "Reader", "Kernel source"}

var docOnce = sync.OnceValues(func() (map[string]*docRow, error) { return parseDoc(metricsDoc) })

func loadDoc(t *testing.T) map[string]*docRow {
	t.Helper()
	rows, err := docOnce()
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// parseDoc reads every table whose header is `columns`.
func parseDoc(file string) (map[string]*docRow, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	rows := map[string]*docRow{}
	inTable := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := splitRow(line)
		switch {
		case slices.Equal(cells, columns):
			inTable = true
			continue
		case !inTable || strings.Trim(strings.Join(cells, ""), "-: ") == "":
			continue
		case len(cells) != len(columns):
			return nil, fmt.Errorf("%s:%d: %d cells, want %d (%s)", file, n, len(cells), len(columns), strings.Join(columns, ", "))
		}
		m := familyName.FindStringSubmatch(cells[0])
		if m == nil {
			return nil, fmt.Errorf("%s:%d: the first cell is not a metric name in backticks: %q", file, n, cells[0])
		}
		if prev, dup := rows[m[1]]; dup {
			return nil, fmt.Errorf("%s:%d: a second row for %s (first at line %d)", file, n, m[1], prev.line)
		}
		r := &docRow{line: n, Type: cells[1], Reader: refs(cells[4]), Kernel: refs(cells[5]), KernelText: cells[5]}
		r.Required, r.Optional = parseLabels(cells[2])
		for _, l := range linkTarget.FindAllStringSubmatch(cells[3], -1) {
			// Links are relative to docs/; the code's files to the root.
			r.Files = append(r.Files, path.Clean(path.Join("docs", l[1])))
		}
		sort.Strings(r.Files)
		for _, m := range mapRef.FindAllString(cells[5], -1) {
			r.Maps = append(r.Maps, refs(m)...)
		}
		rows[m[1]] = r
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s has no family table (header: | %s |)", file, strings.Join(columns, " | "))
	}
	return rows, nil
}

func splitRow(line string) []string {
	cells := strings.Split(strings.Trim(line, "|"), "|")
	for i := range cells {
		cells[i] = strings.TrimSpace(cells[i])
	}
	return cells
}

func refs(cell string) []string {
	var out []string
	for _, m := range backticked.FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

// parseLabels reads a Labels cell: label names in backticks; those in
// parentheses are in some of the family's series only (another label set
// of the same family, e.g. with a flag).
func parseLabels(cell string) (required, optional []string) {
	depth := 0
	for _, part := range regexp.MustCompile("[()]|`[^`]+`").FindAllString(cell, -1) {
		switch part {
		case "(":
			depth++
		case ")":
			depth--
		default:
			if depth > 0 {
				optional = append(optional, strings.Trim(part, "`"))
			} else {
				required = append(required, strings.Trim(part, "`"))
			}
		}
	}
	return required, optional
}

// labelSplit gives the label names every declaration of a family has, and
// those only some have.
func labelSplit(sets [][]string) (required, optional []string) {
	count := map[string]int{}
	var order []string
	for _, set := range sets {
		for _, l := range set {
			if count[l] == 0 {
				order = append(order, l)
			}
			count[l]++
		}
	}
	for _, l := range order {
		if count[l] == len(sets) {
			required = append(required, l)
		} else {
			optional = append(optional, l)
		}
	}
	return required, optional
}

func labelCell(required, optional []string) string {
	var b strings.Builder
	for i, l := range required {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString("`" + l + "`")
	}
	if len(optional) > 0 {
		b.WriteString(" (")
		for i, l := range optional {
			if i > 0 {
				b.WriteString(" ")
			}
			b.WriteString("`" + l + "`")
		}
		b.WriteString(")")
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// skeletonRow is the row a new family needs, with what only a person can
// write left open.
func skeletonRow(f *codeFamily) string {
	required, optional := labelSplit(f.LabelSets)
	var files []string
	for _, file := range f.Files {
		files = append(files, fmt.Sprintf("[%s](../%s)", file, file))
	}
	return fmt.Sprintf("| `%s` | %s | %s | %s | `reader.Func` | map `name` / `XFRM_MSG_...` / `/proc/...` |",
		f.Name, f.Type, labelCell(required, optional), strings.Join(files, ", "))
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	sort.Strings(x)
	sort.Strings(y)
	return slices.Equal(x, y)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var codeOnce = sync.OnceValues(func() (*code, error) { return readCode(repoRoot, productionCode) })

// loadCode reads the production code once; a declaration it cannot follow
// fails the test that asks.
func loadCode(t *testing.T) *code {
	t.Helper()
	c, err := codeOnce()
	if err != nil {
		t.Fatalf("reading the metric families from the code: %v", err)
	}
	for _, p := range c.problems {
		t.Error(p)
	}
	return c
}

// sources is what a source reference may name.
type sources struct {
	ours   string          // the BPF C (not the vmlinux headers) and the production Go files
	kernel map[string]bool // the identifiers of the kernel's BTF (bpf/vmlinux*.h)
	maps   map[string]bool // the BPF maps bpf/ defines
}

func readSources(t *testing.T, c *code) *sources {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "bpf", "*.[ch]"))
	if err != nil {
		t.Fatal(err)
	}
	var ours strings.Builder
	s := &sources{kernel: map[string]bool{}, maps: map[string]bool{}}
	mapDef := regexp.MustCompile(`\}\s*(\w+)\s+SEC\("\.maps"\)`)
	ident := regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_]*`)
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(filepath.Base(f), "vmlinux") {
			for _, id := range ident.FindAll(text, -1) {
				s.kernel[string(id)] = true
			}
			continue
		}
		for _, m := range mapDef.FindAllSubmatch(text, -1) {
			s.maps[string(m[1])] = true
		}
		ours.Write(text)
	}
	if len(s.maps) == 0 || len(s.kernel) == 0 {
		t.Fatal("no BPF map definitions or no vmlinux header found in bpf/")
	}
	for _, f := range c.files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ours.Write(text)
	}
	s.ours = ours.String()
	return s
}

func (s *sources) check(c *code, ref string) error {
	switch {
	case s.maps[ref]:
		return nil
	case strings.HasPrefix(ref, "--"):
		flag := strings.TrimPrefix(strings.TrimPrefix(ref, "--"), "no-")
		if !strings.Contains(s.ours, `"`+flag+`"`) {
			return errors.New("no such flag in the production code")
		}
		return nil
	case goReference.MatchString(ref) && c.packages[strings.Split(ref, ".")[0]] != nil:
		return c.resolve(ref)
	case containsWord(s.ours, ref):
		return nil
	case kernelConstant.MatchString(ref) && s.kernel[ref]:
		return nil
	}
	if _, err := os.Stat(filepath.Join(repoRoot, ref)); err == nil {
		return nil
	}
	return errors.New("not a BPF map, Go identifier, flag or file of ours, nor named in bpf/ or the production Go code (nor a kernel constant in its BTF)")
}

// containsWord reports whether word occurs in text with no letter, digit or
// underscore right before or after it.
func containsWord(text, word string) bool {
	isWord := func(b byte) bool {
		return b == '_' || '0' <= b && b <= '9' || 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z'
	}
	for i := 0; ; {
		j := strings.Index(text[i:], word)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(word)
		if (start == 0 || !isWord(text[start-1])) && (end == len(text) || !isWord(text[end])) {
			return true
		}
		i = start + 1
	}
}
