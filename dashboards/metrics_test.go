package dashboards

import (
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/ipsec-exporter/ipsec_exporter/internal/wire"
	"github.com/ipsec-exporter/ipsec_exporter/lab/testtool"
)

// labScrape is a real scrape of the exporter in the lab VM with the lab's
// traffic and failures, written by the end-to-end test with -update. It is
// the only list of metric names the checks trust.
const labScrape = "testdata/lab-scrape.prom"

// rulesFile is the shipped rules file.
const rulesFile = "../examples/prometheus/rules.yml"

// targetLabels are added by Prometheus (or by relabeling), not by the
// exporter, so a scrape does not show them.
var targetLabels = map[string]bool{"job": true, "instance": true, "node": true}

// TestEveryMetricIsProduced checks every series selector of the dashboards
// and the rules against a real scrape: the metric must be exposed by the
// exporter or recorded by our rules, every label a matcher names must exist
// on it, and every value an equality matcher asks for must occur.
func TestEveryMetricIsProduced(t *testing.T) {
	scrape := loadScrape(t, labScrape)
	rules := loadRules(t, rulesFile)
	recorded := map[string]bool{}
	for _, r := range rules {
		if r.Record != "" {
			recorded[r.Record] = true
		}
	}
	process := processFamilies(t)
	var exprs []query
	exprs = append(exprs, dashboardQueries(t)...)
	for _, r := range rules {
		name := r.Record + r.Alert
		exprs = append(exprs, query{Where: rulesFile + ": " + name, Expr: r.Expr})
	}
	for _, q := range exprs {
		expr, err := promql.ParseExpr(expandForParsing(q.Expr))
		if err != nil {
			t.Errorf("%s: %v", q.Where, err)
			continue
		}
		for _, vs := range selectors(expr) {
			switch {
			case vs.Name == "up":
				// Prometheus' own per target.
			case recorded[vs.Name]:
			case process[vs.Name]:
				// client_golang's process collector, which the exporter
				// registers unless --web.disable-exporter-metrics; the
				// committed lab scrape is taken with that flag.
			default:
				checkAgainstScrape(t, q.Where, vs, scrape)
			}
		}
	}
}

// processFamilies are the names client_golang's process collector exposes on
// this system, gathered from a real one (not a list written here).
func processFamilies(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	return names
}

func checkAgainstScrape(t *testing.T, where string, vs *parser.VectorSelector, scrape map[string]*dto.MetricFamily) {
	t.Helper()
	family, ok := scrape[vs.Name]
	if !ok {
		t.Errorf("%s: metric %s is neither in the lab scrape (%s) nor recorded by %s", where, vs.Name, labScrape, rulesFile)
		return
	}
	values := map[string]map[string]bool{}
	for _, m := range family.GetMetric() {
		for _, lp := range m.GetLabel() {
			if values[lp.GetName()] == nil {
				values[lp.GetName()] = map[string]bool{}
			}
			values[lp.GetName()][lp.GetValue()] = true
		}
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel || targetLabels[m.Name] {
			continue
		}
		seen, ok := values[m.Name]
		if !ok {
			t.Errorf("%s: %s has no label %q in the lab scrape", where, vs.Name, m.Name)
			continue
		}
		if strings.HasPrefix(m.Value, "$") {
			continue // a dashboard variable: any value the label has
		}
		if m.Type == labels.MatchNotEqual && !seen[m.Value] && definedValues(m.Name)[m.Value] {
			continue
		}
		if (m.Type == labels.MatchEqual || m.Type == labels.MatchNotEqual) && !seen[m.Value] {
			t.Errorf("%s: %s{%s} never has %s=%q in the lab scrape (values: %s)", where, vs.Name, m.Name, m.Name, m.Value, keys(seen))
		}
		if m.Type == labels.MatchRegexp {
			for _, alt := range strings.Split(m.Value, "|") {
				if !seen[alt] && !strings.ContainsAny(alt, ".*+?[]()") {
					t.Errorf("%s: %s never has %s=%q in the lab scrape (values: %s)", where, vs.Name, m.Name, alt, keys(seen))
				}
			}
		}
	}
}

// definedValues are label values the exporter defines that the lab's
// traffic does not produce: its links have static neighbours, so no ARP and
// no class="non_ip". A negative matcher may name them; a positive one must
// still find its value in the scrape.
func definedValues(label string) map[string]bool {
	if label != "class" {
		return nil
	}
	values := map[string]bool{}
	for c := wire.Class(0); c.String() != "unknown"; c++ {
		values[c.String()] = true
	}
	return values
}

func keys(m map[string]bool) string {
	var k []string
	for v := range m {
		k = append(k, v)
	}
	sort.Strings(k)
	return strings.Join(k, ",")
}

// selectors lists every vector selector in expr, also those inside range
// selectors and subqueries.
func selectors(expr parser.Expr) []*parser.VectorSelector {
	var out []*parser.VectorSelector
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		if vs, ok := node.(*parser.VectorSelector); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out
}

func loadScrape(t *testing.T, path string) map[string]*dto.MetricFamily {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v (the end-to-end test writes it with -update)", err)
	}
	defer f.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	// Families are keyed by their name; counters' samples carry _total in
	// the exposition and in PromQL alike.
	return families
}

type rule struct {
	Record string `yaml:"record"`
	Alert  string `yaml:"alert"`
	Expr   string `yaml:"expr"`
}

func loadRules(t *testing.T, path string) []rule {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &file); err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	var rules []rule
	for _, g := range file.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// TestLabScrapeLints runs `promtool check metrics` (Prometheus' naming and
// type conventions) on the lab scrape.
func TestLabScrapeLints(t *testing.T) {
	promtool := testtool.Find(t, "promtool", "prometheus")
	if promtool == "" {
		t.Skip("no promtool")
	}
	f, err := os.Open(labScrape)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = f
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics %s: %v\n%s", labScrape, err, out)
	}
}

// TestFiltersNarrowEveryPanel: on a dashboard with filter variables
// (namespace, peer), every selector of a metric that has the filter's label
// in the lab scrape matches it on the variable, so choosing a peer narrows
// every panel it can; and each variable's own query reads a metric that
// has the label.
func TestFiltersNarrowEveryPanel(t *testing.T) {
	scrape := loadScrape(t, labScrape)
	hasLabel := func(metric, label string) bool {
		for _, m := range scrape[metric].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					return true
				}
			}
		}
		return false
	}
	for _, d := range all {
		for _, f := range d.Filters {
			if !hasLabel(f.Metric, f.Name) {
				t.Errorf("%s: variable %s reads %s, which has no label %s in the lab scrape", d.File, f.Name, f.Metric, f.Name)
			}
		}
		for _, row := range d.Rows {
			for _, p := range row.Panels {
				for _, target := range p.Targets {
					expr, err := promql.ParseExpr(expandForParsing(target.Expr))
					if err != nil {
						t.Fatalf("%s %q: %v", d.File, p.Title, err)
					}
					for _, vs := range selectors(expr) {
						for _, f := range d.Filters {
							if hasLabel(vs.Name, f.Name) && !hasVariableMatcher(vs, f.Name) {
								t.Errorf("%s %q: %s has label %s but does not match it on $%s", d.File, p.Title, vs.Name, f.Name, f.Name)
							}
						}
					}
				}
			}
		}
	}
}
